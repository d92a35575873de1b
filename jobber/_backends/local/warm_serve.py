"""The warm launcher's own side (``warm.py`` says what it is and how it is asked): its loop,
a launcher forked per request, and a function job's runner run in its job's process.

Started by ``warm_boot.py``; never imported by a caller of jobber.
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable

from jobber._backends.local import warm

__all__ = ["serve"]

_REQUEST_MAX = 64 << 20  # an environment larger than this is no caller of ours
_boot_path: list[str] = []
_python_env: dict[str, str] = {}  # the PYTHON* variables this interpreter started with


def _interpreter_settings(env) -> dict[str, str]:
    """What of an environment an interpreter reads as it starts (PYTHONPATH, PYTHONHASHSEED,
    PYTHONWARNINGS, ..., the locale, the time zone): a job whose own differ is exec'd, never
    run in this one."""
    return {name: value for name, value in env.items()
            if name.startswith(("PYTHON", "LC_")) or name in ("LANG", "LANGUAGE", "TZ")}


def serve(control: socket.socket) -> None:
    """The warm launcher's loop: load what a job needs, then fork a launcher per request,
    until its starter and the starter's forks are gone (EOF), or none asked for a while."""
    global _boot_path, _python_env
    warm.fork_here = _fork_launch
    _boot_path = list(sys.path)  # a new interpreter's (warm_boot.py took its own directory out)
    _python_env = _interpreter_settings(os.environ)
    _preload()
    # Each fork supervises a job: ignoring SIGCHLD reaps them with no zombie (the fork
    # puts the default back before it starts its job).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control.settimeout(warm.IDLE_EXIT_S)
    size = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
    while True:
        try:
            data, ancillary, _flags, _address = control.recvmsg(1, size)
        except TimeoutError:
            return  # idle: the next launch starts another
        except InterruptedError:
            continue
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data and not fds and _closed(control):
            return  # every holder of the other end is gone
        for fd in fds[1:]:
            os.close(fd)  # one socket per request
        if not fds:
            continue
        with socket.socket(fileno=fds[0]) as conn:
            try:
                request = _read_request(conn)
            except (OSError, ValueError):
                continue
            if _gone(conn):
                continue  # its caller gave up on it (no answer in time) and undid the start
            if os.fork() == 0:
                control.close()
                _run_launcher(conn.detach(), request)


def _gone(conn: socket.socket) -> bool:
    """Whether the caller closed its end of the request's socket (it only shut down its
    writing while it waits for the answer)."""
    poller = select.poll()
    poller.register(conn, select.POLLOUT)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _closed(control: socket.socket) -> bool:
    """Whether nothing read was the pair's end (EOF), not an empty message."""
    try:
        return control.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _read_request(conn: socket.socket) -> dict:
    conn.settimeout(10.0)
    data = b""
    while len(data) < warm.HEADER.size and (chunk := conn.recv(warm.HEADER.size - len(data))):
        data += chunk
    if len(data) < warm.HEADER.size:
        raise ValueError("no request")
    (size,) = warm.HEADER.unpack(data)
    if size > _REQUEST_MAX:
        raise ValueError("too large")
    body = bytearray()
    while len(body) < size and (chunk := conn.recv(min(1 << 20, size - len(body)))):
        body += chunk
    request = json.loads(body)
    if not (isinstance(request, dict) and isinstance(request.get("job_dir"), str) and isinstance(request.get("options"), list)
            and isinstance(request.get("env"), dict) and isinstance(request.get("umask"), int)):
        raise ValueError("not a launch")
    return request


def _fork_launch(job_dir: str, options: list[str], env: dict, umask: int) -> Callable[[], str]:
    """In a fork of the warm launcher (an admission pass after a job ended): fork the
    launcher here; the call returned reads its answer from a pipe."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    if os.fork() == 0:
        os.close(read_end)
        _run_launcher(write_end, {"job_dir": job_dir, "options": options, "env": env, "umask": umask})
    os.close(write_end)

    def answer() -> str:
        reply = b""
        while chunk := os.read(read_end, 65536):
            reply += chunk
        os.close(read_end)
        # Not waited for: it supervises its job, and is reaped by whoever this process's
        # parent is once this process exits (it ends after its admission pass).
        return reply.decode(errors="replace")

    return answer


def _run_launcher(answer_fd: int, request: dict) -> None:
    """In a new fork: become ``supervisor.py --launch`` with the caller's environment and
    umask, answering on ``answer_fd``. Never returns."""
    code = 1
    try:
        # A session (and process group) of its own, as a cold launcher has: a job's
        # `kill 0` must reach neither the warm launcher nor the other jobs.
        os.setsid()
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
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        return
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

    spec = importlib.util.spec_from_file_location("_jobber_function_runner", warm.RUNNER)
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
    if len(words) != 6 or words[:4] != ["exec", sys.executable, "-u", warm.RUNNER] or not words[5].isdigit():
        return
    if _interpreter_settings(env) != _python_env:
        return  # a new interpreter would start otherwise than this one did
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
    # The runner is __main__, as when run by path: multiprocessing's spawn in the job
    # re-runs it (guarded), never warm_boot.py.
    runner.__name__, runner.__spec__ = "__main__", None
    sys.modules["__main__"] = runner
    sys.argv = [warm.RUNNER, words[4], words[5]]
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
