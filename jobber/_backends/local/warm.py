"""The warm launcher: function jobs started by forking a Python that is already loaded.

A function job run cold pays for a new interpreter twice over: the runner's (start-up,
``site``, cloudpickle: ~75 ms of CPU) and, with the compiled launcher, the finisher's
(~50 ms). The warm launcher is one long-lived process per user and interpreter (and jobber
release) that has imported the Python supervisor, the runner and cloudpickle. To start a job,
the caller sends it the launcher's own options over a Unix socket; it forks, and the fork
runs ``supervisor.py --launch`` exactly as the Python launcher does (the same forks, the
same cgroup joins, limits, log, watchdog, time limit and answer ``ok PID``), except for two
steps that need no new interpreter any more:

- the job's process, once confined, runs the runner in-process instead of exec'ing
  ``PYTHON -u function_runner.py`` (only for exactly that command line, with this
  interpreter; anything else is exec'd as usual);
- the supervisor records the outcome in-process, as the Python launcher always did, and
  an admission pass the end calls for runs in-process too, starting the next job of a
  queue by forking again.

So each job is still its supervisor's child in a cgroup of its own, and it outlives the
kernel: the warm launcher only forks. It serves only its own uid (``SO_PEERCRED``, both
ways), listens on an abstract socket named for the uid and a hash of the interpreter and
jobber's files (an upgraded jobber gets a new one), never unpickles anything (the job's
own process loads its call, as the cold runner does) and exits after
:data:`IDLE_EXIT_S` without a request. Jobs that are not a plain function job of this
host's kernel (a server's sandboxed or other-uid jobs, a systemd user manager's scope,
``JOBBER_LAUNCHER=python``, ``JOBBER_WARM=0``) start cold, and so does any job when the
warm launcher cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = ["HEADER", "begin", "enabled", "socket_name"]

_START_TIMEOUT_S = 10.0
HEADER = struct.Struct("!Q")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # .../jobber
RUNNER = os.path.join(_PACKAGE, "_jobs", "function_runner.py")
_BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_boot.py")
# Set in the warm launcher and its forks (``warm_serve.py``): a launch there forks, never connects.
fork_here: Callable[[str, list[str], dict, int], Callable[[], str]] | None = None
_name: str | None = None
_COLD_AFTER_FAILURE_S = 30.0  # after a warm launcher that could not start or died: jobs start cold this long
_cold_until = 0.0


def enabled() -> bool:
    """Whether function jobs may start warm here (``JOBBER_WARM=0`` and
    ``JOBBER_LAUNCHER=python``, which choose the cold Python supervisor, say no)."""
    return os.environ.get("JOBBER_WARM", "1") != "0" and os.environ.get("JOBBER_LAUNCHER") != "python"


def socket_name() -> str:
    """The abstract socket's name: this uid, and a hash of the interpreter and of jobber's
    files (their sizes and times), so that a new release or an edited checkout gets a warm
    launcher of its own and the old one idles out."""
    global _name
    if _name is None:
        digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{_PACKAGE}".encode())
        for folder, dirs, files in os.walk(_PACKAGE):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(f for f in files if f.endswith((".py", ".c"))):
                st = os.stat(os.path.join(folder, file))
                digest.update(f"{folder}/{file}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        _name = f"jobber-warm-{os.geteuid()}-{digest.hexdigest()[:24]}"
    return _name


def begin(job_dir: str, options: list[str]) -> Callable[[], str | None] | None:
    """Ask the warm launcher to start a job; None when there is none to ask (the caller
    starts the job cold). The call returned reads its answer: ``ok PID`` or ``error
    WHY``, or None when it died before it took the job (start it cold then)."""
    env = dict(os.environ)
    umask = os.umask(0o022)
    os.umask(umask)
    if fork_here is not None:
        return fork_here(job_dir, options, env, umask)
    global _cold_until
    if time.monotonic() < _cold_until:
        return None
    conn = _connect() or _start()
    if conn is None:
        _cold_until = time.monotonic() + _COLD_AFTER_FAILURE_S  # not every job pays for a start that fails
        return None
    try:
        body = json.dumps({"job_dir": job_dir, "options": options, "env": env, "umask": umask}).encode()
        conn.sendall(HEADER.pack(len(body)) + body)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        conn.close()
        return None

    def answer() -> str | None:
        reply = b""
        with conn:
            try:
                while chunk := conn.recv(65536):
                    reply += chunk
            except OSError:
                reply = b""
        if not reply and not os.path.lexists(os.path.join(job_dir, "launched")):
            global _cold_until
            _cold_until = time.monotonic() + _COLD_AFTER_FAILURE_S
            return None  # it died before taking the job
        return reply.decode(errors="replace")

    return answer


def peer_is_me(conn: socket.socket) -> bool:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.geteuid()


def _connect() -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.settimeout(60.0)  # a launch answers in milliseconds; this bounds a hung one
        conn.connect("\0" + socket_name())
        if peer_is_me(conn):
            return conn
    except OSError:
        pass
    conn.close()  # none, or another uid's squatting the name: start cold
    return None




def _start() -> socket.socket | None:
    """Start the warm launcher (it binds its socket before its imports, so the first
    request waits for them rather than starting cold), then connect."""
    try:
        boot = subprocess.run([sys.executable, "-u", _BOOT, socket_name()],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, timeout=_START_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return _connect() if boot.returncode == 0 else None
