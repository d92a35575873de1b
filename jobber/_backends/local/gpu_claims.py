"""Which job holds each GPU, host-wide, whichever user runs it.

A GPU's claim is a listening Unix socket bound to an *abstract* name (``unix(7)``),
``@jobber-gpu-<major>:<minor>-<key of its node's path>``. The kernel lets one socket at a
time bind a name, for every user of the host (of its network namespace), and drops the
name when the last descriptor of that socket closes, however its holder ended: kill -9
included, with nobody looking. Nothing lives on a file system, so there is nothing another
user can make first (a FIFO, a symlink, a file of mode 0600 under the lock's name), delete,
or fill: a claim can only be taken by binding it while it is free, and only the process
that holds it can give it back.

Who holds it: the admission pass that admits a GPU job binds its GPUs' names, then hands
the sockets to a *holder* (this module run as a process, detached), which keeps them while
the job is starting or running and its supervisor lives, and exits (releasing them) once
the job ended, went back in line, or its supervisor died.

A job that waits for GPUs has a *waiter* per identity (one at most, under a ``flock``): it
connects to every held GPU's socket and sleeps until one of them hangs up (its holder
exited: the GPU is free), then runs that identity's admission pass. So another user's job
ending admits this user's job, though neither may read the other's files.

Standard library only (and ``jobber._backends.local.liveness``): a holder runs in a bare
interpreter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobber._files import READ_MAX, read_regular

__all__ = ["address", "bind", "in_use", "hand_over", "start_waiter"]

_POLL_S = 0.2  # how often a holder reads its job's status
_WAITER_LOCK = ".gpu-waiter"


def address(major: int, minor: int, path: str) -> bytes:
    """The abstract socket name that claims the GPU at ``path`` (major:minor)."""
    # The node's real path tells apart nodes of the same numbers (fake GPUs in tests); a
    # hash keeps the name within sun_path's 108 bytes.
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:16]
    return f"\0jobber-gpu-{major}:{minor}-{key}".encode()


def bind(gpus: Sequence[Any], count: int) -> tuple[list[int], list[socket.socket]] | None:
    """Claim ``count`` free GPUs among ``gpus`` (``gpus.Gpu``), in their order.

    Returns:
        Their indices and the sockets that hold them (close them to give them back), or
        None when fewer than ``count`` are free (nothing is held then).
    """
    got: list[int] = []
    held: list[socket.socket] = []
    for gpu in gpus:
        if len(got) == count:
            break
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(address(gpu.major, gpu.minor, gpu.path))
            sock.listen(64)  # waiters connect and wait for the hang-up; nobody accepts
        except OSError:
            sock.close()  # EADDRINUSE: another job holds it
            continue
        got.append(gpu.index)
        held.append(sock)
    if len(got) < count:
        for sock in held:
            sock.close()
        return None
    return got, held


def in_use(gpus: Sequence[Any]) -> set[int]:
    """The indices of the GPUs some job holds now (a look: ``bind`` alone decides a claim)."""
    busy = set()
    for gpu in gpus:
        try:
            sock = _connect(gpu)
        except OSError:
            busy.add(gpu.index)  # bound, but its holder does not answer: held all the same
            continue
        if sock is not None:
            busy.add(gpu.index)
            sock.close()
    return busy


def _connect(gpu: Any) -> socket.socket | None:
    """A connection to the GPU's holder, or None when nobody holds it.

    Raises:
        OSError: the name is bound but the connection failed (a full listen queue).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(5.0)  # a holder accepts at once; never hang on one that is stuck
    try:
        sock.connect(address(gpu.major, gpu.minor, gpu.path))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None  # nobody has the name bound
    except OSError:
        sock.close()
        raise
    return sock


def hand_over(sockets: list[socket.socket], job_dir: str) -> None:
    """Give the claim to a holder process for the job at ``job_dir``, and close ours.

    Raises:
        OSError: the holder could not be started (the claim is then given back).
    """
    try:
        fds = [sock.fileno() for sock in sockets]
        proc = subprocess.Popen(
            [*_boot(), "hold", os.path.abspath(job_dir), *map(str, fds)], pass_fds=fds, start_new_session=True, cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait()  # it forks the holder and exits: nobody is left to reap
    finally:
        for sock in sockets:
            sock.close()


def start_waiter(owner_dir: str, gpus: Sequence[Any]) -> None:
    """Make sure a waiter admits ``owner_dir``'s waiting jobs once a GPU is freed."""
    if _waiter_runs(owner_dir):
        return  # every pass of a waiting job asks: most find it there, and spawn nothing
    try:
        proc = subprocess.Popen(
            [*_boot(), "wait", os.path.abspath(owner_dir), *(f"{g.major}:{g.minor}:{os.path.realpath(g.path)}" for g in gpus)],
            start_new_session=True, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait()
    except OSError:
        pass  # the next look at a waiting job (status(), a start) runs the pass instead


def _waiter_runs(owner_dir: str) -> bool:
    try:
        fd = os.open(os.path.join(owner_dir, _WAITER_LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (a lock this call took goes with it)
    return False


def _boot(module: str = "gpu_claims") -> list[str]:
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # As the supervisor does: jobber's package without its __init__ (cryptography).
    boot = ("import sys, types; jobber = types.ModuleType('jobber'); jobber.__path__ = [sys.argv[1] + '/jobber']; "
            "sys.modules['jobber'] = jobber; "
            f"from jobber._backends.local.{module} import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-I", "-S", "-c", boot, package_parent]


def _holding(job_dir: str) -> bool:
    """Does the job still need its GPUs (starting, running, or between two attempts)?"""
    from jobber._backends.local.liveness import alive

    try:
        raw = json.loads(read_regular(os.path.join(job_dir, "status.json"), READ_MAX))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # being rewritten: ask again
    if raw.get("waiting") or raw.get("state") not in ("pending", "running"):
        return False
    if raw.get("state") == "running":
        return alive(raw.get("supervisor_pid"), raw.get("supervisor_start"))
    return True


def _hold(job_dir: str, fds: list[int]) -> None:
    """Keep the claim while the job needs it; accept every connection (a look, a waiter)
    and keep it until it hangs up, so the listen queue never fills."""
    listening = {fd: socket.socket(fileno=fd) for fd in fds}
    peers: dict[int, socket.socket] = {}
    poller = select.poll()
    for fd in listening:
        poller.register(fd, select.POLLIN)
    deadline = 0.0
    while True:
        if time.monotonic() >= deadline:
            if not _holding(job_dir):
                break
            deadline = time.monotonic() + _POLL_S
        for fd, _event in poller.poll(_POLL_S * 1000):
            if fd in listening:
                try:
                    peer, _ = listening[fd].accept()
                except OSError:
                    time.sleep(_POLL_S)  # out of descriptors (a flood of connections): no busy loop
                    continue
                peers[peer.fileno()] = peer
                poller.register(peer, select.POLLIN)
            else:
                poller.unregister(fd)
                peers.pop(fd).close()  # a look that is done, or a waiter that left
    for sock in listening.values():
        sock.close()  # the claim is given back; waiters still connected see the hang-up


def _wait(owner_dir: str, nodes: list[str]) -> None:
    lock = os.open(os.path.join(owner_dir, _WAITER_LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a waiter of this identity is there already
    held = []
    for node in nodes:
        major, minor, path = node.split(":", 2)
        try:
            sock = _connect(_Node(int(major), int(minor), path))
        except OSError:
            continue  # held, by a holder that does not answer: the others will do
        if sock is not None:  # a free GPU is passed over: the job waits for more than those
            held.append(sock)
    if held:  # none held: all free since the pass looked, so admit now
        poller = select.poll()
        for sock in held:
            poller.register(sock, select.POLLIN | select.POLLHUP)
        poller.poll()  # the first GPU given back
    else:
        time.sleep(1.0)  # never a busy loop, should the pass still find too few (a GPU gone)
    os.close(lock)  # a pass that still finds no GPU starts the next waiter
    # As the finisher does (waking.py): the pass in a fresh interpreter, with all of jobber.
    os.execv(sys.executable, [*_boot("run_admission"), owner_dir])


class _Node:
    def __init__(self, major: int, minor: int, path: str) -> None:
        self.major, self.minor, self.path, self.index = major, minor, path, -1


def main(argv: list[str]) -> int:
    """``hold JOB_DIR FD...`` or ``wait OWNER_DIR MAJOR:MINOR:PATH...``, detached (forks, the
    parent exits at once)."""
    if os.fork():
        return 0
    if argv[0] == "hold":
        _hold(argv[1], [int(fd) for fd in argv[2:]])
    else:
        _wait(argv[1], argv[2:])
    return 0
