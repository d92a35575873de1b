"""The warm launcher: function jobs started by forking a Python that is already loaded.

A function job run cold pays for a new interpreter twice over: the runner's (start-up,
``site``, cloudpickle: ~75 ms of CPU) and, with the compiled launcher, the finisher's
(~50 ms). A process that starts function jobs again and again (a notebook's kernel, an
executor's ``map``) gets a warm launcher of its own from its second one on: a helper
process (``warm_serve.py``) that has imported the Python supervisor, the runner and
cloudpickle. To start a job, the caller hands it a new socket over a private socket pair
and sends the launcher's own options on it; the warm launcher forks, and the fork runs
``supervisor.py --launch`` exactly as the Python launcher does (the same cgroup joins,
limits, log, watchdog, time limit and answer ``ok PID``), except for two steps that need no
new interpreter any more:

- the job's process, once confined, runs the runner in-process instead of exec'ing
  ``PYTHON -u function_runner.py`` (only for exactly that command line, with this
  interpreter; anything else is exec'd as usual);
- the supervisor records the outcome in-process, as the Python launcher always did, and
  an admission pass the end calls for runs in-process too, starting the next job of a
  queue by forking again (:data:`fork_here`).

Each job is still its supervisor's child in a cgroup of its own, and outlives the kernel:
the warm launcher only forks. Only its starter (and the starter's forks) hold the other
end of the socket pair: nobody else can reach it, and it exits when they are all gone, or
after :data:`IDLE_EXIT_S` without a request (the next job starts another). It never
unpickles anything (the job's own process loads its call, as a cold runner does).
Jobs that are not a plain function job of this host's kernel (a server's sandboxed or
other-uid jobs, a systemd user manager's scope) start cold, as does every job with
``JOBBER_WARM=0`` or ``JOBBER_LAUNCHER=python``, and any job when the warm launcher cannot
be reached.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from jobber._errors import JobError

__all__ = ["HEADER", "IDLE_EXIT_S", "RUNNER", "begin", "enabled", "pid", "stop"]

IDLE_EXIT_S = 120.0  # the warm launcher exits after this long without a request
HEADER = struct.Struct("!Q")  # the request's length, then the request (JSON)
RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "_jobs",
                      "function_runner.py")
_BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_boot.py")
_START_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 60.0  # as launching.REPLY_TIMEOUT_S (which imports this module)
_COLD_AFTER_FAILURE_S = 30.0  # after a warm launcher that could not start or died: jobs start cold this long
_WARM_FROM = 2  # the launch (of this process) from which on a warm launcher is used: one-off starters never pay for it
# Set in the warm launcher and its forks (``warm_serve.py``): a launch there forks, never asks.
fork_here: Callable[[str, list[str], dict, int], Callable[[], str]] | None = None

_lock = threading.Lock()
_control: socket.socket | None = None  # this process's end of the pair: requests go here
pid: int | None = None  # this process's warm launcher, once started (it may have exited since)
_launches = 0
_cold_until = 0.0


def enabled() -> bool:
    """Whether function jobs may start warm here (``JOBBER_WARM=0`` and
    ``JOBBER_LAUNCHER=python``, which choose the cold Python supervisor, say no)."""
    return os.environ.get("JOBBER_WARM", "1") != "0" and os.environ.get("JOBBER_LAUNCHER") != "python"


def begin(job_dir: str, options: list[str]) -> Callable[[], str | None] | None:
    """Ask the warm launcher to start a job; None when there is none to ask (the caller
    starts the job cold). The call returned reads its answer: ``ok PID`` or ``error
    WHY``, or None when it died before it took the job (start it cold then)."""
    env = dict(os.environ)
    umask = _umask()
    if fork_here is not None:
        return fork_here(job_dir, options, env, umask)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with theirs:
        if not _hand_over(theirs):
            ours.close()
            return None
    try:
        ours.settimeout(REPLY_TIMEOUT_S)  # as a cold launcher's answer is waited for
        body = json.dumps({"job_dir": job_dir, "options": options, "env": env, "umask": umask}).encode()
        ours.sendall(HEADER.pack(len(body)) + body, socket.MSG_NOSIGNAL)
        ours.shutdown(socket.SHUT_WR)
    except OSError:
        ours.close()
        return None  # it went away (idle) with the request: this job starts cold, the next warm

    def answer() -> str | None:
        reply = b""
        with ours:
            try:
                while chunk := ours.recv(65536):
                    reply += chunk
            except TimeoutError:
                raise JobError(f"its supervisor did not answer within {REPLY_TIMEOUT_S:.0f} s (the warm launcher's: "
                               "JOBBER_WARM=0 starts jobs without it)") from None
            except OSError:
                reply = b""
        if not reply and not os.path.lexists(os.path.join(job_dir, "launched")):
            return None  # it died before taking the job
        return reply.decode(errors="replace")

    return answer


def _umask() -> int:
    """This process's umask, read without setting it (a toggle would be seen by the files
    another thread makes meanwhile)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _hand_over(conn: socket.socket) -> bool:
    """Send the warm launcher one end of a request's socket (starting it when due)."""
    global _control, _launches
    with _lock:
        _launches += 1
        if _control is None:
            if _launches < _WARM_FROM or time.monotonic() < _cold_until:
                return False
            _control = _start()
            if _control is None:
                _failed()
                return False
        try:
            _control.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))],
                             socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
            return True
        except BlockingIOError:
            return False  # it has more than it can take (stopped?): this job starts cold
        except OSError:  # it exited (idle): the next launch starts another
            _control.close()
            _control = None
            return False


def _failed() -> None:
    global _cold_until
    _cold_until = time.monotonic() + _COLD_AFTER_FAILURE_S  # not every job pays for a start that fails


def _start() -> socket.socket | None:
    """Start this process's warm launcher; its end of the pair, or None."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # It forks at once and its first process exits (the warm launcher is nobody's child):
        # requests wait in the pair's buffer while it loads.
        boot = subprocess.run([sys.executable, "-u", _BOOT, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              start_new_session=True, cwd="/", timeout=_START_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        boot = None
    theirs.close()
    if boot is None or boot.returncode != 0 or not boot.stdout.strip().isdigit():
        ours.close()
        return None
    global pid
    pid = int(boot.stdout)
    return ours


def stop() -> None:
    """Let this process's warm launcher go (it exits once no fork of this process holds it)."""
    global _control, _launches
    with _lock:
        if _control is not None:
            _control.close()
        _control, _launches = None, 0


def _forked() -> None:
    """In a forked child: the parent's warm launcher is the parent's (its lock too)."""
    global _lock, _control, _launches, pid
    _lock = threading.Lock()
    pid = None
    if _control is not None:
        try:
            _control.close()
        except OSError:
            pass
    _control, _launches = None, 0


os.register_at_fork(after_in_child=_forked)
