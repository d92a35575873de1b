"""The supervisor: starts a job, waits for it, records its outcome.

Two halves. The resident half starts the job and waits: normally the compiled launcher
(``launcher.c``: ~1 ms to start, ~0.1 MB per running job), or, without a C compiler,
this file run as ``supervisor.py --launch ...`` with the same options. Either forks once
more and lets its first process exit, so the supervisor is nobody's child: killing the
Jupyter kernel that started a job (even with SIGKILL) neither signals nor orphans it.
The resident half is single-threaded, so running code in the forked child before exec is
safe (unlike ``preexec_fn`` in a kernel, which has threads).

The finishing half, ``supervisor.py --finish JOB_DIR ...``, runs once the job's main
process has ended: it kills leftovers, reads the cgroup's totals, removes the cgroup and
writes the outcome to status.json atomically.

This file imports only the standard library and jobber's cgroup modules, never the
package's ``__init__`` (which loads cryptography): interpreter start-up is what it costs.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import types

if __name__ == "__main__":
    # Make the island importable without running any package __init__ above it
    # (jobber/__init__.py loads cryptography): interpreter start-up is what stop costs.
    _here = os.path.dirname(os.path.abspath(__file__))
    for _name, _dir in (("jobber", os.path.dirname(os.path.dirname(_here))),
                        ("jobber._backends", os.path.dirname(_here)), ("jobber._backends.local", _here)):
        _package = types.ModuleType(_name)
        _package.__path__ = [_dir]
        sys.modules[_name] = _package

from jobber._backends.local.isolation import open_cgroup  # noqa: E402
from jobber._files import write_atomic  # noqa: E402
from jobber._states import outcome  # noqa: E402


def process_start_time(pid: int | str) -> int | None:
    """The start time of a live process in clock ticks since boot (tells a reused pid apart).

    None when the process is gone or a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return None if fields[0] == b"Z" else int(fields[19])


def write_json(path: str, data: dict) -> None:
    """Atomically replace ``path`` (readers see the old or the new file, whole)."""
    write_atomic(path, json.dumps(data).encode())


def parse_launch(argv: list[str]) -> dict:
    """Read the launcher's options (the same for the C and the Python launcher)."""
    plan: dict = {"join": [], "rlimit": [], "env": [], "pgid": False, "uid": None, "gid": None, "cwd": "/"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            plan["command"] = argv[i + 1]
            return plan
        if arg == "--pgid":
            plan["pgid"] = True
        elif arg in ("--join", "--rlimit", "--env"):
            plan[arg[2:]].append(argv[i + 1])
            i += 1
        elif arg in ("--uid", "--gid"):
            plan[arg[2:]] = int(argv[i + 1])
            i += 1
        elif arg == "--cwd":
            plan["cwd"] = argv[i + 1]
            i += 1
        elif arg == "--into":
            i += 1  # Python has no clone3(CLONE_INTO_CGROUP): the child joins by --join
        else:
            raise ValueError(f"unknown launcher option {arg}")
        i += 1
    raise ValueError("no command after --")


def _child(plan: dict, log_fd: int, error_fd: int) -> None:
    """In the forked child: confine, redirect, exec. Never returns."""
    try:
        for procs in plan["join"]:
            with open(procs, "w") as f:
                f.write("0")  # "0" moves the writing process itself
        if plan["pgid"]:
            os.setpgid(0, 0)
        for spec in plan["rlimit"]:
            name, value = spec.split("=")
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        if plan["gid"] is not None:
            os.setgroups([])
            os.setgid(plan["gid"])
        if plan["uid"] is not None:
            os.setuid(plan["uid"])
        os.chdir(plan["cwd"])
        env = dict(os.environ)
        env.update(item.split("=", 1) for item in plan["env"])
        os.execve("/bin/sh", ["sh", "-c", plan["command"]], env)
    except BaseException as err:  # noqa: BLE001 - anything here must reach the starter
        os.write(error_fd, f"{err}".encode(errors="replace"))
    finally:
        os._exit(127)


def launch(job_dir: str, plan: dict) -> int:
    """The pure-Python resident half: start the job, wait, then finish in-process."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    log_fd = os.open(os.path.join(job_dir, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    started_at = time.time()
    pid = os.fork()
    if pid == 0:
        os.close(error_r)
        _child(plan, log_fd, error_w)
    os.close(error_w)
    os.close(log_fd)
    failure = b""
    while chunk := os.read(error_r, 4096):  # EOF without data: the exec succeeded
        failure += chunk
    os.close(error_r)
    if failure:
        os.waitpid(pid, 0)
        return finish(job_dir, pid, started_at, failed=failure.decode(errors="replace"))
    with open(os.path.join(job_dir, "pid"), "w") as f:
        f.write(f"{pid}\n")
    write_json(os.path.join(job_dir, "status.json"), {
        "state": "running", "pid": pid, "started_at": started_at,
        "supervisor_pid": os.getpid(), "supervisor_start": process_start_time("self"),
    })
    os.write(1, f"ok {pid}\n".encode())
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _, wait_status, usage = os.wait4(pid, 0)
    return finish(job_dir, pid, started_at, wait_status=wait_status, maxrss_kb=usage.ru_maxrss,
                  cpu=usage.ru_utime + usage.ru_stime)



def finish(job_dir: str, pid: int, started_at: float, *, wait_status: int | None = None,
           maxrss_kb: int = 0, cpu: float = 0.0, failed: str | None = None) -> int:
    """Record how the job ended, after cleaning up what is left of it."""
    ended_at = time.time()
    with open(os.path.join(job_dir, "confinement.json")) as f:
        cgroup = open_cgroup(json.load(f), pid)
    stats = _cleanup(cgroup)
    final = {"pid": pid, "started_at": started_at, "ended_at": ended_at}
    if failed is not None:
        final.update(state="failed", exit_code=127, signal=None, oom_killed=False, error=failed)
        write_json(os.path.join(job_dir, "status.json"), final)
        os.write(1, f"error {failed}\n".encode(errors="replace"))
        return 1
    stopped = os.path.exists(os.path.join(job_dir, "stop-requested"))
    final.update(outcome(wait_status, stopped=stopped, oom=stats.get("oom_kills", 0) > 0))
    # Without a cgroup, rusage is the best there is: the largest process, and the CPU of
    # the job's process and the descendants it waited for.
    final["peak_memory_bytes"] = stats.get("peak_memory_bytes", maxrss_kb * 1024)
    final["cpu_seconds"] = stats.get("cpu_seconds", cpu)
    write_json(os.path.join(job_dir, "status.json"), final)
    return 0


def _cleanup(cgroup) -> dict:
    """Kill what is left of the job (orphans holding the log), read its totals, rmdir it.

    The job ends when its main process exits, as a container does; its leftovers are
    killed so that nothing outlives the job unseen and the cgroup can be removed.
    """
    stats: dict = {}
    try:
        if cgroup.pids():
            cgroup.kill_all()
        stats = cgroup.stats()
    except OSError:
        pass
    try:
        cgroup.remove()
    except OSError:
        pass
    return stats


def _finish_from_argv(argv: list[str]) -> int:
    options = dict(zip(argv[1::2], argv[2::2]))
    return finish(
        argv[0],
        int(options["--pid"]),
        float(options["--started"]),
        wait_status=int(options["--wait-status"]) if "--wait-status" in options else None,
        maxrss_kb=int(options.get("--maxrss-kb", 0)),
        cpu=float(options.get("--cpu", 0.0)),
        failed=options.get("--failed"),
    )


def main(argv: list[str]) -> int:
    """``--launch JOB_DIR OPTIONS -- COMMAND`` or ``--finish JOB_DIR OPTIONS``."""
    try:
        if argv[0] == "--finish":
            return _finish_from_argv(argv[1:])
        job_dir, plan = argv[1], parse_launch(argv[2:])
        if os.fork() != 0:
            os._exit(0)  # the starter reaps this one at once; the grandchild supervises
        return launch(job_dir, plan)
    except BaseException as err:  # noqa: BLE001 - the starter must hear of any failure
        try:
            os.write(1, f"error supervisor: {type(err).__name__}: {err}\n".encode())
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
