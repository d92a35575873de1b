"""Slurm backend overhead: jobber vs raw sbatch, same cluster, same run. `python benchmarks/bench_slurm.py`

Needs a reachable Slurm (`.ci/slurm_up.sh`). The same command is submitted with
``sbatch --wrap`` and with jobber (``new_job`` + ``start``, what ``%%jobber_run --backend
slurm`` does), and the time from the submission to the state RUNNING is measured with the
same ``squeue`` poll (every 10 ms) for both. Each job is cancelled, and the node idle again,
before the next is submitted: every job finds the node free.

Slurm (22.05) starts batch jobs from slurmctld's once-a-second loop, not at submission, so
submit-to-RUNNING is "wait for the next pass" (0 to 1 s) plus the launch. Two submissions
compare fairly only at the same phase of that loop: the two of a pair are submitted a whole
number of seconds apart (the loop's period), at a random phase per pair, in alternating
order.

Goal: jobber's submit-to-running time <= 1.2x raw sbatch's.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _table import pct
from jobber._jobs.store import JobStore

COMMAND = "sleep 60"
POLL_S = 0.01
PAIR_SPACING_S = 4.0  # whole seconds: the second job of a pair meets the loop at the same phase


def state(slurm_id: str) -> str:
    answer = subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True, check=False)
    return answer.stdout.strip()


def until_running(slurm_id: str, t0: float, timeout: float = 60.0) -> float:
    """Milliseconds from ``t0`` until squeue says RUNNING."""
    deadline = time.monotonic() + timeout
    while state(slurm_id) != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit(f"Slurm job {slurm_id} did not run within {timeout:.0f} s (is the node busy?)")
        time.sleep(POLL_S)
    return (time.perf_counter() - t0) * 1000


def cancel_and_forget(slurm_id: str) -> None:
    subprocess.run(["scancel", slurm_id], check=True)
    deadline = time.monotonic() + 60
    while state(slurm_id) not in ("", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.05)


def until_idle(timeout: float = 60.0) -> None:
    """Wait until the node has finished cleaning up after the last job."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False).stdout.split() != ["idle"]:
        if time.monotonic() > deadline:
            raise SystemExit("the node did not become idle within 60 s: are other jobs running?")
        time.sleep(0.05)


def raw_round(out_dir: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    answer = subprocess.run(["sbatch", "--parsable", f"--output={out_dir}/raw-%j.log", "--wrap", COMMAND],
                            capture_output=True, text=True, check=True)
    submitted = (time.perf_counter() - t0) * 1000
    slurm_id = answer.stdout.strip().split(";")[0]
    running = until_running(slurm_id, t0)
    cancel_and_forget(slurm_id)
    return submitted, running


def jobber_round(store: JobStore) -> tuple[float, float]:
    t0 = time.perf_counter()
    job = store.new_job(COMMAND, backend="slurm")
    job.start()
    submitted = (time.perf_counter() - t0) * 1000
    slurm_id = (job.path / "slurm-id").read_text().strip()
    running = until_running(slurm_id, t0)
    job.stop(grace=0)
    return submitted, running


def status_cost(store: JobStore, rounds: int = 50) -> tuple[float, float]:
    """Median ms of status() on a running job, and of the one scontrol call it makes."""
    job = store.new_job(COMMAND, backend="slurm")
    job.start()
    slurm_id = (job.path / "slurm-id").read_text().strip()
    until_running(slurm_id, time.perf_counter())
    ours, raw = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        job.status()
        ours.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        subprocess.run(["scontrol", "show", "job", "--oneliner", slurm_id], capture_output=True, check=True)
        raw.append((time.perf_counter() - t0) * 1000)
    job.stop(grace=0)
    return statistics.median(ours), statistics.median(raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16, help="pairs of submissions")
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        print("Slurm is not reachable here: `sbatch` not found (run .ci/slurm_up.sh)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="jobber-bench-slurm-")
    os.environ["JOBBER_JOBS_DIR"] = f"{work}/jobs"
    store = JobStore(hashlib.sha256(os.urandom(8)).hexdigest())
    raw: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    jobber_round(store)  # warm up: imports, the cluster configuration read once a process
    for i in range(args.rounds):
        until_idle()
        base = time.monotonic() + random.random()  # this pair's phase against Slurm's loop
        first, second = (lambda: raw_round(work), lambda: jobber_round(store))
        if i % 2:
            first, second = second, first
        results = []
        for slot, submit in enumerate((first, second)):
            until_idle()
            start = base + slot * PAIR_SPACING_S
            start += max(0, math.ceil(time.monotonic() - start))  # late: the next whole second
            time.sleep(max(0.0, start - time.monotonic()))
            results.append(submit())
        raw.append(results[i % 2])
        ours.append(results[1 - i % 2])
        print(f"  pair {i + 1}/{args.rounds}: raw {raw[-1][1]:.0f} ms, jobber {ours[-1][1]:.0f} ms", file=sys.stderr)
    status_ms, scontrol_ms = status_cost(store)

    def cells(values: list[float]) -> str:
        return f"{statistics.median(values):9.1f} {pct(values, 0.9):9.1f} {statistics.mean(values):9.1f}"

    print(f"\nSlurm backend, {args.rounds} phase-matched pairs, squeue polled every {POLL_S * 1000:.0f} ms "
          "(times in ms)\n")
    print(f"{'measure':<44} {'p50':>9} {'p90':>9} {'mean':>9}")
    for name, index in (("submit (until sbatch returns)", 0), ("submit to RUNNING", 1)):
        print(f"{'raw sbatch --wrap, ' + name:<44} {cells([r[index] for r in raw])}")
        print(f"{'jobber, ' + name:<44} {cells([o[index] for o in ours])}")
    ratio = statistics.median([o[1] for o in ours]) / statistics.median([r[1] for r in raw])
    extra = statistics.median([o[0] for o in ours]) - statistics.median([r[0] for r in raw])
    paired = statistics.median([o[1] - r[1] for o, r in zip(ours, raw)])
    print(f"\nsubmit to RUNNING, jobber / raw (p50): {ratio:.2f}x (goal <= 1.2x) "
          f"{'OK' if ratio <= 1.2 else 'OVER GOAL'}")
    print(f"jobber - raw within a pair, submit to RUNNING (p50): {paired:+.1f} ms")
    print(f"jobber's own work per submission (p50): {extra:+.1f} ms (job dir, script, spec, slurm-id)")
    print(f"status() of a running job: {status_ms:.1f} ms (one scontrol call alone: {scontrol_ms:.1f} ms)")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
