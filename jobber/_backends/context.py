"""What a job starts with on this host: its environment additions, working directory, user.

Shared by the backends that start processes from this host (local, Slurm).
"""

from __future__ import annotations

import os
from typing import Any

from jobber._errors import JobError

__all__ = ["run_context"]


def run_context(job_id: int, owner: str, user: str | None, cwd: str | None) -> dict[str, Any]:
    """The ``env`` additions, ``cwd`` and (when given) ``user`` a job starts with.

    Raises:
        JobError: ``user`` does not exist on this host.
    """
    context: dict[str, Any] = {
        "env": {"JOBBER_JOB_ID": str(job_id), "JOBBER_JOB_TAG": f"{owner}/{job_id}"},
    }
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
    return context
