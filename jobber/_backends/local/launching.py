"""Launching a job's supervisor: its command line, and its one-line answer.

``start()`` (``backend.py``) makes the job's cgroup, then :func:`supervisor_argv` builds the
launcher's options from the spec and :func:`launch` runs it and reads ``ok PID`` or
``error WHY``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

from jobber._backends.local import warm
from jobber._backends.local.cgroupfs import mountinfo
from jobber._backends.local.launcher_build import launcher_command
from jobber._errors import JobError
from jobber._files import write_atomic
from jobber._jobs.jobdir import JobDir
from jobber._jobs.spec import JobSpec

__all__ = ["AlreadyLaunched", "ENV_FILE", "REPLY_TIMEOUT_S", "begin_launch", "launch", "not_started", "supervisor_argv",
           "through_user_manager", "undo_launch"]

REPLY_TIMEOUT_S = warm.REPLY_TIMEOUT_S  # how long a launcher may take to answer


class AlreadyLaunched(JobError):
    """Another launcher of this attempt took its gate: it runs the job; undo nothing."""


def not_started(job_id: int, err: BaseException) -> JobError:
    return JobError(f"job {job_id} did not start: {type(err).__name__}: {err}", job_id=job_id)


ENV_FILE = "launch-env"  # the job's environment for its launcher, which reads and unlinks it


def supervisor_argv(job_dir: str, cgroup: Any, spec: JobSpec) -> list[str]:
    """The launcher's command line for a job whose spec holds its run context (the C and
    Python launchers share these options).

    The command itself goes to ``<job dir>/command``, which the launcher reads: a command
    of any length runs (as an argument it would meet the kernel's 128 KiB per string).
    The environment goes to ``<job dir>/launch-env`` (``NAME=VALUE`` entries, each ended
    by a NUL; mode 0600), never to the command line: every local user can read any
    process's ``/proc/PID/cmdline``, for as long as the launcher lives, and values are
    secrets. The launcher uses it only if this user owns it and nobody else may read
    it, and unlinks it at once.
    """
    command_file = os.path.join(job_dir, "command")
    write_atomic(command_file, os.fsencode(spec.command))
    env_file = os.path.join(job_dir, ENV_FILE)
    write_atomic(env_file, b"".join(os.fsencode(f"{name}={value}") + b"\0" for name, value in (spec.env or {}).items()))
    argv = launcher_command(job_dir) + cgroup.launch_args() + ["--cwd", spec.cwd]
    if "--pgid" not in argv:
        # A process group of its own, always: a job's `kill 0` (`trap 'kill 0' EXIT`) then
        # ends the job's processes, never its supervisor and watchdog with them.
        argv.append("--pgid")
    if hasattr(cgroup, "usage_args"):  # a job without a cgroup has no usage to sample
        argv += cgroup.usage_args()
    sandbox = spec.sandbox
    if sandbox:
        argv += ["--clear-env", "--umask", sandbox["umask"]]
        if sandbox.get("no_new_privs"):
            argv.append("--no-new-privs")
        for name, (soft, hard) in sorted(sandbox.get("rlimits", {}).items()):
            argv += ["--rlimit", f"{name}={soft}:{hard}"]
        if sandbox.get("private_tmp"):
            argv += ["--private-tmp", sandbox["private_tmp"]]
        if sandbox.get("hide_pids"):
            argv.append("--hide-pids")
            # cgroupfs lists every pid of the host too: hidden but for the job's own cgroups.
            argv += [arg for mount, _type, _options in mountinfo() for arg in ("--hide-cgroup", mount)]
    argv += ["--env-file", env_file]
    if spec.user is not None:
        argv += ["--uid", str(spec.user["uid"]), "--gid", str(spec.user["gid"])]
    return argv + ["--command-file", command_file]


def undo_launch(jobdir: JobDir, record: dict[str, Any] | None, cgroup: Any, *, release: bool = True) -> None:
    """Nothing ran: remove what a start made (its cgroup, or the directories ``prepare``
    made; its launch files), so that the job can be started again.

    Args:
        jobdir: the job's directory.
        record: the confinement record, if ``isolation.prepare`` got that far.
        cgroup: the opened cgroup, if ``isolation.open_cgroup`` got that far.
        release: give the start claim back too (False between two attempts, or for a job
            an admission pass started: their start stays claimed).
    """
    if cgroup is not None:
        try:
            cgroup.remove()
        except OSError:
            pass
    elif record is not None:
        # open_cgroup failed after prepare made the cgroups (nothing joined them): rmdir
        # the job's, then its owner's and jobber's if they became empty.
        for path in set(record.get("dirs", {}).values()):
            for level in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
                try:
                    os.rmdir(level)
                except OSError:
                    pass
    jobdir.remove("confinement.json")
    jobdir.remove("launched")  # the launcher said it failed: it runs nothing
    jobdir.remove(ENV_FILE)  # a launcher that failed early never read (and unlinked) it
    if release:
        jobdir.remove("command")
        jobdir.release_start()


def through_user_manager(job_id: int, argv: list[str]) -> list[str]:
    """Start the supervisor in a scope of the user's systemd manager, so that it may place
    the job in the cgroup that manager delegated (see ``cgroup_v2._may_move_into``).
    ``systemd-run --scope`` execs the launcher itself: its answer reaches us as usual."""
    from jobber._backends.local.systemd import runtime_dir

    return ["env", f"XDG_RUNTIME_DIR={runtime_dir()}", "systemd-run", "--user", "--scope", "--quiet", "--collect",
            f"--description=jobber: the supervisor of job {job_id}", "--", *argv]


def launch(job_id: int, argv: list[str], *, warm_dir: str | None = None) -> None:
    """Run the launcher and read its one-line answer: ``ok PID`` or ``error WHY``.

    ``warm_dir``: a plain function job's directory, which the warm launcher (``warm.py``)
    may start instead; without one to ask, the launcher of ``argv`` does.

    Raises:
        JobError: the launcher could not be run, did not answer, or refused.
    """
    begin_launch(job_id, argv, warm_dir=warm_dir)()


def begin_launch(job_id: int, argv: list[str], *, warm_dir: str | None = None) -> Callable[[], None]:
    """:func:`launch` in two halves: start the launcher now; the call returned reads its
    answer (raising as :func:`launch` does). An admission pass starts all it let through,
    then reads their answers: the launches overlap.

    Raises:
        JobError: the launcher could not be run.
    """
    if warm_dir is not None and warm.enabled():
        answer = warm.begin(warm_dir, argv[len(launcher_command(warm_dir)):])
        if answer is not None:
            def complete() -> None:
                try:
                    reply = answer()
                except JobError as err:
                    raise JobError(f"job {job_id}: {err}", job_id=job_id) from None
                if reply is None:  # it died before taking the job: start it cold
                    launch(job_id, argv)
                else:
                    _answer(job_id, reply.strip(), "", 0)

            return complete
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # a launcher that cannot even start says why here
            start_new_session=True,  # no SIGINT/SIGHUP from the caller's terminal
        )
    except OSError as err:
        raise JobError(f"job {job_id}: cannot start its supervisor {argv[0]}: {err.strerror or err}",
                       job_id=job_id) from err
    return lambda: _read_answer(job_id, proc)


def _read_answer(job_id: int, proc: subprocess.Popen) -> None:
    try:
        out, err = proc.communicate(timeout=REPLY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise JobError(f"job {job_id}: its supervisor did not answer within {REPLY_TIMEOUT_S:.0f} s",
                       job_id=job_id) from None
    _answer(job_id, out.decode(errors="replace").strip(), err.decode(errors="replace"), proc.returncode)


def _answer(job_id: int, reply: str, stderr: str, returncode: int) -> None:
    if not reply.startswith("ok "):
        said = stderr.strip().splitlines()
        detail = (reply.removeprefix("error ").strip() or (said[-1] if said else "")
                  or f"the supervisor exited with {returncode}")
        raise (AlreadyLaunched if "already launched" in reply else JobError)(
            f"job {job_id} did not start: {detail}", job_id=job_id)
