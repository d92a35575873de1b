"""The "none" backend: no writable cgroup (a non-root user, a container, mybinder).

The job still gets its own process group, the rlimits that mean what they say, and an
environment tag (``JOBBER_JOB_TAG``) so that stop can find processes that left the group
with setsid, as long as they kept the environment and belong to this user. Best effort,
and the status says so.
"""

from __future__ import annotations

import os
import signal

from jobber._backends.local import cgroupfs as fs

# typing costs ~15 ms to import and the supervisor's finishing half imports these modules
# on every job's end (stop latency): annotations only, so a constant stands in for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jobber._limits import Limits

NAME = "none"
TAG_VARIABLE = "JOBBER_JOB_TAG"


def prepare(owner: str, job_id: int, limits: Limits, job_dir: str, reason: str) -> dict[str, Any]:
    """Decide the rlimits and write the note explaining what is not enforced.

    Args:
        reason: why no cgroup could be used (it goes into the status note).
    """
    rlimits: dict[str, int] = {}
    notes = [f"not isolated: {reason}"]
    unenforced: list[str] = []
    why: dict[str, str] = {}
    if limits.memory is not None:
        rlimits["RLIMIT_AS"] = limits.memory
        notes.append("memory is limited as address space (RLIMIT_AS), which counts reserved as well as used memory")
    if limits.pids is not None and os.geteuid() != 0:
        rlimits["RLIMIT_NPROC"] = limits.pids
        notes.append(f"pids is limited with RLIMIT_NPROC, which counts every process of uid {os.geteuid()}")
    elif limits.pids is not None:
        unenforced.append("pids")
        why["pids"] = "RLIMIT_NPROC does not apply to root"
        notes.append("pids limit not enforced: RLIMIT_NPROC does not apply to root")
    if limits.cpu is not None:
        unenforced.append("cpu")
        why["cpu"] = "no cgroup"
        notes.append("cpu limit not enforced without a cgroup")
    if limits.io_read_bps is not None or limits.io_write_bps is not None:
        unenforced.append("io")
        why["io"] = "no cgroup"
        notes.append("io limits not enforced without a cgroup")
    notes.append("stop is best effort: processes that leave the process group and drop JOBBER_JOB_TAG survive")
    return {"isolation": NAME, "tag": f"{owner}/{job_id}", "rlimits": rlimits, "notes": notes,
            "unenforced": unenforced, "unenforced_why": why}


class Cgroup:
    """Stand-in for a cgroup: the job's process group plus its environment tag."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.tag = f"{TAG_VARIABLE}={record['tag']}\0".encode()
        self.rlimits: dict[str, int] = record.get("rlimits", {})
        self.leader: int | None = record.get("pid")
        self.covers: list[str] = []
        if record.get("hide_devices"):
            from jobber._backends.local import device_cover

            self.covers = device_cover.launch_args(record)

    def launch_args(self) -> list[str]:
        """Launcher options: the job's own process group, its rlimits, and the GPU nodes it
        covers (``device_cover``)."""
        return (["--pgid"] + [arg for name, value in sorted(self.rlimits.items()) for arg in ("--rlimit", f"{name}={value}")]
                + self.covers)

    def pids(self) -> list[int]:
        """Processes of this user that carry the job's tag (setsid escapees included)."""
        found = []
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if self.tag in b"\0" + f.read():
                        found.append(int(name))
            except OSError:
                continue  # gone, or another user's process
        return found

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to the process group and to every tagged process."""
        sent = 0
        if self.leader:
            try:
                os.killpg(self.leader, sig)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        return sent + fs.signal_pids(self.pids(), sig)

    def kill_all(self) -> None:
        """SIGKILL until no tagged process is left (bounded: 5 s)."""
        fs.wait_until(lambda: self.signal_all(signal.SIGKILL) == 0 or not self.pids(), 5.0)

    def stats(self) -> dict[str, Any]:
        """Nothing to read without a cgroup; the supervisor fills in rusage at the end."""
        return {}

    def remove(self) -> None:
        """Nothing to remove."""
