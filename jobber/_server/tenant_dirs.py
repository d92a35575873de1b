"""Where a per-tenant server keeps its tenants on disk: the state directory and each
tenant's ``tenants/<uid>/`` (``home``, ``tmp``).

Every directory is made root's, or the tenant's, and opened without following a link
(``mkdir_owned``): a tenant's job must never get to swap what is inside for a link. The
state directory and the directories above it must let tenants' jobs walk down to their
homes, and must not be replaceable by another user.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

from jobber._errors import JobberError, JobError

__all__ = ["check_state_dir", "mkdir_owned", "private_mounts_fail", "reachable_by_others"]


def check_state_dir(state: Path, private_tmp: bool, default: str) -> None:
    """Make the state directory (root's, 0711) and the directories above it that are
    missing (0755), refusing one that tenants' jobs could not reach or that another user
    could replace.

    Args:
        state: the state directory.
        private_tmp: jobs get a /tmp of their own (so the state cannot be under /tmp).
        default: the default ``--state-dir``, for the messages.

    Raises:
        JobberError: saying how to fix it.
    """
    fix = f"choose another --state-dir (default {default})"
    if private_tmp and (state == Path("/tmp") or Path("/tmp") in state.parents):
        raise JobberError(f"--state-dir {state} is under /tmp, which every job gets a private one of: the "
                          f"tenants' homes would not be there for their jobs; {fix}")
    here = Path("/")
    for part in state.parts[1:-1]:
        here = here / part
        try:
            st = os.lstat(here)
            if stat.S_ISLNK(st.st_mode) and st.st_uid == 0:
                st = os.stat(here)  # a root-owned link, e.g. /var/run -> /run
        except FileNotFoundError:
            mkdir_owned(here, 0, None, 0o755)
            continue
        except OSError as err:
            raise JobberError(f"--state-dir {state}: cannot look at {here}: {err.strerror}; {fix}") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise JobberError(f"--state-dir {state}: {here} is not a directory of root's; {fix}")
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise JobberError(f"--state-dir {state}: {here} is writable by everyone, who could replace what "
                              f"is beneath it; {fix}")
        if not st.st_mode & 0o001:
            raise JobberError(
                f"--state-dir {state}: {here} is mode {stat.S_IMODE(st.st_mode):o}, so tenants' jobs (other "
                f"users) could not reach their homes beneath it: run `chmod o+x {here}`, or {fix}")
    try:
        mkdir_owned(state, 0, None, 0o711)
        st = os.lstat(state)
        if st.st_mode & 0o022:
            raise JobberError(f"--state-dir {state} is writable by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):o}): run `chmod go-w {state}`, or {fix}")
        if not st.st_mode & 0o001:
            os.chmod(state, stat.S_IMODE(st.st_mode) | 0o011, follow_symlinks=False)
    except JobError as err:
        raise JobberError(f"--state-dir {state}: {err}; {fix}") from None


def mkdir_owned(path: Path, uid: int, gid: int | None, mode: int, *, enforce_mode: bool = False) -> Path:
    """``path`` as a real directory (never through a link) owned by uid (and gid, unless
    None); ``mode`` when made here (always with ``enforce_mode``).

    Raises:
        JobError: it is a link or not a directory, or belongs to someone else.
    """
    made = False
    try:
        os.mkdir(path, 0o700)
        made = True
    except FileExistsError:
        pass
    except OSError as err:
        raise JobError(f"cannot create {path}: {err.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        what = "is a symlink" if err.errno == errno.ELOOP else f"cannot be opened ({err.strerror})"
        raise JobError(f"{path} {what}: refusing to use it") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != uid or (gid is not None and st.st_gid != gid):
            if st.st_uid not in (0, uid):
                raise JobError(f"{path} belongs to uid {st.st_uid}, not {uid}: refusing to use it")
            os.fchown(fd, uid, st.st_gid if gid is None else gid)  # made here, or left half made by a crash
            made = True
        if made or enforce_mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def reachable_by_others(directory: str) -> bool:
    """Can a user who is neither the owner nor in the group walk down to ``directory``?"""
    here = Path(os.path.realpath(directory))
    for level in (here, *here.parents):
        try:
            if not os.stat(level).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


_PROBE = """
import sys
from jobber._backends.local.job_child import private_mounts
private_mounts(sys.argv[1], True)
"""


def private_mounts_fail(tmp_dir: str) -> str | None:
    """Why a job could not get a mount namespace here (private /tmp, /proc hidepid=2), or
    None when it can: the launcher's own code, tried once in a throwaway process."""
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE, tmp_dir], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"
