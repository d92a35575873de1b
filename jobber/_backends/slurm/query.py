"""What Slurm says about a job and its cluster, read and mapped to jobber's states.

Apart from submission (`jobber._backends.slurm.backend`) because reading another program's
output is a job of its own: ``scontrol show job`` while the controller remembers the job,
then the job completion log (``sacct -c``, JobCompType=jobcomp/filetxt, which needs no
slurmdbd), both with ``SLURM_TIME_FORMAT=%s`` (epoch seconds); ``scontrol show config`` for
what the cluster confines, and so which of a job's limits are enforced (`isolation_note`).
Every Slurm command, sbatch and scancel included, runs through `run_slurm` here, so that
its OSError and timeouts become JobError in one place.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from typing import Any

from jobber._errors import JobError
from jobber._jobs.status import JobStatus, when
from jobber._limits import Limits, format_size

__all__ = ["MIB", "SLURM_FINAL", "SLURM_PENDING", "ask_slurm", "cluster_config", "epoch", "from_record", "isolation_note",
           "job_name", "kill_wait", "mem_request", "outcome", "run_slurm", "slurm_message", "slurm_tool", "unenforced"]

MIB = 1 << 20

_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)")
_QUERY_ENV = {"SLURM_TIME_FORMAT": "%s"}  # times as epoch seconds, whatever the locale
_COMMAND_TIMEOUT_S = 60.0
_NOT_INSTALLED = (
    "Slurm is not installed or not reachable here (`{tool}` is not on PATH): install Slurm's "
    "client commands and its configuration on this host, or run the job on this host with "
    "backend=\"local\" (`--backend local`, or unset JOBBER_BACKEND)"
)

# Slurm's job states: those of a job still waiting, and each final one as jobber's state.
SLURM_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
            "SPECIAL_EXIT"}
SLURM_FINAL = {"COMPLETED": "exited", "FAILED": "failed", "OUT_OF_MEMORY": "oom-killed",
          "CANCELLED": "stopped", "TIMEOUT": "timed-out", "NODE_FAIL": "failed",
          "BOOT_FAIL": "failed", "DEADLINE": "failed", "PREEMPTED": "failed", "REVOKED": "failed"}
_WHY = {"NODE_FAIL": "a node it ran on failed", "BOOT_FAIL": "its node failed to boot",
        "DEADLINE": "it could not end before its --deadline", "PREEMPTED": "it was preempted",
        "REVOKED": "it was revoked by a sibling cluster"}


def ask_slurm(job: Any, slurm_id: str) -> dict[str, str]:
    """The job's fields from scontrol, else from the job completion log; {} if forgotten.

    A job is only taken as ours when its name is, so a Slurm whose ids restarted (its
    state was wiped) is not mistaken for the job's.
    """
    answer = run_slurm([slurm_tool("scontrol"), "show", "job", "--oneliner", slurm_id], env=_QUERY_ENV)
    task = "_" in slurm_id
    if answer.returncode == 0:
        info = _array_task(answer.stdout, slurm_id) if task else _fields(answer.stdout)
        if info.get("JobName") == job_name(job):
            return info
        if info or not task:
            return {}
    # A task cancelled while still in the array's pending remainder leaves no record at all:
    # scontrol prints "Job 223_2 not found" (on stdout), and the completion log has no line.
    elif "Invalid job id" not in answer.stderr and not (task and "not found" in answer.stdout + answer.stderr):
        raise JobError(f"job {job.id}: cannot ask Slurm about its job {slurm_id}: {slurm_message(answer.stderr)}",
                       job_id=job.id)
    columns = ("JobName", "State", "ExitCode", "Start", "End", "Timelimit", "NodeList") + (("JobID",) if task else ())
    answer = run_slurm([slurm_tool("sacct"), "-c", "-j", slurm_id, "-P", "-n", "-o", ",".join(columns)], env=_QUERY_ENV)
    matches = [dict(zip(columns, line.split("|"))) for line in answer.stdout.splitlines()]
    # The tasks of an array share its name: a task is only the line of its own id.
    matches = [m for m in matches if m.get("JobName") == job_name(job) and (not task or m.get("JobID") == slurm_id)]
    if answer.returncode != 0 or not matches:
        return {}
    last = matches[-1]
    return {"JobState": last["State"], "ExitCode": last["ExitCode"], "StartTime": last["Start"],
            "EndTime": last["End"], "TimeLimit": last["Timelimit"], "NodeList": last["NodeList"]}


def _fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(line):
        fields.setdefault(name, value)  # the first: Command= and WorkDir= paths come last
    return fields


def job_name(job: Any) -> str:
    """The ``--job-name`` jobber gave the job: an array's tasks share the array's."""
    return job.dir.read_spec().slurm_name or f"jobber-{job.id}"


def _array_task(text: str, slurm_id: str) -> dict[str, str]:
    """Task ``<array id>_<i>``'s fields from ``scontrol show job`` lines, {} if none is it.

    A task Slurm has not split out yet has no record of its own: it is in the array's
    pending remainder (``ArrayTaskId=2-5%2``, squeue's ``<id>_[2-5%2]``), so it is pending.
    """
    array_id, _, index = slurm_id.partition("_")
    records = [_fields(line) for line in text.splitlines() if line.strip()]
    records = [r for r in records if r.get("ArrayJobId") == array_id]
    for record in records:
        if record.get("ArrayTaskId") == index:
            return record
    for record in records:
        if int(index) in _task_ids(record.get("ArrayTaskId", "")):
            return {**record, "JobState": "PENDING"}
    return {}


def _task_ids(text: str) -> set[int]:
    """Slurm's task list, e.g. ``2-5%2``, ``1,3,7-9`` or ``0-10:2``, as the task indexes."""
    ids: set[int] = set()
    for part in text.split("%")[0].strip("[]").split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        if first.isdigit() and (not last or last.isdigit()) and (not step or step.isdigit()):
            ids.update(range(int(first), int(last or first) + 1, int(step or 1) or 1))
    return ids


def outcome(job: Any, slurm_id: str, slurm_state: str, info: dict[str, str]) -> dict[str, Any]:
    """How a job that Slurm reports in the final ``slurm_state`` ended.

    Args:
        job: the job (a stop it asked for makes the ending "stopped").
        slurm_id: Slurm's id of it, for the note.
        slurm_state: the final state, a key of ``SLURM_FINAL``.
        info: Slurm's fields of the job (``ExitCode``, ``TimeLimit``).

    Returns:
        ``state``, ``exit_code``, ``signal``, ``oom_killed`` and ``note`` of its status record.
    """
    state = SLURM_FINAL[slurm_state]
    code, sig = _exit_code(info.get("ExitCode", ""))
    # S is a signal number when it is one; OUT_OF_MEMORY reports 0:125, Slurm's own marker.
    signal = sig if 0 < sig < 65 else None
    exit_code = None if signal is not None else code
    note = f"Slurm job {slurm_id}: {slurm_state}"
    if state == "oom-killed":
        exit_code = code or None
        note = f"Slurm job {slurm_id} ran out of memory (Slurm's cgroup OOM killer)"
    elif state == "timed-out":
        note = f"time limit {_duration(info.get('TimeLimit', ''))} reached (Slurm job {slurm_id})"
    elif slurm_state in _WHY:
        note = f"Slurm job {slurm_id} ended {slurm_state}: {_WHY[slurm_state]}"
    elif state == "stopped":
        exit_code = None if code == 0 else code
    if (job.path / "stop-requested").exists():
        state = "stopped"  # as for local jobs: a stop asked for reads "stopped"
        note = f"stopped by jobber (Slurm job {slurm_id} ended {slurm_state})"
    return {"state": state, "exit_code": exit_code, "signal": signal,
            "oom_killed": slurm_state == "OUT_OF_MEMORY", "note": note}


def from_record(record: dict[str, Any], limits: Limits) -> JobStatus:
    """The status a Slurm job's record (``status.json``, or one built from Slurm's answer) says."""
    return JobStatus(
        state=record["state"], exit_code=record.get("exit_code"), signal=record.get("signal"),
        oom_killed=bool(record.get("oom_killed")), started_at=when(record.get("started_at")),
        ended_at=when(record.get("ended_at")), isolation="slurm",
        isolation_note=record.get("isolation_note", ""), note=record.get("note", ""),
        backend="slurm", limits=limits,
    )


def _exit_code(text: str) -> tuple[int, int]:
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else 0, int(sig) if sig.isdigit() else 0)


def epoch(text: str | None) -> float | None:
    """Slurm's time (epoch seconds, ``SLURM_TIME_FORMAT=%s``) as a float; None for none or 0."""
    return float(text) if text and text.isdigit() and int(text) > 0 else None


def _duration(text: str) -> str:
    """Slurm's [D-]HH:MM:SS (or minutes, in the job completion log) as "0:01:00"."""
    if text.isdigit():
        text = f"{int(text) // 1440}-{int(text) // 60 % 24:02}:{int(text) % 60:02}:00".removeprefix("0-")
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":") if p.isdigit()]
    if len(parts) != 3:
        return text or "?"
    hours, minutes, seconds = parts
    return f"{days}-{hours:02}:{minutes:02}:{seconds:02}" if days else f"{hours}:{minutes:02}:{seconds:02}"


_config: dict[str, str] = {}
_config_asked_at = -math.inf
# With slurmctld down, each Slurm command retries for 10 s or more: ask again only so often.
_CONFIG_RETRY_S = 60.0


def cluster_config(ask: bool = True) -> dict[str, str]:
    """The confinement settings of the cluster (``scontrol show config``), once a process.

    Args:
        ask: ask Slurm if this process has not yet; False returns only what is known.
    """
    global _config_asked_at
    if ask and not _config and time.monotonic() - _config_asked_at > _CONFIG_RETRY_S and shutil.which("scontrol"):
        _config_asked_at = time.monotonic()
        answer = run_slurm(["scontrol", "show", "config"])
        for line in answer.stdout.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in ("TaskPlugin", "ConstrainRAMSpace", "ConstrainCores", "KillWait"):
                _config[name.strip()] = value.strip()
    return _config


def kill_wait() -> float:
    """Seconds Slurm waits between SIGTERM and SIGKILL on scancel ("30 sec")."""
    words = cluster_config().get("KillWait", "").split()
    return float(words[0]) if words and words[0].isdigit() else 30.0


def slurm_tool(name: str) -> str:
    """The path of Slurm's command ``name`` (sbatch, scontrol, ...).

    Raises:
        JobError: it is not on PATH: Slurm is not installed here.
    """
    path = shutil.which(name)
    if path is None:
        raise JobError(_NOT_INSTALLED.format(tool=name))
    return path


def run_slurm(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; its OSError and timeouts become JobError here, and only here.

    Raises:
        JobError: the command cannot be run, or did not answer in time.
    """
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", check=False,
                              timeout=_COMMAND_TIMEOUT_S, env={**os.environ, **(env or {})})
    except FileNotFoundError as err:
        raise JobError(_NOT_INSTALLED.format(tool=os.path.basename(argv[0]))) from err
    except subprocess.TimeoutExpired as err:
        raise JobError(f"`{os.path.basename(argv[0])}` did not answer within {_COMMAND_TIMEOUT_S:.0f} s: "
                       "is Slurm's controller (slurmctld) up? See `sinfo`") from err
    except OSError as err:
        raise JobError(f"cannot run {argv[0]}: {err.strerror}") from err


def slurm_message(stderr: str) -> str:
    """Slurm's own words, without the "sbatch: error:" prefixes, on one line."""
    lines = [re.sub(r"^\w+: error: ", "", line.strip()) for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines) or "no message"


def mem_request(memory: int) -> str:
    """sbatch's ``--mem`` for ``memory`` bytes: whole MiB, rounded up (Slurm allocates no less)."""
    return f"--mem={-(-memory // MIB)}M"


def isolation_note(limits: Limits, ask: bool = True) -> str:
    """What Slurm enforces of ``limits`` on this cluster, and what nobody does.

    Args:
        limits: the job's limits.
        ask: read the cluster's configuration if this process has not yet (a job not
            submitted yet does not ask: with the controller down that takes seconds).
    """
    config = cluster_config(ask)
    cgroups = "task/cgroup" in config.get("TaskPlugin", "")
    confined, loose = [], []
    if limits.memory is not None:
        item = f"memory={format_size(limits.memory)} ({mem_request(limits.memory)})"
        (confined if cgroups and config.get("ConstrainRAMSpace") == "yes" else loose).append(item)
    if limits.cpu is not None:
        cpus = math.ceil(limits.cpu)
        rounded = "" if cpus == limits.cpu else f", rounded up from {limits.cpu:g}: Slurm allocates whole CPUs"
        item = f"{cpus} CPU{'s' if cpus > 1 else ''} (--cpus-per-task={cpus}{rounded})"
        (confined if cgroups and config.get("ConstrainCores") == "yes" else loose).append(item)
    parts = []
    if confined:
        parts.append("Slurm confines the job with its cgroups: " + ", ".join(confined))
    if loose and not config:
        unknown = "not known yet" if not ask else "unknown: `scontrol show config` did not answer"
        parts.append(f"requested from Slurm (whether this cluster confines them is {unknown}): " + ", ".join(loose))
    elif loose:
        setting = (f"TaskPlugin={config.get('TaskPlugin', '?')}, ConstrainRAMSpace={config.get('ConstrainRAMSpace', '?')}, "
                   f"ConstrainCores={config.get('ConstrainCores', '?')}")
        parts.append(f"requested from Slurm but not confined by this cluster ({setting}): " + ", ".join(loose))
    missing = unenforced(limits)
    if missing:
        parts.append(f"not enforced: {', '.join(missing)} (Slurm has no such limits)")
    return "; ".join(parts)


def unenforced(limits: Limits) -> list[str]:
    """The limits Slurm has no way to enforce (pids, I/O bandwidth), as "name=value"."""
    names = []
    if limits.pids is not None:
        names.append(f"pids={limits.pids}")
    if limits.io_read_bps is not None:
        names.append(f"io_read_bps={format_size(limits.io_read_bps)}/s")
    if limits.io_write_bps is not None:
        names.append(f"io_write_bps={format_size(limits.io_write_bps)}/s")
    return names
