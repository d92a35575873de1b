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
import signal
import socket
import struct
import subprocess
import sys

__all__ = ["IDLE_EXIT_S", "enabled", "launch", "serve", "socket_name"]

IDLE_EXIT_S = 120.0  # the warm launcher exits after this long without a request
_REQUEST_MAX = 64 << 20  # an environment larger than this is no caller of ours
_START_TIMEOUT_S = 10.0
_HEADER = struct.Struct("!Q")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # .../jobber
_RUNNER = os.path.join(_PACKAGE, "_jobs", "function_runner.py")
_BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_boot.py")
_serving = False  # True in the warm launcher and its forks: a launch there forks, never connects
_name: str | None = None
_boot_path: list[str] = []


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


def launch(job_dir: str, options: list[str]) -> str | None:
    """Start a job through the warm launcher: its answer (``ok PID`` or ``error WHY``), or
    None when there is no warm launcher to ask (the caller starts the job cold)."""
    env = {name: value for name, value in os.environ.items()}
    umask = os.umask(0o022)
    os.umask(umask)
    if _serving:
        return _fork_launch(job_dir, options, env, umask)
    conn = _connect() or _start()
    if conn is None:
        return None
    with conn:
        try:
            body = json.dumps({"job_dir": job_dir, "options": options, "env": env, "umask": umask}).encode()
            conn.sendall(_HEADER.pack(len(body)) + body)
            conn.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        except OSError:
            reply = b""
    if not reply and not os.path.lexists(os.path.join(job_dir, "launched")):
        return None  # it died before taking the job: start it cold
    return reply.decode(errors="replace")


def _peer_is_me(conn: socket.socket) -> bool:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.geteuid()


def _connect() -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.settimeout(60.0)  # a launch answers in milliseconds; this bounds a hung one
        conn.connect("\0" + socket_name())
        if _peer_is_me(conn):
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


def serve(listener: socket.socket, name: str) -> None:
    """The warm launcher's loop: load what a job needs, then fork a launcher per request."""
    global _serving, _name, _boot_path
    _serving, _name = True, name
    _boot_path = list(sys.path)  # a new interpreter's (warm_boot.py took its own directory out)
    _preload()
    # Each fork supervises a job: ignoring SIGCHLD reaps them with no zombie (the fork
    # puts the default back before it starts its job).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener.settimeout(IDLE_EXIT_S)
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            return  # idle: the next launch starts another
        except InterruptedError:
            continue
        with conn:
            try:
                request = _read_request(conn)
            except (OSError, ValueError):
                continue
            if os.fork() == 0:
                listener.close()
                _run_launcher(conn.detach(), request)


def _read_request(conn: socket.socket) -> dict:
    conn.settimeout(10.0)
    if not _peer_is_me(conn):
        raise ValueError("another uid")
    data = b""
    while len(data) < _HEADER.size and (chunk := conn.recv(_HEADER.size - len(data))):
        data += chunk
    (size,) = _HEADER.unpack(data)
    if size > _REQUEST_MAX:
        raise ValueError("too large")
    body = bytearray()
    while len(body) < size and (chunk := conn.recv(min(1 << 20, size - len(body)))):
        body += chunk
    request = json.loads(body)
    if not (isinstance(request.get("job_dir"), str) and isinstance(request.get("options"), list)
            and isinstance(request.get("env"), dict) and isinstance(request.get("umask"), int)):
        raise ValueError("not a launch")
    return request


def _fork_launch(job_dir: str, options: list[str], env: dict, umask: int) -> str:
    """In a fork of the warm launcher (an admission pass after a job ended): fork the
    launcher here, reading its answer from a pipe."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        _run_launcher(write_end, {"job_dir": job_dir, "options": options, "env": env, "umask": umask})
    os.close(write_end)
    reply = b""
    while chunk := os.read(read_end, 65536):
        reply += chunk
    os.close(read_end)
    # Not waited for: it supervises its job, and is reaped by whoever this process's parent
    # is once this process exits (it ends after its admission pass).
    return reply.decode(errors="replace")


def _run_launcher(answer_fd: int, request: dict) -> None:
    """In a new fork: become ``supervisor.py --launch`` with the caller's environment and
    umask, answering on ``answer_fd``. Never returns."""
    code = 1
    try:
        os.dup2(answer_fd, 1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 2)
        _close_from(3)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        from jobber._backends.local import supervisor

        # supervisor.py --launch, less its first fork: this process is nobody's child already
        # (the warm launcher's, which reaps without waiting).
        code = supervisor.launch(request["job_dir"], supervisor.parse_launch([str(o) for o in request["options"]]))
    except BaseException as err:  # noqa: BLE001 - the starter must hear of any failure
        try:
            os.write(1, f"error supervisor: {type(err).__name__}: {err}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _close_from(low: int) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(low, 1024))
    for fd in fds:
        if fd >= low:
            try:
                os.close(fd)
            except OSError:
                pass


def _preload() -> None:
    """Import what a launch, a job's runner and its end need, once: each fork has them."""
    import importlib.util
    import pickle  # noqa: F401
    import shlex  # noqa: F401
    import traceback  # noqa: F401

    import cloudpickle  # noqa: F401

    from jobber._backends.local import job_child, run_admission, supervisor, waking  # noqa: F401
    from jobber._usage import UsageWriter  # noqa: F401

    spec = importlib.util.spec_from_file_location("_jobber_function_runner", _RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    job_child.in_process = lambda command, env, error_fd: _run_function(runner, command, env, error_fd)
    waking.admit_here = run_admission.main


def _run_function(runner, command: str, env: dict, error_fd: int) -> None:
    """In the job's process, confined: if ``command`` is the runner's line for this
    interpreter, run it here as its own process would (never returns); else return (the
    command is exec'd)."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return
    if len(words) != 6 or words[:4] != ["exec", sys.executable, "-u", _RUNNER] or not words[5].isdigit():
        return
    import atexit
    import threading

    # What an exec would have done: the environment, the signals a new Python has, no
    # descriptor but 0-2 (closing error_fd tells the supervisor the start went well),
    # none of jobber's modules (the job imports its own), the runner's argv and path.
    os.environ.clear()
    os.environ.update(env)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.close(error_fd)
    _close_from(3)
    for module in [name for name in sys.modules if name == "jobber" or name.startswith("jobber.")]:
        del sys.modules[module]
    sys.argv = [_RUNNER, words[4], words[5]]
    sys.path[:] = _boot_path
    code = 1
    try:
        code = runner.main(sys.argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        try:
            threading._shutdown()  # as an interpreter's exit: wait for the threads the function left
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
