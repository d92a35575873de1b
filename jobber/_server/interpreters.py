"""Which Python runs a tenant's function job on the server, checked before the job exists.

A function job names its interpreter (the ``python`` job option, default ``python3``).
The server never runs a path a client made up:

- a bare name (``python3``, ``python3.11``) is one the operator allowed by that name, else
  looked up on the jobs' own ``PATH`` (``SANDBOX_PATH``, what a tenant's job sees);
- an absolute path must be such a Python in a directory of that ``PATH``, or one the operator allowed (``jobber serve --python PATH``, or
  ``$JOBBER_SERVE_PYTHON``, colon-separated); anything else is a 400 naming what is allowed.

Each interpreter found is run once, with a fixed argv (``-I -c PROBE``: isolated, no
environment, no user site) and the jobs' ``PATH``, to learn its major.minor and whether it
can import cloudpickle; the answer is cached until the file changes (its inode and
mtime). The client sends its own ``sys.version_info[:2]``: cloudpickle needs the same
major.minor on both ends, so a mismatch is refused, naming both versions, before
anything is made. The probe unpickles nothing: it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass

from jobber._backends.context import SANDBOX_PATH
from jobber._server.errors import ApiError

__all__ = ["DEFAULT_PYTHON", "Interpreters", "allowed_from_env", "check_client_python"]

DEFAULT_PYTHON = "python3"
_NAME = re.compile(r"^python[0-9.]{0,8}[A-Za-z0-9_+-]{0,16}$")
_VERSION = re.compile(r"^([0-9]{1,2})\.([0-9]{1,3})$")
_PROBE = ("import json, sys\n"
          "try:\n"
          "    import cloudpickle\n"
          "    found = getattr(cloudpickle, '__version__', '?')\n"
          "except Exception as err:\n"
          "    found = None\n"
          "print(json.dumps({'version': list(sys.version_info[:2]), 'cloudpickle': found}))\n")
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Interpreter:
    """An interpreter the server checked: where it is, its major.minor, and whether it
    imports cloudpickle."""

    path: str
    version: str
    cloudpickle: bool


def allowed_from_env(given: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The operator's allowed interpreters: ``given`` (``--python``), else
    ``$JOBBER_SERVE_PYTHON`` (colon-separated); each made absolute."""
    paths = list(given or [])
    if not paths:
        paths = [p for p in os.environ.get("JOBBER_SERVE_PYTHON", "").split(":") if p]
    return tuple(os.path.abspath(p) for p in paths)


def check_client_python(value: object) -> str:
    """The client's ``"MAJOR.MINOR"`` as it sent it, checked.

    Raises:
        ApiError: 400 when it is missing or malformed.
    """
    if not isinstance(value, str) or not _VERSION.match(value):
        raise ApiError(400, f"client_python must be the client's Python version as \"MAJOR.MINOR\" (e.g. \"3.11\"), "
                            f"not {json.dumps(value)[:40]}: a function job's pickle needs the same major.minor on both "
                            "ends", "JobError")
    return value


class Interpreters:
    """The interpreters function jobs may name on this server, probed once each.

    Args:
        allowed: absolute paths the operator allowed (besides names on the jobs' ``PATH``).
        search_path: where bare names are looked up (the jobs' ``PATH``).
    """

    def __init__(self, allowed: tuple[str, ...] = (), search_path: str = SANDBOX_PATH) -> None:
        self.allowed = tuple(allowed)
        self.search_path = search_path
        self._cache: dict[str, tuple[tuple[int, int], Interpreter]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str | None) -> str:
        """The absolute path ``name`` stands for on this server.

        Raises:
            ApiError: 400 for a path the operator did not allow, a malformed name, or a
                name not found on the jobs' ``PATH``.
        """
        name = DEFAULT_PYTHON if name is None else name
        if not isinstance(name, str) or not name or "\0" in name:
            raise ApiError(400, f"python must be an interpreter's name such as \"python3\", not "
                                f"{json.dumps(name)[:40]}", "JobError")
        if "/" in name:
            path = os.path.abspath(name)
            on_path = os.path.dirname(path) in self.search_path.split(":") and _NAME.match(os.path.basename(path))
            if path in self.allowed or (on_path and os.path.isfile(path)):
                return path
            raise ApiError(400, f"python={name[:80]!r} is not an interpreter this server allows: {self._choices()}",
                           "JobError")
        if not _NAME.match(name):
            raise ApiError(400, f"python={name[:40]!r} is not an interpreter's name: {self._choices()}", "JobError")
        for allowed in self.allowed:
            if os.path.basename(allowed) == name:
                return allowed
        found = shutil.which(name, path=self.search_path)
        if found is None:
            raise ApiError(400, f"python={name!r}: no such interpreter on this server's PATH for jobs "
                                f"({self.search_path}); {self._choices()}", "JobError")
        return os.path.abspath(found)

    def check(self, name: str | None, client_version: str) -> str:
        """The path of the interpreter ``name`` names, once it is known to run the
        client's major.minor and to import cloudpickle (blocking: the first check of an
        interpreter runs it).

        Raises:
            ApiError: 400 saying what is wrong and what to do.
        """
        path = self.resolve(name)
        found = self._probe(path)
        if found.version != client_version:
            raise ApiError(400, f"python={name or DEFAULT_PYTHON!r} on this server ({os.path.basename(path)}) is "
                                f"Python {found.version}, but this client runs Python {client_version}: cloudpickle "
                                f"needs the same major.minor on both ends. Pass python= an interpreter of Python "
                                f"{client_version} on the server ({self._choices()}), or run the client under Python "
                                f"{found.version}", "JobError")
        if not found.cloudpickle:
            raise ApiError(400, f"python={name or DEFAULT_PYTHON!r} on this server (Python {found.version}) cannot "
                                f"import cloudpickle, which runs a function job: the server's operator should run "
                                f"`{path} -m pip install cloudpickle`, or allow another interpreter "
                                "(jobber serve --python PATH)", "JobError")
        return path

    def _choices(self) -> str:
        names = ", ".join(self.allowed)
        allowed = f"or one the operator allowed ({names})" if names else "(the operator may allow more: jobber serve --python PATH)"
        return f"name one on the jobs' PATH, such as \"python3\" or \"python3.11\", {allowed}"

    def _probe(self, path: str) -> Interpreter:
        try:
            st = os.stat(path)
        except OSError as err:
            raise ApiError(400, f"the interpreter {os.path.basename(path)} cannot be used: {err.strerror}",
                           "JobError") from None
        key = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        found = _run_probe(path)
        with self._lock:
            self._cache[path] = (key, found)
        return found


def _run_probe(path: str) -> Interpreter:
    try:
        done = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, timeout=_PROBE_TIMEOUT_S, cwd="/",
                              env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise ApiError(400, f"the interpreter {os.path.basename(path)} did not run on this server ({err}): name "
                            "another with python=", "JobError") from None
    try:
        answer = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
        major, minor = (int(part) for part in answer["version"])
        has_cloudpickle = answer.get("cloudpickle") is not None
    except (ValueError, KeyError, TypeError, IndexError):
        raise ApiError(400, f"the interpreter {os.path.basename(path)} did not say its version (exit status "
                            f"{done.returncode}): is it a Python? Name another with python=", "JobError") from None
    return Interpreter(path, f"{major}.{minor}", has_cloudpickle)
