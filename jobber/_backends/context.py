"""What a job starts with on this host: its environment, working directory and user.

Shared by the backends that start processes from this host (local, Slurm). A job
inherits the environment of the process that starts it, plus:

- ``PATH`` with the starting Python's directory first (``sys.executable``'s, and the
  virtualenv's ``bin`` when in one), so that ``python`` and ``pip`` in a job are the
  kernel's, with what ``%pip install`` put there, even when Jupyter was started as
  ``.venv/bin/jupyter`` without the venv on ``PATH``;
- ``JOBBER_JOB_ID`` and ``JOBBER_JOB_TAG`` (``<owner hash>/<id>``);
- the ``env`` given to ``new_job``, last, so it wins.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from jobber._errors import JobError

__all__ = ["check_cwd", "check_env", "run_context", "python_path"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = ("JOBBER_JOB_ID", "JOBBER_JOB_TAG")


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
        checked[name] = value
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


def run_context(job_id: int, owner: str, user: str | None, cwd: str | None,
                extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``env`` additions, ``cwd`` and (when given) ``user`` a job starts with.

    Raises:
        JobError: ``user`` does not exist on this host, or ``cwd`` is not a directory.
    """
    context: dict[str, Any] = {
        "env": {"PATH": python_path(os.environ.get("PATH")),
                "JOBBER_JOB_ID": str(job_id), "JOBBER_JOB_TAG": f"{owner}/{job_id}"},
    }
    if cwd is not None:
        cwd = check_cwd(cwd)
    if user is not None:
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise JobError(f"no user named {user!r} on this host", job_id=job_id) from None
        context["user"] = {"name": user, "uid": entry.pw_uid, "gid": entry.pw_gid}
        context["env"].update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
        context["cwd"] = cwd or (entry.pw_dir if os.path.isdir(entry.pw_dir) else "/")
    else:
        try:
            context["cwd"] = cwd or os.getcwd()
        except FileNotFoundError:
            context["cwd"] = "/"
    context["env"].update(extra_env or {})
    return context
