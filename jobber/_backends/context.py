"""What a job starts with on this host: its environment, working directory and user.

Shared by the backends that start processes from this host (local, Slurm). A job
inherits the environment of the process that starts it, plus:

- ``PATH`` with the starting Python's directory first (``sys.executable``'s, and the
  virtualenv's ``bin`` when in one), so that ``python`` and ``pip`` in a job are the
  kernel's, with what ``%pip install`` put there, even when Jupyter was started as
  ``.venv/bin/jupyter`` without the venv on ``PATH``;
- ``JOBBER_JOB_ID`` and ``JOBBER_JOB_TAG`` (``<owner hash>/<id>``);
- the ``env`` given to ``new_job``, last, so it wins.

``user`` is a name of the host's passwd database, or ``#UID`` / ``#UID:GID``, a numeric
identity that needs no passwd entry (the gid defaults to the uid's passwd group, else to
the uid's number). A job of a jobber server gets a :class:`Sandbox` instead of all that
inheritance: exactly ``PATH`` (fixed), ``HOME``, ``USER``, ``LANG``, ``TMPDIR``, the two
``JOBBER_`` variables and its ``env``, plus umask 077, no new privileges, a bounded
``RLIMIT_NOFILE`` (:func:`job_nofile`: never above what the starting process may give)
and, where the host allows it, a private ``/tmp`` and ``/proc``.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobber._errors import JobError

__all__ = ["DEFAULT_NOFILE", "Sandbox", "check_cwd", "check_env", "job_nofile", "run_context", "python_path",
           "resolve_user"]

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_NUMERIC_USER = re.compile(r"^#([0-9]{1,10})(?::([0-9]{1,10}))?$")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setuid
# A sandboxed job's RLIMIT_NOFILE (soft, hard) where the starting process may give it.
DEFAULT_NOFILE = (1024, 4096)


def job_nofile(wanted: tuple[int, int] = DEFAULT_NOFILE) -> tuple[int, int]:
    """``wanted`` (soft, hard), lowered to this process's hard ``RLIMIT_NOFILE``.

    Raising a hard limit takes CAP_SYS_RESOURCE, which a launcher started under
    ``prlimit --nofile=1024:1024`` (or a service's ``LimitNOFILE=``) often lacks, even as
    root in a container: a job that asked for more than that would never start.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, top = wanted
    if hard == resource.RLIM_INFINITY:
        return soft, top
    return min(soft, hard), min(top, hard)


@dataclass(frozen=True)
class Sandbox:
    """How a jobber server starts a tenant's job: nothing of the server's own process.

    Attributes:
        home: ``HOME`` and the working directory (None: the user's passwd home, else /).
        tmpdir: the job's temporary directory on the host (None: ``/tmp``).
        private_tmp: ``tmpdir`` is mounted on ``/tmp`` in a mount namespace of the job's
            own, and ``TMPDIR`` is ``/tmp``.
        hide_pids: in that namespace ``/proc`` is mounted ``hidepid=2``: the job sees the
            processes of its own uid only.
        umask: the job's umask.
        nofile: ``RLIMIT_NOFILE`` (soft, hard), lowered to the hard limit of the process
            that makes the sandbox (:func:`job_nofile`).
        function_dir: a function job's own directory, outside its job directory, where its
            runner finds its call and leaves its result (``$JOBBER_FUNCTION_DIR``).
    """

    home: str | None = None
    tmpdir: str | None = None
    private_tmp: bool = False
    hide_pids: bool = False
    umask: int = 0o077
    nofile: tuple[int, int] = DEFAULT_NOFILE
    function_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nofile", job_nofile(self.nofile))

    def to_dict(self) -> dict[str, Any]:
        """What ``spec.json`` records, and what the launcher options are made from."""
        return {"clear_env": True, "umask": f"{self.umask:03o}", "no_new_privs": True,
                "rlimits": {"RLIMIT_NOFILE": list(self.nofile)},
                "private_tmp": self.tmpdir if self.private_tmp else None, "hide_pids": self.hide_pids}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = ("JOBBER_JOB_ID", "JOBBER_JOB_TAG", "JOBBER_FUNCTION_DIR")
# execve(2) refuses any one string of the environment longer than MAX_ARG_STRLEN (32
# pages: 128 KiB with its NUL), and all of them together past a quarter of the stack
# limit (2 MiB by default), which the inherited environment and the command share.
ENV_ONE_MAX = 128 * 1024 - 1
ENV_ALL_MAX = 1024 * 1024


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Check the extra environment of a new job.

    Raises:
        JobError: not a mapping of names to strings, a name a shell cannot use, a NUL
            byte, or a variable jobber sets itself.
    """
    if not isinstance(env, Mapping):
        raise JobError(f"env must be a mapping of names to values, such as {{'SEED': '1'}}, not {type(env).__name__}")
    checked = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise JobError(f"env: {name!r} is not a variable name (letters, digits and _, not starting with a digit)")
        if name in _RESERVED:
            raise JobError(f"env: {name} is set by jobber for every job; choose another name")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise JobError(f"env: the value of {name} must be a string, not {type(value).__name__}")
        if "\0" in value:
            raise JobError(f"env: the value of {name} contains a NUL byte, which no environment can hold")
        size = len(name.encode()) + 1 + len(value.encode(errors="surrogateescape"))
        if size > ENV_ONE_MAX:
            raise JobError(f"env: {name}=... is {size} bytes; one variable (NAME=VALUE) may hold at most {ENV_ONE_MAX} "
                           "bytes, the kernel's limit for one string of a program's environment: put larger data "
                           "in a file and pass its path")
        checked[name] = value
    total = sum(len(name.encode()) + len(value.encode(errors="surrogateescape")) + 2 for name, value in checked.items())
    if total > ENV_ALL_MAX:
        raise JobError(f"env: the variables take {total} bytes together; at most {ENV_ALL_MAX} (1 MiB) are allowed, "
                       "within the kernel's limit for a program's arguments and environment: put larger data in a "
                       "file and pass its path")
    return checked


def check_cwd(cwd: str | os.PathLike[str]) -> str:
    """The absolute working directory of a new job; it must exist now.

    Raises:
        JobError: not a path, or not an existing directory.
    """
    try:
        path = os.path.abspath(os.path.expanduser(os.fspath(cwd)))
    except TypeError:
        raise JobError(f"cwd must be a path, not {type(cwd).__name__}") from None
    if "\0" in path:
        raise JobError("cwd contains a NUL byte")
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise JobError(f"cwd {path} {what}: give the directory the job should run in")
    return path


def python_path(path: str | None) -> str:
    """``path`` with the starting Python's directories first (once each)."""
    first = [os.path.dirname(sys.executable)] if sys.executable else []
    if sys.prefix != sys.base_prefix:
        first.append(os.path.join(sys.prefix, "bin"))
    rest = [p for p in (path or os.defpath).split(os.pathsep) if p]
    ordered = []
    for entry in first + rest:
        if entry not in ordered:
            ordered.append(entry)
    return os.pathsep.join(ordered)


def resolve_user(user: str, job_id: int | None = None) -> tuple[dict[str, Any], str | None]:
    """``{"name", "uid", "gid"}`` of a passwd name or of ``#UID[:GID]``, and its home.

    The home is None for a numeric user without a passwd entry.

    Raises:
        JobError: no such user, or a malformed ``#UID[:GID]``.
    """
    import pwd

    numeric = _NUMERIC_USER.match(user) if user.startswith("#") else None
    if user.startswith("#") and numeric is None:
        raise JobError(f"user {user!r}: write #UID or #UID:GID in decimal, e.g. '#200001' or '#200001:200001'",
                       job_id=job_id)
    if numeric is None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise JobError(f"no user named {user!r} on this host", job_id=job_id) from None
        return {"name": user, "uid": entry.pw_uid, "gid": entry.pw_gid}, entry.pw_dir
    uid = int(numeric.group(1))
    if uid > _MAX_ID or int(numeric.group(2) or 0) > _MAX_ID:
        raise JobError(f"user {user!r}: ids go up to {_MAX_ID}", job_id=job_id)
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    gid = int(numeric.group(2)) if numeric.group(2) is not None else (entry.pw_gid if entry else uid)
    return ({"name": entry.pw_name if entry else str(uid), "uid": uid, "gid": gid},
            entry.pw_dir if entry else None)


def run_context(job_id: int, owner: str, user: str | None, cwd: str | None,
                extra_env: Mapping[str, str] | None = None, sandbox: Sandbox | None = None) -> dict[str, Any]:
    """The ``env`` additions, ``cwd`` and (when given) ``user`` a job starts with.

    With a ``sandbox`` the ``env`` is the job's whole environment (``clear_env``), and the
    context holds the sandbox's launcher settings under ``"sandbox"``.

    Raises:
        JobError: ``user`` does not exist on this host, or ``cwd`` is not a directory.
    """
    tags = {"JOBBER_JOB_ID": str(job_id), "JOBBER_JOB_TAG": f"{owner}/{job_id}"}
    context: dict[str, Any] = {"env": {"PATH": python_path(os.environ.get("PATH")), **tags}}
    if cwd is not None:
        cwd = check_cwd(cwd)
    home = None
    if user is not None:
        context["user"], home = resolve_user(user, job_id)
        name = context["user"]["name"]
        context["env"].update(HOME=home or "/", USER=name, LOGNAME=name)
        context["cwd"] = cwd or (home if home and os.path.isdir(home) else "/")
    else:
        try:
            context["cwd"] = cwd or os.getcwd()
        except FileNotFoundError:
            context["cwd"] = "/"
    if sandbox is not None:
        if sandbox.home is not None:
            home = sandbox.home
        elif user is None:
            home = os.path.expanduser("~")
        if not home or not os.path.isdir(home):
            home = "/"
        name = context["user"]["name"] if user is not None else _own_name()
        context["env"] = {"PATH": SANDBOX_PATH, "HOME": home, "USER": name, "LANG": "C.UTF-8",
                          "TMPDIR": "/tmp" if sandbox.private_tmp or not sandbox.tmpdir else sandbox.tmpdir, **tags}
        if sandbox.function_dir is not None:
            context["env"]["JOBBER_FUNCTION_DIR"] = sandbox.function_dir
        context["cwd"] = cwd or home
        context["sandbox"] = sandbox.to_dict()
    context["env"].update(extra_env or {})
    return context


def _own_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
