"""A one-node Slurm that is a directory and a few processes: ``sbatch``, ``scontrol``,
``scancel``, ``sacct`` and ``squeue`` as jobber calls them, for hosts without a cluster.

    bin_dir = install(tmp_path)      # bin_dir/sbatch ... run this file; put bin_dir first on PATH
    shutdown(tmp_path)               # every job that has not ended is killed and recorded CANCELLED

Each ``sbatch`` starts a detached runner (this file, ``_run ID``) that waits for the job's
``--dependency``, runs the batch script with ``/bin/sh`` in a session of its own (stdout and
stderr to ``--output``, in ``--chdir``, with the submitter's environment and ``SLURM_JOB_ID``)
and records the job's state in ``<state>/<id>.json`` as Slurm reports it: PENDING, RUNNING,
then COMPLETED, FAILED or CANCELLED with ``ExitCode=code:signal``. An ``--array=0-N[%P]``
runs one task at a time per free slot, each task recorded as ``<id>_<i>``. ``scancel`` with
``--signal`` signals the job's processes; without, it cancels (SIGTERM, SIGKILL after
KillWait). Times are epoch seconds (jobber sets ``SLURM_TIME_FORMAT=%s``). What it does not
model: time limits, partitions, resources (every request is granted), MinJobAge.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KILL_WAIT_S = 1
TOOLS = ("sbatch", "scontrol", "scancel", "sacct", "squeue")
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def install(root: Path) -> Path:
    """Write the commands into ``root/bin`` (state in ``root/state``); return ``root/bin``."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(exist_ok=True)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {state} {tool} \"$@\"\n")
        path.chmod(0o755)
    return bin_dir


def shutdown(root: Path, timeout: float = 15.0) -> list[str]:
    """Cancel every job that has not ended and wait for its runner to record it; the ids
    of those still not final after ``timeout`` seconds."""
    state = root / "state"
    for record in _records(state):
        if record["JobState"] not in FINAL:
            _cancel(state, record["JobId"], signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [r["JobId"] for r in _records(state) if r["JobState"] not in FINAL]
        if not left:
            return []
        time.sleep(0.05)
    return left


def _records(state: Path) -> list[dict]:
    out = []
    for path in sorted(state.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            continue
    return out


def _read(state: Path, job_id: str) -> dict | None:
    try:
        return json.loads((state / f"{job_id}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write(state: Path, record: dict) -> None:
    path = state / f"{record['JobId']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _update(state: Path, job_id: str, **fields) -> dict:
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = {**(_read(state, job_id) or {}), **fields}
        _write(state, record)
        return record


def sbatch(state: Path, argv: list[str]) -> int:
    options = {}
    for arg in argv[:-1]:
        name, _, value = arg.removeprefix("--").partition("=")
        options[name] = value
    script = argv[-1]
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "next-id"
        job_id = int(counter.read_text()) if counter.exists() else 1000
        counter.write_text(str(job_id + 1))
    base = {"JobName": options.get("job-name", "sbatch"), "JobState": "PENDING", "Reason": "None", "ExitCode": "0:0",
            "StartTime": "Unknown", "EndTime": "Unknown", "TimeLimit": options.get("time", "UNLIMITED"),
            "NodeList": "(null)", "Dependency": options.get("dependency", "(null)")}
    if "array" in options:
        span, _, parallel = options["array"].partition("%")
        first, _, last = span.partition("-")
        tasks = list(range(int(first), int(last or first) + 1))
        for i in tasks:
            _write(state, {**base, "JobId": f"{job_id}_{i}", "ArrayJobId": str(job_id), "ArrayTaskId": str(i)})
    else:
        tasks, parallel = [], ""
        _write(state, {**base, "JobId": str(job_id)})
    plan = {"script": script, "output": options.get("output", f"slurm-{job_id}.out"),
            "chdir": options.get("chdir", os.getcwd()), "tasks": tasks, "parallel": int(parallel or 0) or len(tasks),
            "dependency": options.get("dependency", ""), "env": dict(os.environ)}
    (state / f"{job_id}.plan").write_text(json.dumps(plan))
    # Detached, with no pipe of sbatch's open: jobber reads sbatch's output to its end.
    subprocess.Popen([sys.executable, __file__, str(state), "_run", str(job_id)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    print(job_id)
    return 0


def _dependencies_met(state: Path, dependency: str) -> bool | None:
    """True once met, False while not yet, None when they never can be."""
    if not dependency:
        return True
    met = True
    for part in dependency.split(","):
        mode, _, ids = part.partition(":")
        for dep in ids.split(":"):
            record = _read(state, dep) or {"JobState": "COMPLETED"}
            if record["JobState"] not in FINAL:
                met = False
            elif mode == "afterok" and record["JobState"] != "COMPLETED":
                return None
    return met


def run(state: Path, job_id: str) -> None:
    """The runner: the job's (or the array's) whole life."""
    plan = json.loads((state / f"{job_id}.plan").read_text())
    ids = [f"{job_id}_{i}" for i in plan["tasks"]] or [job_id]
    while (met := _dependencies_met(state, plan["dependency"])) is not True:
        for one in ids:
            _update(state, one, Reason="Dependency" if met is False else "DependencyNeverSatisfied")
        if all((state / f"{one}.cancel").exists() for one in ids):
            break
        time.sleep(0.05)
    for one in ids:
        _update(state, one, Reason="None")
    running: dict[str, subprocess.Popen] = {}
    waiting = list(zip(ids, plan["tasks"] or [None]))
    while waiting or running:
        for one, task in list(waiting):
            if (state / f"{one}.cancel").exists():
                waiting.remove((one, task))
                _update(state, one, JobState="CANCELLED", ExitCode="0:15", EndTime=str(int(time.time())))
            elif len(running) < max(plan["parallel"], 1):
                waiting.remove((one, task))
                running[one] = _start(state, plan, job_id, one, task)
        for one, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[one]
            end = {"EndTime": str(int(time.time()))}
            if (state / f"{one}.cancel").exists():
                _update(state, one, JobState="CANCELLED", ExitCode=f"0:{-code if code < 0 else 15}", **end)
            elif code < 0:
                _update(state, one, JobState="FAILED", ExitCode=f"0:{-code}", **end)
            else:
                _update(state, one, JobState="COMPLETED" if code == 0 else "FAILED", ExitCode=f"{code}:0", **end)
        time.sleep(0.02)


def _start(state: Path, plan: dict, job_id: str, one: str, task: int | None) -> subprocess.Popen:
    output = plan["output"].replace("%a", str(task)).replace("%j", job_id)
    env = {**plan["env"], "SLURM_JOB_ID": one.replace("_", "") if task is None else str(int(job_id) + 1 + task)}
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(task))
    with open(output, "wb") as log:
        proc = subprocess.Popen(["/bin/sh", plan["script"]], cwd=plan["chdir"], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _update(state, one, JobState="RUNNING", StartTime=str(int(time.time())), NodeList="fake-node", Pgid=proc.pid)
    return proc


def _cancel(state: Path, job_id: str, sig: int = signal.SIGTERM) -> bool:
    """Cancel a job, an array task, or every task of an array; False if there is none."""
    ids = [r["JobId"] for r in _records(state) if r["JobId"] == job_id or r.get("ArrayJobId") == job_id]
    for one in ids:
        (state / f"{one}.cancel").touch()
        _signal(state, one, sig)
        if sig != signal.SIGKILL:
            pid = os.fork()
            if pid == 0:  # KillWait later, SIGKILL whatever is left (as slurmstepd does)
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # scancel's caller reads its output to the end
                    os.dup2(null, fd)
                time.sleep(KILL_WAIT_S)
                _signal(state, one, signal.SIGKILL)
                os._exit(0)
    return bool(ids)


def _signal(state: Path, one: str, sig: int) -> None:
    record = _read(state, one) or {}
    if record.get("JobState") == "RUNNING" and record.get("Pgid"):
        try:
            os.killpg(record["Pgid"], sig)
        except ProcessLookupError:
            pass


def scancel(state: Path, argv: list[str]) -> int:
    sig = None
    ids = []
    for arg in argv:
        if arg.startswith("--signal="):
            sig = getattr(signal, "SIG" + arg.split("=", 1)[1].removeprefix("SIG"))
        elif not arg.startswith("-"):
            ids.append(arg)
    for job_id in ids:
        if sig is not None:
            _signal(state, job_id, sig)
        elif not _cancel(state, job_id):
            print(f"scancel: error: Kill job error on job id {job_id}: Invalid job id specified", file=sys.stderr)
            return 1
    return 0


def scontrol(state: Path, argv: list[str]) -> int:
    if argv[:2] == ["show", "config"]:
        print(f"KillWait                = {KILL_WAIT_S} sec\nTaskPlugin              = task/none")
        return 0
    if argv[:2] == ["show", "nodes"]:  # one node, this host (it runs the jobs here)
        host = socket.gethostname().split(".")[0]
        print(f"NodeName={host} Arch=x86_64 NodeHostName={host} State=IDLE")
        return 0
    job_id = argv[-1]
    records = [r for r in _records(state) if r["JobId"] == job_id or r.get("ArrayJobId") == job_id]
    if not records:
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        return 1
    for record in records:
        print(" ".join(f"{k}={v}" for k, v in record.items() if k != "Pgid"))
    return 0


def main(argv: list[str]) -> int:
    state, tool, args = Path(argv[0]), argv[1], argv[2:]
    if tool == "_run":
        run(state, args[0])
        return 0
    if tool == "sbatch":
        return sbatch(state, args)
    if tool == "scancel":
        return scancel(state, args)
    if tool == "scontrol":
        return scontrol(state, args)
    return 0  # sacct and squeue: nothing forgotten, nothing more to say


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
