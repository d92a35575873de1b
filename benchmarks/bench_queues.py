"""Queue benchmarks: submitting to a queue, admission latency, listing a long line.

    python benchmarks/bench_queues.py            # all three
    python benchmarks/bench_queues.py listing    # one

Each figure sits beside a baseline measured in the same run: the same jobs started
directly (no queue), and a listing of the same number of ended jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import statistics
import tempfile
import time

from _table import row, run_chosen
from jobber._jobs.store import JobStore


def fresh_store() -> JobStore:
    return JobStore(hashlib.sha256(os.urandom(8)).hexdigest())


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_submit(count: int = 1000, parallel: int = 8, direct: int = 200) -> None:
    """Submit ``count`` jobs to a queue of ``parallel``; then how soon each freed place is
    taken: the n-th start against the (n - parallel)-th end."""
    store = fresh_store()
    store.set_queue("bench", parallel=parallel)
    jobs = [store.new_job("true", queue="bench") for _ in range(count)]
    t0 = time.perf_counter()
    for job in jobs:
        job.start()
    submit = count / (time.perf_counter() - t0)
    statuses = [job.wait(600) for job in jobs]
    assert all(s.state == "exited" for s in statuses), {s.state for s in statuses}
    starts = sorted(s.started_at.timestamp() for s in statuses)
    ends = sorted(s.ended_at.timestamp() for s in statuses)
    gaps = [(starts[n] - ends[n - parallel]) * 1000 for n in range(parallel, count) if starts[n] > ends[n - parallel]]
    # The baseline: the same job started directly, how long start() takes.
    plain = fresh_store()
    direct_jobs = [plain.new_job("true") for _ in range(direct)]
    t0 = time.perf_counter()
    for job in direct_jobs:
        job.start()
    direct_rate = direct / (time.perf_counter() - t0)
    for job in direct_jobs:
        job.wait(60)
    row(f"submit {count} jobs to a queue of parallel {parallel}", f"{submit:.0f} jobs/s",
        f"start() directly {direct_rate:.0f} jobs/s", ">= 0.5x direct")
    row("a job's end to the next one's start (queue, no kernel needed)",
        f"p50 {statistics.median(gaps):.0f} ms, p99 {_quantile(gaps, 0.99):.0f} ms",
        f"start() directly {1000 / direct_rate:.0f} ms", "p50 <= 100 ms")


def bench_pending_listing(count: int = 10_000) -> None:
    """``get_jobs()`` and ``jobber ls`` (its work, in this process) over ``count`` waiting jobs.

    ``jobber ls`` shows the newest 200 (``--all`` for every one: about 0.1-0.2 ms a job).
    """
    from jobber import cli

    store = fresh_store()
    store.set_queue("line", parallel=1)
    blocker = store.new_job("sleep 3600", queue="line")
    blocker.start()
    for _ in range(count):
        store.new_job("true", queue="line").start()

    def listing() -> tuple[float, float]:
        t0 = time.perf_counter()
        jobs = store.get_jobs()
        got = (time.perf_counter() - t0) * 1000
        assert len(jobs) == count + 1
        args = cli.build_parser().parse_args(["ls"])
        with contextlib.redirect_stdout(io.StringIO()) as out:
            t0 = time.perf_counter()
            cli._ls_rows(store, args)
            listed = (time.perf_counter() - t0) * 1000
        assert out.getvalue().count("pending") == 200  # the newest 200, as `jobber ls` shows them
        return got, listed

    get_ms, ls_ms = min(listing() for _ in range(3))
    blocker.stop(grace=0)
    for job in store.get_jobs():
        if job.status().state == "pending":
            job.stop(grace=0)
    ended = store.get_jobs()
    args = cli.build_parser().parse_args(["ls"])
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        cli._ls_rows(store, args)
        base = (time.perf_counter() - t0) * 1000
    row(f"get_jobs() over {count} waiting jobs", f"{get_ms:.0f} ms", "-", "<= 200 ms")
    row(f"jobber ls over {count} waiting jobs (the newest 200 shown)", f"{ls_ms:.0f} ms",
        f"the same {len(ended)} jobs ended: {base:.0f} ms", "<= 200 ms")


def main() -> None:
    os.environ.setdefault("JOBBER_JOBS_DIR", tempfile.mkdtemp(prefix="jobber-bench-") + "/jobs")
    benches = {"submit": bench_submit, "listing": bench_pending_listing}
    run_chosen(benches)


if __name__ == "__main__":
    main()
