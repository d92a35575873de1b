"""Finding the compiled launcher (``launcher.c``), building it on first use.

The launcher is the resident half of each job's supervisor. Decision (issue 10): jobber
ships its C source as package data, not a binary. The wheel stays pure (``py3-none-any``)
and works on every Linux architecture, with no per-platform builds to publish; the first
job compiles ``launcher.c`` with the system C compiler (``$CC``, which may carry options,
else ``cc``, else ``gcc``; ~0.1 s) into a private per-user cache,
``${XDG_CACHE_HOME:-~/.cache}/jobber/launcher-<source hash>-<machine>``. The name holds
the source's hash, so an upgrade that changes the source builds a new binary (and every
process of one release shares one), and the machine (``uname -m``), so a home directory
shared by hosts of different architectures keeps one binary each. A binary is used only
if it is ours and writable by no one else, and a fresh one only once it has run.

Without a usable compiler jobs are supervised by ``supervisor.py --launch`` instead: the
same behaviour, ~40 ms slower to start and ~6 MB per running job. That covers no compiler
on ``PATH``, ``$CC`` naming a missing program (``cc`` and ``gcc`` are tried next), a failed
compile (the compiler's output is kept next to the binary as ``.log``), an unusable cache
directory and a missing ``launcher.c`` (a broken install). Each prints exactly one line
to stderr, once per process, saying why and what to do, and never raises.
``JOBBER_LAUNCHER=python`` chooses the Python supervisor silently.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["launcher_command"]

_SOURCE = Path(__file__).with_name("launcher.c")
_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
_FLAGS = ["-O2", "-Wall"]
_FALLBACK = "jobs use the Python supervisor (slower start, ~6 MB per job)"
_lock = threading.Lock()
_cached: list[str] | None = None


class _Unavailable(Exception):
    """No compiled launcher: the message is the one line printed to stderr."""


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


def _compiler() -> list[str]:
    """The compiler's argv prefix: ``$CC`` (which may hold options), else cc, else gcc."""
    tried = []
    cc = os.environ.get("CC", "").strip()
    candidates = ([("$CC=" + cc, cc)] if cc else []) + [("cc", "cc"), ("gcc", "gcc")]
    for label, candidate in candidates:
        try:
            argv = shlex.split(candidate)
        except ValueError:
            argv = [candidate]
        tried.append(label)
        program = shutil.which(argv[0]) if argv else None
        if program:
            return [program, *argv[1:]]
    raise _Unavailable(f"jobber: no C compiler found (tried {', '.join(tried)}): {_FALLBACK}; "
                       "install gcc (apt-get install gcc, dnf install gcc) for the compiled launcher")


def _first_line(text: str, limit: int = 160) -> str:
    line = next((s.strip() for s in text.splitlines() if "error" in s.lower()), "")
    line = line or next((s.strip() for s in text.splitlines() if s.strip()), "no output")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _build() -> str:
    """The path of a trusted compiled launcher, building it if need be.

    Raises:
        _Unavailable: there is none and none can be built (the one line to print).
    """
    try:
        source = _SOURCE.read_bytes()
    except OSError as err:
        raise _Unavailable(f"jobber: the launcher source {_SOURCE} cannot be read ({err.strerror or err}; "
                           f"a broken install? reinstall jobber): {_FALLBACK}") from None
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = _cache_dir()
    name = f"launcher-{digest}-{os.uname().machine}"
    binary = cache / name
    if _trusted(binary) and _trusted(cache, stat.S_IFDIR):
        return str(binary)
    compiler = _compiler()
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise _Unavailable(f"jobber: cannot create the launcher cache {cache} ({err.strerror or err}): "
                           f"{_FALLBACK}; set XDG_CACHE_HOME to a writable directory") from None
    if not _trusted(cache, stat.S_IFDIR):
        raise _Unavailable(f"jobber: the launcher cache {cache} is not a private directory of this user: "
                           f"{_FALLBACK}; remove it or set XDG_CACHE_HOME")
    tmp = cache / f".{name}.{os.getpid()}.{threading.get_ident()}"
    log = cache / f"{name}.log"
    try:
        try:
            result = subprocess.run([*compiler, *_FLAGS, "-o", str(tmp), str(_SOURCE)], check=False,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                                    timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            raise _Unavailable(f"jobber: the C compiler {shlex.join(compiler)} could not run ({err}): "
                               f"{_FALLBACK}; install gcc or fix $CC") from None
        if result.returncode != 0 or not tmp.is_file():
            output = result.stderr + result.stdout
            try:
                log.write_text(f"$ {shlex.join(result.args)}\n{output}")
                where = f"; its output is in {log}"
            except OSError:
                where = ""
            why = _first_line(output) if output.strip() else f"exit status {result.returncode}, no output"
            raise _Unavailable(f"jobber: {shlex.join(compiler)} could not build the launcher ({why}): "
                               f"{_FALLBACK}{where}")
        os.chmod(tmp, 0o700)
        probe = _probe(tmp)
        if probe:
            raise _Unavailable(f"jobber: the launcher built in {cache} does not run ({probe}): {_FALLBACK}; "
                               "set XDG_CACHE_HOME to a directory on a filesystem that allows exec")
        os.replace(tmp, binary)  # atomic: concurrent builders each install a whole file
    except OSError as err:
        raise _Unavailable(f"jobber: cannot install the launcher in {cache} ({err.strerror or err}): "
                           f"{_FALLBACK}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    try:
        log.unlink()  # the log of an earlier failed build
    except OSError:
        pass
    return str(binary)


def _probe(binary: Path) -> str | None:
    """Why a freshly built launcher cannot run here (noexec mount, ...), or None if it can."""
    try:
        result = subprocess.run([str(binary)], check=False, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, errors="replace", timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    if result.returncode == 2 and "usage: launcher" in result.stderr:
        return None
    return f"without arguments it exited with {result.returncode}: {_first_line(result.stderr)}"


def launcher_command(job_dir: str) -> list[str]:
    """The command that starts the resident half of a job's supervisor.

    Its options (``--join``, ``--env``, ``--`` COMMAND...) follow; the C launcher and
    ``supervisor.py --launch`` take the same ones. The first call chooses (and builds)
    the launcher; the choice holds for the process until `reset`.
    """
    global _cached
    with _lock:
        if _cached is None:
            binary = None
            if os.environ.get("JOBBER_LAUNCHER") != "python":
                try:
                    binary = _build()
                except _Unavailable as why:
                    print(why, file=sys.stderr, flush=True)
                except Exception as err:  # noqa: BLE001 - a job must start, and no traceback shown
                    print(f"jobber: building the launcher failed ({type(err).__name__}: {err}): {_FALLBACK}",
                          file=sys.stderr, flush=True)
            if binary:
                _cached = [binary, "{job_dir}", sys.executable, _SUPERVISOR]
            else:
                _cached = [sys.executable, "-I", "-S", _SUPERVISOR, "--launch", "{job_dir}"]
        prefix = list(_cached)
    return [job_dir if part == "{job_dir}" else part for part in prefix]


def reset() -> None:
    """Forget the chosen launcher (tests switch ``JOBBER_LAUNCHER``); the next job chooses again."""
    global _cached
    with _lock:
        _cached = None


if __name__ == "__main__":
    # `python -m jobber._backends.local.launcher_build`: build now (make does, so the first job starts fast).
    print(launcher_command("JOB_DIR")[0])
