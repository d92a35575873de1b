"""A job: a shell command run confined, whose truth lives in its directory.

Every fact about a job is read from disk, so any process (a restarted kernel, the CLI, the
server) sees the same state. Files in ``<jobs dir>/<owner>/<id>/``:

    spec.json         command, limits, options; cwd, env and user once started
    started           claimed by the one start() that wins (O_EXCL)
    confinement.json  what confines it (cgroup paths, notes)
    pid               the main process
    log               stdout and stderr
    status.json       written atomically by the supervisor: running, then the outcome
    stop-requested    written by stop(), so the outcome reads "stopped"
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobber._backends.local import isolation as _isolation
from jobber._jobs import logs as _logs
from jobber._errors import JobError
from jobber._inotify import IN_MOVED_TO, Inotify
from jobber._backends.local.launcher import launcher_command
from jobber._limits import Limits
from jobber._jobs.status import FINAL_STATES, STATES, JobStatus, _when  # noqa: F401 - re-exported
from jobber._jobs.store import write_atomic

if TYPE_CHECKING:
    from jobber._jobs.store import JobStore

__all__ = ["Job", "JobStatus", "FINAL_STATES", "STATES"]

class Job:
    """A job of one identity. Get one from ``Certificate.new_job`` or ``get_job``."""

    def __init__(self, store: JobStore, job_id: int) -> None:
        self._store = store
        self.id = job_id
        self.path = store.path / str(job_id)
        self._spec: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<jobber.Job {self.id} {self.command!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.path, other.id) == (self.path, self.id)

    def __hash__(self) -> int:
        return hash((self.path, self.id))

    @property
    def owner(self) -> str:
        """The SHA-256 of the owner's certificate."""
        return self._store.owner

    def _load_spec(self) -> dict[str, Any]:
        if self._spec is None:
            try:
                self._spec = json.loads((self.path / "spec.json").read_bytes())
            except FileNotFoundError:
                return {"command": "", "limits": {}, "options": {}}
            except (OSError, ValueError) as err:
                raise JobError(f"job {self.id}: cannot read {self.path / 'spec.json'}: {err}", job_id=self.id) from err
        return self._spec

    @property
    def command(self) -> str:
        """The shell command."""
        return self._load_spec()["command"]

    @property
    def limits(self) -> Limits:
        """The resource limits."""
        return Limits.from_dict(self._load_spec().get("limits", {}))

    @property
    def options(self) -> dict[str, Any]:
        """Backend options given to ``new_job`` (``backend``, Slurm's ``partition``...)."""
        return dict(self._load_spec().get("options", {}))

    @property
    def backend(self) -> str:
        """Where the job runs: "local" (this host) or "slurm"."""
        return self.options.get("backend", "local")

    def _scheduler(self) -> Any:
        """The module running this job when it is not local (Slurm), else None."""
        if self.backend == "local":
            return None
        from jobber._backends.slurm import backend as _slurm

        return _slurm

    @property
    def log_path(self) -> Path:
        """The log file (stdout and stderr together)."""
        return self.path / "log"

    def start(self, *, user: str | None = None, cwd: str | None = None) -> None:
        """Start the job: ``/bin/sh -c COMMAND`` inside its cgroup, output to the log.

        Returns once the command has been exec'd inside its cgroup. The job does not depend
        on the calling process: it keeps running, and its outcome is recorded, after the
        caller exits or is killed.

        Args:
            user: run as this user instead of the caller (needs root).
            cwd: working directory (default: the caller's).

        Raises:
            JobError: already started, no usable isolation while
                ``limits.require_isolation`` is set, or the supervisor failed to start it.
        """
        scheduler = self._scheduler()
        if scheduler is not None:
            scheduler.start(self, user=user, cwd=cwd)
            return
        self._claim_start()
        try:
            context = _run_context(self, user, cwd)
            spec = {**self._load_spec(), **context}
            write_atomic(self.path / "spec.json", json.dumps(spec).encode())
            record = _isolation.prepare(self.owner, self.id, self.limits, str(self.path))
            write_atomic(self.path / "confinement.json", json.dumps(record).encode())
        except BaseException:
            os.unlink(self.path / "started")  # not started: the caller may fix and retry
            raise
        cgroup = _isolation.open_cgroup(record)
        argv = launcher_command(str(self.path)) + cgroup.launch_args() + ["--cwd", context["cwd"]]
        for name, value in context["env"].items():
            argv += ["--env", f"{name}={value}"]
        if "user" in context:
            argv += ["--uid", str(context["user"]["uid"]), "--gid", str(context["user"]["gid"])]
        argv += ["--", self.command]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # no SIGINT/SIGHUP from the caller's terminal
            )
        except OSError as err:
            cgroup.remove()
            raise JobError(f"job {self.id}: cannot start its supervisor: {err}", job_id=self.id) from err
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise JobError(f"job {self.id}: its supervisor did not answer within 60 s", job_id=self.id) from None
        reply = out.decode(errors="replace").strip()
        if not reply.startswith("ok "):
            if self._read_status() is None:
                # The supervisor died before recording anything: undo, so a retry can work.
                cgroup.remove()
                os.unlink(self.path / "started")
            detail = reply.removeprefix("error ").strip() or f"the supervisor exited with {proc.returncode}"
            raise JobError(f"job {self.id} did not start: {detail}", job_id=self.id)

    def status(self) -> JobStatus:
        """The job's state, read from disk (live CPU and memory while it runs).

        Raises:
            JobError: the job's files are unreadable.
        """
        scheduler = self._scheduler()
        if scheduler is not None:
            return scheduler.status(self)
        raw = self._read_status()
        limits = self.limits
        if raw is None:
            return JobStatus(state="created", limits=limits)
        fields = {k: raw[k] for k in JobStatus.__dataclass_fields__ if k in raw and k != "limits"}
        record = self._record()
        fields["isolation"] = record.get("isolation")
        fields["isolation_note"] = "; ".join(record.get("notes", []))
        fields["started_at"] = _when(raw.get("started_at"))
        fields["ended_at"] = _when(raw.get("ended_at"))
        if raw.get("error"):
            fields["note"] = raw["error"]
        if raw["state"] == "running":
            if not _alive(raw.get("supervisor_pid"), raw.get("supervisor_start")):
                # Re-read: the supervisor may have written its outcome and exited since.
                raw = self._read_status() or raw
                if raw["state"] == "running":
                    fields.update(state="failed", note="the job's supervisor died without recording the outcome")
                    return JobStatus(**fields, limits=limits)
                return self.status()
            try:
                stats = self._cgroup(raw.get("pid")).stats()
            except (OSError, JobError):
                stats = {}
            fields.update({k: v for k, v in stats.items() if k in ("memory_bytes", "peak_memory_bytes", "cpu_seconds")})
        return JobStatus(**fields, limits=limits)

    def _read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / "status.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise JobError(f"job {self.id}: unreadable status {self.path / 'status.json'}: {err}", job_id=self.id) from err

    def _claim_start(self) -> None:
        """Win the one start of this job (O_EXCL), whichever backend runs it."""
        try:
            claim = os.open(self.path / "started", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise JobError(f"job {self.id} was already started: create a new job to run it again", job_id=self.id) from None
        except FileNotFoundError:
            raise JobError(f"job {self.id} no longer exists (its directory {self.path} is gone)", job_id=self.id) from None
        os.close(claim)

    def _record(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "confinement.json").read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise JobError(f"job {self.id}: unreadable {self.path / 'confinement.json'}: {err}", job_id=self.id) from err

    def _cgroup(self, pid: int | None) -> Any:
        return _isolation.open_cgroup(self._record(), pid)

    def tail(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Copy log bytes starting at ``offset`` into ``buf`` (readinto semantics).

        Args:
            buf: where to copy; at most ``len(buf)`` bytes are copied.
            offset: byte offset in the log; negative counts back from the current end.

        Returns:
            The number of bytes copied.
        """
        return _logs.tail(self.log_path, buf, offset)

    def follow(self, offset: int = 0, *, heartbeat: float | None = None) -> Iterator[bytes]:
        """Yield the log as it is written, until the job has ended and the log is drained.

        Args:
            offset: where to start; negative counts back from the current end.
            heartbeat: if set, also yield ``b""`` after this many quiet seconds, so a
                consumer (a widget) can look at its own state while the job is silent.

        Yields:
            Chunks of bytes, exactly as the job wrote them.
        """
        return _logs.follow(self.log_path, offset, lambda: self.status().ended, heartbeat=heartbeat)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job has ended, or ``timeout`` seconds have passed.

        Returns:
            The status: final, or still "running"/"created" if the timeout came first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with Inotify() as inotify:
            inotify.add_watch(self.path, IN_MOVED_TO)
            while True:
                status = self.status()
                if status.ended:
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return status
                # Status changes arrive as renames of status.json; the cap only bounds
                # how soon a dead supervisor is noticed.
                inotify.wait(1.0 if left is None else min(left, 1.0))

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the whole job: SIGTERM to every process, SIGKILL after ``grace`` seconds.

        Processes that left the process group (setsid, double fork) are found through
        the cgroup. The cgroup is removed once the job is gone. Stopping an ended job
        changes nothing.

        Returns:
            The final status ("stopped", or how it ended if it ended first).

        Raises:
            JobError: the job was never started, or it could not be killed.
        """
        scheduler = self._scheduler()
        if scheduler is not None:
            return scheduler.stop(self, grace)
        status = self.status()
        if status.ended:
            if status.note.startswith("the job's supervisor died"):
                self._clean_up_orphaned(status)
            return status
        if status.state == "created":
            raise JobError(f"job {self.id} was never started: nothing to stop", job_id=self.id)
        write_atomic(self.path / "stop-requested", f"{time.time()}\n".encode())
        cgroup = self._cgroup(status.pid)
        try:
            if grace > 0:
                cgroup.signal_all(signal.SIGTERM)
                status = self.wait(grace)
            if not status.ended:
                cgroup.kill_all()
                status = self.wait(10.0)
        except OSError as err:
            raise JobError(f"job {self.id}: cannot signal its processes: {err}", job_id=self.id) from err
        if not status.ended:
            raise JobError(f"job {self.id} did not end after SIGKILL (state {status.state})", job_id=self.id)
        return status


    def _clean_up_orphaned(self, status: JobStatus) -> None:
        """Without its supervisor nobody else will: kill what is left and remove the cgroup."""
        try:
            cgroup = self._cgroup(status.pid)
            if cgroup.pids():
                cgroup.kill_all()
            cgroup.remove()
        except OSError as err:
            raise JobError(f"job {self.id}: cannot clean up after its dead supervisor: {err}", job_id=self.id) from err


def _run_context(job: Job, user: str | None, cwd: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "env": {"JOBBER_JOB_ID": str(job.id), "JOBBER_JOB_TAG": f"{job.owner}/{job.id}"},
    }
    if user is not None:
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise JobError(f"no user named {user!r} on this host", job_id=job.id) from None
        context["user"] = {"name": user, "uid": entry.pw_uid, "gid": entry.pw_gid}
        context["env"].update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
        context["cwd"] = cwd or (entry.pw_dir if os.path.isdir(entry.pw_dir) else "/")
    else:
        try:
            context["cwd"] = cwd or os.getcwd()
        except FileNotFoundError:
            context["cwd"] = "/"
    return context


def _alive(pid: int | None, start_time: int | None) -> bool:
    """Is the process still the one we recorded (same pid, same start time)?"""
    if not pid:
        return False
    from jobber._backends.local.supervisor import process_start_time

    return process_start_time(pid) == start_time if start_time is not None else os.path.exists(f"/proc/{pid}")
