"""The supervisor: one small process per job that starts it and records its outcome.

Run as ``python -I -S _supervisor.py JOB_DIR`` by ``Job.start()``. It forks once more and
the first process exits, so the supervisor is nobody's child: killing the Jupyter kernel
that started a job (even with SIGKILL) neither signals nor orphans the job. The supervisor
is single-threaded, so forking and running Python in the child before exec is safe (unlike
``preexec_fn`` in a kernel, which has threads): the child joins its cgroup, points stdout
and stderr at the log and execs ``/bin/sh -c COMMAND``.

Protocol with the starter: the supervisor writes one line to its stdout, ``ok PID`` once
the command was exec'd, or ``error MESSAGE``, then closes it.

This file imports only the standard library and jobber's cgroup modules, never the
package's ``__init__`` (which loads cryptography): interpreter start-up is most of the
start latency.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import types

if __name__ == "__main__":
    # Make `jobber.<module>` importable without running jobber/__init__.py.
    _package = types.ModuleType("jobber")
    _package.__path__ = [os.path.dirname(os.path.abspath(__file__))]
    sys.modules["jobber"] = _package

from jobber._isolation import open_cgroup  # noqa: E402

FINAL_STATES = frozenset({"exited", "failed", "stopped", "oom-killed", "timed-out"})


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
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _child(job_dir: str, spec: dict, cgroup, log_fd: int, error_fd: int) -> None:
    """In the forked child: confine, redirect, exec. Never returns."""
    try:
        cgroup.join(os.getpid())
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        user = spec.get("user")
        if user:
            os.setgroups([])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
        os.chdir(spec.get("cwd") or "/")
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        os.execve("/bin/sh", ["/bin/sh", "-c", spec["command"]], env)
    except BaseException as err:  # noqa: BLE001 - anything here must reach the starter
        os.write(error_fd, f"{type(err).__name__}: {err}".encode(errors="replace"))
    finally:
        os._exit(127)


def _outcome(wait_status: int, stopped: bool, stats: dict) -> dict:
    exit_code = os.waitstatus_to_exitcode(wait_status)
    result: dict = {"exit_code": None, "signal": None}
    if exit_code < 0:
        result["signal"] = -exit_code
    else:
        result["exit_code"] = exit_code
    oom = stats.get("oom_kills", 0) > 0
    result["oom_killed"] = oom
    if stopped:
        result["state"] = "stopped"
    elif oom and exit_code != 0:
        result["state"] = "oom-killed"
    elif exit_code == 0:
        result["state"] = "exited"
    else:
        result["state"] = "failed"
    return result


def supervise(job_dir: str) -> int:
    """Start the job in ``job_dir`` and wait for it; returns the supervisor's exit code."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    with open(os.path.join(job_dir, "spec.json")) as f:
        spec = json.load(f)
    with open(os.path.join(job_dir, "confinement.json")) as f:
        record = json.load(f)
    status_path = os.path.join(job_dir, "status.json")
    cgroup = open_cgroup(record)
    base = {
        "isolation": record["isolation"],
        "isolation_note": "; ".join(record.get("notes", [])),
        "supervisor_pid": os.getpid(),
        "supervisor_start": process_start_time("self"),
    }
    log_fd = os.open(os.path.join(job_dir, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    started_at = time.time()
    pid = os.fork()
    if pid == 0:
        os.close(error_r)
        _child(job_dir, spec, cgroup, log_fd, error_w)
    os.close(error_w)
    os.close(log_fd)
    failure = b""
    while chunk := os.read(error_r, 4096):  # EOF without data: the exec succeeded
        failure += chunk
    os.close(error_r)
    if failure:
        os.waitpid(pid, 0)
        _cleanup(cgroup)
        message = failure.decode(errors="replace")
        write_json(status_path, {**base, "state": "failed", "exit_code": 127, "signal": None,
                                 "oom_killed": False, "started_at": started_at,
                                 "ended_at": time.time(), "error": message})
        os.write(1, f"error {message}\n".encode())
        return 1
    with open(os.path.join(job_dir, "pid"), "w") as f:
        f.write(f"{pid}\n")
    write_json(status_path, {**base, "state": "running", "pid": pid, "started_at": started_at})
    os.write(1, f"ok {pid}\n".encode())
    # Let go of the starter's pipe, so its read ends now, and of its terminal-less stdio.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)

    _, wait_status, rusage = os.wait4(pid, 0)
    ended_at = time.time()
    stopped = os.path.exists(os.path.join(job_dir, "stop-requested"))
    stats = _cleanup(cgroup)
    outcome = _outcome(wait_status, stopped, stats)
    final = {
        **base,
        **outcome,
        "pid": pid,
        "started_at": started_at,
        "ended_at": ended_at,
        # Without a cgroup, rusage is the best there is: the largest process, and the CPU
        # of the job's process and the descendants it waited for.
        "peak_memory_bytes": stats.get("peak_memory_bytes", rusage.ru_maxrss * 1024),
        "cpu_seconds": stats.get("cpu_seconds", rusage.ru_utime + rusage.ru_stime),
    }
    write_json(status_path, final)
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


def main() -> int:
    """Entry point: ``_supervisor.py JOB_DIR``."""
    job_dir = sys.argv[1]
    if os.fork() != 0:
        os._exit(0)  # the starter reaps this one at once; the grandchild is the supervisor
    try:
        return supervise(job_dir)
    except BaseException as err:  # noqa: BLE001 - the starter must hear of any failure
        try:
            os.write(1, f"error supervisor: {type(err).__name__}: {err}\n".encode())
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
