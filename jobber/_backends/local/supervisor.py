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

Once the job runs, either resident half forks a watchdog (see ``launcher.c``): it waits
on a pipe whose only write end the supervisor holds, through its exec into the finisher
and the retry, and ends the job with ``reap.py`` if that end closes before the supervisor
released it (``retrying.release_watchdog``): a supervisor killed with SIGKILL leaves no
job running.

This file imports only the standard library and jobber's cgroup modules, never the
package's ``__init__`` (which loads cryptography): interpreter start-up is what it costs.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
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
from jobber._backends.local.job_child import child, read_command, read_env_file  # noqa: E402
from jobber._backends.local.logcap import LOG_STOPPED, LogCap, supervise, trim_log  # noqa: E402
from jobber._backends.local.retrying import hand_over, release_watchdog  # noqa: E402
from jobber._backends.local.waking import wake_waiting  # noqa: E402
from jobber._errors import DiskFull  # noqa: E402
from jobber._files import RESERVE, free_reserve, write_atomic  # noqa: E402
from jobber._states import ended, outcome  # noqa: E402


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


def write_final(job_dir: str, final: dict) -> None:
    """Record how the job ended: on a full disk with the space its reserve held, which
    the job needs no more once this is written."""
    write_atomic(os.path.join(job_dir, "status.json"), json.dumps(final).encode(),
                 reserve=os.path.join(job_dir, RESERVE))
    free_reserve(job_dir)


_FLAGS = {"--pgid": "pgid", "--clear-env": "clear_env", "--no-new-privs": "no_new_privs", "--hide-pids": "hide_pids"}
_VALUES = {"--cwd": "cwd", "--private-tmp": "private_tmp", "--command-file": "command_file", "--device-cover": "device_cover",
           "--timeout": "timeout", "--grace": "grace", "--log-max": "log_max", "--env-file": "env_file"}
TIMEOUT_NEVER_S = 9e9  # a --timeout this long is none (launcher.c: past 2^63 ns it would not fit)
TIMED_OUT = "timed-out"  # the marker file: the job was stopped at its time limit
LAUNCHED = "launched"  # the launcher of this attempt: "PID START_TICKS", made with O_EXCL


def parse_launch(argv: list[str]) -> dict:
    """Read the launcher's options (the same for the C and the Python launcher)."""
    plan: dict = {"join": [], "rlimit": [], "env_file": None, "hide_cgroup": [], "hide_device": [], "device_cover": None,
                  "pgid": False, "uid": None, "gid": None, "cwd": "/",
                  "clear_env": False, "no_new_privs": False, "hide_pids": False, "umask": None,
                  "private_tmp": None, "command_file": None, "log_max": None, "usage": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            plan["command"] = argv[i + 1]
            break
        if arg in _FLAGS:
            plan[_FLAGS[arg]] = True
        elif arg in ("--join", "--rlimit", "--hide-cgroup", "--hide-device", "--usage"):
            plan[arg[2:].replace("-", "_")].append(argv[i + 1])
            i += 1
        elif arg in ("--uid", "--gid"):
            plan[arg[2:]] = int(argv[i + 1])
            i += 1
        elif arg == "--umask":
            plan["umask"] = int(argv[i + 1], 8)
            i += 1
        elif arg in _VALUES:
            plan[_VALUES[arg]] = argv[i + 1]
            i += 1
        elif arg == "--into":
            i += 1  # Python has no clone3(CLONE_INTO_CGROUP): the child joins by --join
        else:
            raise ValueError(f"unknown launcher option {arg}")
        i += 1
    if plan["command_file"] is None and "command" not in plan:
        raise ValueError("no --command-file, and no command after --")
    plan["timeout"] = time_limit(plan.get("timeout"))
    return plan


_REAPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reap.py")


def fork_watchdog(job_dir: str) -> int:
    """Fork the job's watchdog (as launcher.c does); returns the pipe's write end, which
    only this process holds (inheritable: kept through the exec into ``run_next_attempt.py``)."""
    read_end, write_end = os.pipe()
    me, start = os.getpid(), process_start_time("self")
    if os.fork() == 0:
        try:
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # not the starter's pipes: it reads the answer until their EOF
                os.dup2(devnull, fd)
            os.closerange(3, read_end)  # nothing else of the supervisor's either (the log)
            os.closerange(read_end + 1, 1024)
            if not os.read(read_end, 1):  # EOF, not the byte: the supervisor died
                os.execv(sys.executable, [sys.executable, "-I", "-S", _REAPER, job_dir, str(me), str(start)])
        finally:
            os._exit(0)
    os.close(read_end)
    os.set_inheritable(write_end, True)
    return write_end


def launch(job_dir: str, plan: dict) -> int:
    """The pure-Python resident half: start the job, wait, then finish in-process."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    # Exactly once per attempt (as launcher.c): the first launcher takes the gate.
    try:
        gate = os.open(os.path.join(job_dir, LAUNCHED), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        os.write(1, b"error this attempt of the job was already launched\n")
        return 1
    os.write(gate, f"{os.getpid()} {process_start_time('self')}\n".encode())
    os.close(gate)
    # O_NOFOLLOW: a symlink planted as the log is refused, never written through;
    # O_NONBLOCK: so is a fifo, at once (then the flag is dropped).
    log_path = os.path.join(job_dir, "log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                     0o600)
    if not stat.S_ISREG(os.fstat(log_fd).st_mode):
        raise OSError(errno.EINVAL, f"{log_path} is not a regular file")
    os.set_blocking(log_fd, True)
    # The log stays root's, never the tenant's: its owner could take a write lease on it and
    # stall every later open of it by the server. Its group is the job's, so that a group
    # quota counts it against the tenant (launcher.c says more).
    if plan["gid"] is not None:
        os.fchown(log_fd, -1, plan["gid"])
    plan["env"] = read_env_file(plan["env_file"]) if plan["env_file"] is not None else []
    command, command_fd = plan.get("command"), -1
    if plan["command_file"] is not None:
        command, command_fd = read_command(plan["command_file"])
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    started_at = time.time()
    from jobber._usage import UsageWriter  # here: the finishing half (stop latency) never needs it

    sampler = UsageWriter(job_dir, [tuple(source.split("=", 1)) for source in plan["usage"] if "=" in source],
                          time.monotonic())
    pid = os.fork()
    if pid == 0:
        os.close(error_r)
        child(plan, log_fd, error_w, command, command_fd)
    os.close(error_w)
    log_max = int(plan["log_max"] or 0)
    cap = LogCap(log_fd, log_max, job_dir)  # cuts are made through log_fd (and a full disk stops the log)
    if command_fd >= 0:
        os.close(command_fd)
    failure = b""
    while chunk := os.read(error_r, 4096):  # EOF without data: the exec succeeded
        failure += chunk
    os.close(error_r)
    if failure:
        os.waitpid(pid, 0)
        return finish(job_dir, pid, started_at, failed=failure.decode(errors="replace"), log_max=log_max)
    # Before the status says "running" (a supervisor it names has a watchdog), after the
    # job's fork (the job never holds the pipe).
    try:
        watchdog_fd: int | None = fork_watchdog(job_dir)
    except OSError:
        watchdog_fd = None  # the job runs, supervised: without a watchdog only a status read reaps it
    try:
        write_atomic(os.path.join(job_dir, "pid"), f"{pid}\n".encode())  # a link in its place is replaced
        write_json(os.path.join(job_dir, "status.json"), {
            "state": "running", "pid": pid, "started_at": started_at,
            "supervisor_pid": os.getpid(), "supervisor_start": process_start_time("self"),
        })
    except OSError as err:
        # The job runs, but nothing says so: it must not run on unseen, nor leave its
        # cgroup behind (as launcher.c): kill it, and the finisher cleans up and says why.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(log_fd)
        why = str(err) if isinstance(err, DiskFull) or not err.strerror else \
            f"{err.filename2 or err.filename}: {err.strerror}"  # as launcher.c says it
        return finish(job_dir, pid, started_at, failed=f"cannot record the job's start: {why}", log_max=log_max,
                      watchdog_fd=watchdog_fd)
    try:
        os.write(1, f"ok {pid}\n".encode())
    except OSError:
        pass  # the starter was killed and its pipe closed: the job runs on, supervised
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if supervise(pid, plan["timeout"], cap, job_dir, sampler):
        time_out(job_dir, pid, float(plan.get("grace") or 5.0))
        supervise(pid, None, cap, job_dir, sampler)
    _, wait_status, usage = os.wait4(pid, 0)
    os.close(log_fd)
    return finish(job_dir, pid, started_at, wait_status=wait_status, maxrss_kb=usage.ru_maxrss,
                  cpu=usage.ru_utime + usage.ru_stime, log_max=log_max, log_seen=cap.last_size,
                  watchdog_fd=watchdog_fd)


def time_limit(text: str | None) -> float | None:
    """``--timeout``'s seconds, None for none (as launcher.c: nan and what is not above 0
    are refused; inf, or one too long ever to be reached, is none)."""
    if not text:
        return None
    seconds = float(text)
    if not seconds > 0:
        raise ValueError(f"--timeout {text} is not a positive number of seconds")
    return None if seconds >= TIMEOUT_NEVER_S else seconds


def time_out(job_dir: str, pid: int, grace: float) -> int:
    """The job ran past its time limit: mark it, then stop every process of it, as stop()
    does (SIGTERM, SIGKILL after ``grace``). The supervisor records the outcome."""
    write_atomic(os.path.join(job_dir, TIMED_OUT), f"{time.time()}\n".encode())
    with open(os.path.join(job_dir, "confinement.json")) as f:
        cgroup = open_cgroup(json.load(f), pid)
    try:
        cgroup.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_start_time(pid) is not None or cgroup.pids():
            cgroup.kill_all()
    except OSError:
        pass  # it ended meanwhile
    return 0


def finish(job_dir: str, pid: int, started_at: float, *, wait_status: int | None = None,
           maxrss_kb: int = 0, cpu: float = 0.0, failed: str | None = None, log_max: int = 0,
           log_seen: int | None = None, watchdog_fd: int | None = None) -> int:
    """Record how the job ended, after cleaning up what is left of it (and the last cut
    of its log, now that nothing writes to it: ``log_max`` bytes, 0 for no cap;
    ``log_seen``: its size at the resident half's last look); then release the watchdog
    (or hand it over to the retry, which releases it)."""
    ended_at = time.time()
    with open(os.path.join(job_dir, "confinement.json")) as f:
        cgroup = open_cgroup(json.load(f), pid)
    stats = _cleanup(cgroup)
    trim_log(job_dir, log_max, log_seen)
    final = {"pid": pid, "started_at": started_at, "ended_at": ended_at}
    if failed is not None:
        final.update(ended("failed", failed, exit_code=127, ended_at=ended_at))
        try:
            write_final(job_dir, final)
        except OSError as err:  # the starter hears why, finds no status and undoes the start
            failed += f" (and the job's outcome could not be recorded: {err})"
        release_watchdog(watchdog_fd)
        os.write(1, f"error {failed}\n".encode(errors="replace"))
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the starter reads its answer until EOF: an admission pass must not hold it
            os.dup2(devnull, fd)
        wake_waiting(job_dir)  # an admitted job that failed to start: its dependents, its place
        return 1
    stopped = os.path.exists(os.path.join(job_dir, "stop-requested"))
    timed_out = os.path.exists(os.path.join(job_dir, TIMED_OUT))
    final.update(outcome(wait_status, stopped=stopped, oom=stats.get("oom_kills", 0) > 0, timed_out=timed_out))
    # Without a cgroup, rusage is the best there is: the largest process, and the CPU of
    # the job's process and the descendants it waited for.
    final["peak_memory_bytes"] = stats.get("peak_memory_bytes", maxrss_kb * 1024)
    final["cpu_seconds"] = stats.get("cpu_seconds", cpu)
    final["cpu_throttled_seconds"] = stats.get("cpu_throttled_seconds")
    final.update(_peak_pids(job_dir, stats))
    _log_stopped(job_dir, final)
    try:
        hand_over(job_dir, final, watchdog_fd=watchdog_fd)  # a retry left for this ending: this process becomes run_next_attempt.py
    except OSError as err:  # nothing was moved (hand_over puts back what it moved): this outcome stands
        final["note"] = f"not retried: {err}"
    write_final(job_dir, final)
    release_watchdog(watchdog_fd)
    wake_waiting(job_dir)  # jobs wait for this one, or for its place: this process admits them
    return 0


def _peak_pids(job_dir: str, stats: dict) -> dict:
    """The most tasks the job had: the kernel's count (v2 pids.peak, or a v1 fork refused at
    the limit), else the largest of the supervisor's samples, marked as sampled."""
    if stats.get("peak_pids") is not None:
        return {"peak_pids": stats["peak_pids"]}
    from jobber._usage import USAGE, peak_tasks

    peak = peak_tasks(os.path.join(job_dir, USAGE))
    return {"peak_pids": peak, "peak_pids_sampled": True} if peak is not None else {}


def _log_stopped(job_dir: str, final: dict) -> None:
    """Move why the log stopped (a full disk) into the outcome: a next attempt starts over."""
    path = os.path.join(job_dir, LOG_STOPPED)
    try:
        with open(path, "rb") as note:
            final["log_stopped"] = note.read(1000).decode(errors="replace").strip()
        os.unlink(path)
    except OSError:
        pass


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
        log_max=int(options.get("--log-max", 0)),
        log_seen=int(options["--log-seen"]) if "--log-seen" in options else None,
        watchdog_fd=int(options["--watchdog-fd"]) if int(options.get("--watchdog-fd", -1)) >= 0 else None,
    )


def main(argv: list[str]) -> int:
    """``--launch JOB_DIR OPTIONS -- COMMAND`` or ``--finish JOB_DIR OPTIONS``."""
    try:
        if argv[0] == "--finish":
            return _finish_from_argv(argv[1:])
        if argv[0] == "--time-out":
            options = dict(zip(argv[2::2], argv[3::2]))
            return time_out(argv[1], int(options["--pid"]), float(options.get("--grace", 5.0)))
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
