"""Finding the compiled launcher (``launcher.c``), building it on first use.

The launcher is the resident half of each job's supervisor. It is built with the system C
compiler into a private per-user cache, keyed by the source's hash, so upgrades rebuild
it. Without a compiler (or with ``JOBBER_LAUNCHER=python``) jobs are supervised by
``supervisor.py --launch`` instead: the same behaviour, ~40 ms slower to start and
~6 MB per running job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["launcher_command"]

_SOURCE = Path(__file__).with_name("launcher.c")
_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
_lock = threading.Lock()
_cached: list[str] | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jobber"


def _trusted(path: Path, kind: int = stat.S_IFREG) -> bool:
    """Ours, of the right kind, not writable by anyone else (we are about to exec it)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _build() -> str | None:
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = _cache_dir()
    binary = cache / f"launcher-{digest}"
    if _trusted(binary) and _trusted(cache, stat.S_IFDIR):
        return str(binary)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(cache, stat.S_IFDIR):
            return None
        tmp = cache / f".launcher-{digest}.{os.getpid()}"
        result = subprocess.run(
            [compiler, "-O2", "-Wall", "-o", str(tmp), str(_SOURCE)],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            print(f"jobber: could not build the launcher, using the Python supervisor:\n{result.stderr}",
                  file=sys.stderr)
            return None
        os.chmod(tmp, 0o700)
        os.replace(tmp, binary)  # atomic: concurrent builders each install a whole file
    except (OSError, subprocess.SubprocessError):
        return None
    return str(binary)


def launcher_command(job_dir: str) -> list[str]:
    """The command that starts the resident half of a job's supervisor.

    Its options (``--join``, ``--env``, ``--`` COMMAND...) follow; the C launcher and
    ``supervisor.py --launch`` take the same ones.
    """
    global _cached
    with _lock:
        if _cached is None:
            binary = None if os.environ.get("JOBBER_LAUNCHER") == "python" else _build()
            if binary:
                _cached = [binary, "{job_dir}", sys.executable, _SUPERVISOR]
            else:
                _cached = [sys.executable, "-I", "-S", _SUPERVISOR, "--launch", "{job_dir}"]
        prefix = list(_cached)
    return [job_dir if part == "{job_dir}" else part for part in prefix]


def reset() -> None:
    """Forget the chosen launcher (tests switch ``JOBBER_LAUNCHER``)."""
    global _cached
    with _lock:
        _cached = None


if __name__ == "__main__":
    # `python -m jobber._backends.local.launcher`: build now (make does, so the first job starts fast).
    print(launcher_command("JOB_DIR")[0])
