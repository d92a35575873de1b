"""A delegated cgroup from the user's systemd manager, for jobs of users who are not root.

On a systemd host an ordinary user cannot write the cgroup their shell or Jupyter runs in,
but their user manager (``user@UID.service``) owns a subtree it may hand out: a unit with
``Delegate=yes`` gets a cgroup the user may divide freely. Rootless podman asks for one
per container; jobber asks for one per user, once per boot:

    systemd-run --user --unit=jobber-jobs.service -p Delegate=yes -p Type=exec sleep infinity

and builds its usual ``jobber/<owner>/<id>`` leaves inside it, exactly as under root. The
unit holds only a ``sleep`` (moved into a leaf), so it costs nothing while no job runs;
jobs in it outlive the kernel, the terminal and the login session (with lingering, the
manager outlives logouts too: ``loginctl enable-linger``).

Why ``systemd-run`` rather than D-Bus ``StartTransientUnit`` from Python: it is on every
systemd host, speaks to the manager over its private socket or the user bus (whichever is
there), and needs no D-Bus library in jobber; it runs once per boot, not once per job.

Standard library only: ``isolation`` imports this module.
"""

from __future__ import annotations

import os
import shutil
import subprocess

UNIT = "jobber-jobs.service"
DROP_IN = "/etc/systemd/system/user@.service.d/delegate.conf"
DROP_IN_TEXT = "[Service]\nDelegate=cpu cpuset io memory pids"
_TIMEOUT_S = 20.0
_cached: list[str] = []  # the unit's cgroup, once found in this process


def runtime_dir() -> str:
    """``$XDG_RUNTIME_DIR``, else where systemd puts it (``/run/user/UID``)."""
    return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"


def manager_reachable() -> str | None:
    """Why the user's systemd manager cannot be asked for a cgroup, or None when it can."""
    if shutil.which("systemd-run") is None or shutil.which("systemctl") is None:
        return "systemd-run is not installed (this host does not run systemd)"
    private = os.path.join(runtime_dir(), "systemd", "private")
    bus = os.path.join(runtime_dir(), "bus")
    if not (os.path.exists(private) or os.path.exists(bus)):
        return (f"no systemd user manager is running for uid {os.geteuid()} (neither {private} nor "
                f"{bus} exists): log in through systemd-logind, or as root run "
                f"`loginctl enable-linger {_user_name()}`")
    return None


def delegated_cgroup(mount: str) -> tuple[str | None, str]:
    """The cgroup of jobber's delegated unit (started now if needed), or why there is none.

    Args:
        mount: where the cgroup2 hierarchy is mounted.

    Returns:
        (absolute path of the unit's cgroup or None, a note saying which unit holds it or
        why none could be had).
    """
    if _cached and os.path.isdir(_cached[0]):
        return _cached[0], _held_by()
    why = manager_reachable()
    if why is not None:
        return None, why
    group = _control_group()
    if group is None:
        answer = _run(["systemd-run", "--user", "--quiet", f"--unit={UNIT}", "-p", "Delegate=yes",
                       "-p", "Type=exec", "--description=jobber: the cgroups of this user's jobs",
                       shutil.which("sleep") or "/bin/sleep", "infinity"])
        group = _control_group()  # also when a concurrent jobber started it first
        if group is None:
            said = (answer.stderr or answer.stdout).strip().splitlines()
            return None, f"the systemd user manager did not start {UNIT}: {said[-1] if said else 'no answer'}"
    path = os.path.join(mount, group.lstrip("/"))
    if not os.access(os.path.join(path, "cgroup.subtree_control"), os.W_OK):
        return None, f"systemd delegated {path} to {UNIT}, but uid {os.geteuid()} cannot write it"
    _cached[:] = [path]
    return path, _held_by()


def _held_by() -> str:
    return f"delegated by systemd: {UNIT} of the user manager of uid {os.geteuid()}"


def _control_group() -> str | None:
    """The unit's cgroup if it is active, else None."""
    answer = _run(["systemctl", "--user", "show", "-p", "ActiveState", "-p", "ControlGroup", UNIT])
    fields = dict(line.split("=", 1) for line in answer.stdout.splitlines() if "=" in line)
    if fields.get("ActiveState") in ("active", "activating") and fields.get("ControlGroup"):
        return fields["ControlGroup"]
    return None


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir())
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return subprocess.CompletedProcess(argv, 1, "", str(err))


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
