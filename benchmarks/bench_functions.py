"""Function jobs (``cert.executor()``) against what a user would pick instead, side by side.

    python benchmarks/bench_functions.py                # all three
    python benchmarks/bench_functions.py roundtrip      # one: roundtrip, map, transfer

Each figure sits beside its baseline measured in the same run, rounds taken in turn (A B A
B ...) so that a drift of this shared machine's speed falls on both:

- round trip of ``submit(add, 1, 2).result()``: a ``multiprocessing`` spawn-context
  ``Process`` + ``Queue``, and submitit's ``LocalExecutor``;
- 200 calls of ``time.sleep(0.1)`` through ``ex.map`` on a queue of parallel 8:
  ``concurrent.futures.ProcessPoolExecutor(8)`` (its start-up counted, as the job's are);
- a 100 MB numpy array returned: ``pickle`` to a local file and back.

A goal missed is printed as missed; the exit status says only whether the benchmark ran.
Module-level imports stay light: a spawned ``multiprocessing`` child imports this file
again, and should pay no more than it would for a user's script.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _table import row, run_chosen

_ARRAY_BYTES = 100 * 1000 * 1000


def add(a: int, b: int) -> int:
    return a + b


def _ms(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def _verdict(ratio: float, goal: float, at_most: bool = True) -> str:
    met = ratio <= goal if at_most else ratio >= goal
    return f"{ratio:.2f}x: {'met' if met else 'MISSED'}"


def _store() -> Any:
    from jobber._jobs.store import JobStore

    return JobStore(hashlib.sha256(os.urandom(8)).hexdigest())


def _spawned(queue: Any, a: int, b: int) -> None:
    queue.put(add(a, b))


def bench_roundtrip(rounds: int = 20, submitit_rounds: int = 5) -> None:
    """``submit(add, 1, 2).result()``, p50: jobber, a spawned process, submitit's LocalExecutor."""
    import submitit

    spawn = multiprocessing.get_context("spawn")

    def by_spawn() -> None:
        queue = spawn.Queue()
        proc = spawn.Process(target=_spawned, args=(queue, 1, 2))
        proc.start()
        assert queue.get(timeout=60) == 3
        proc.join()

    folder = tempfile.mkdtemp(prefix="jobber-bench-submitit-")
    local = submitit.LocalExecutor(folder=folder)
    local.update_parameters(timeout_min=5)
    ours, spawned, theirs = [], [], []
    with _store().executor() as ex:
        ex.submit(add, 1, 2).result()  # the launcher built, the modules in the page cache: for all three
        for n in range(rounds):
            ours.append(_ms(lambda: ex.submit(add, 1, 2).result() == 3 or sys.exit("add(1, 2) != 3")))
            spawned.append(_ms(by_spawn))
            if n < submitit_rounds:
                theirs.append(_ms(lambda: local.submit(add, 1, 2).result() == 3 or sys.exit("submitit: != 3")))
    o, s, t = statistics.median(ours), statistics.median(spawned), statistics.median(theirs)
    row("round trip submit(add, 1, 2).result() p50, vs multiprocessing spawn", f"{o:.0f} ms ({_verdict(o / s, 0.5)})",
        f"spawn Process + Queue {s:.0f} ms", "<= 0.5x")
    row("round trip submit(add, 1, 2).result() p50, vs submitit LocalExecutor", f"{o:.0f} ms ({_verdict(o / t, 0.1)})",
        f"submitit LocalExecutor {t:.0f} ms", "<= 0.1x")


def bench_map(count: int = 200, parallel: int = 8, seconds: float = 0.1) -> None:
    """``ex.map(time.sleep, ...)`` through a queue of ``parallel`` against a process pool of as many."""
    store = _store()
    store.set_queue("bench-map", parallel=parallel)
    items = [seconds] * count

    def ours() -> None:
        with store.executor(queue="bench-map") as ex:
            assert list(ex.map(time.sleep, items)) == [None] * count

    def pool() -> None:
        with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as ex:
            assert list(ex.map(time.sleep, items)) == [None] * count

    walls = [(_ms(ours), _ms(pool)) for _ in range(2)]
    o, p = min(w[0] for w in walls), min(w[1] for w in walls)
    row(f"{count} x time.sleep({seconds}) through ex.map, a queue of parallel {parallel} (best of 2)",
        f"{o / 1000:.2f} s ({_verdict(o / p, 1.5)})", f"ProcessPoolExecutor({parallel}) {p / 1000:.2f} s", "<= 1.5x")


def make_array(nbytes: int, send: bool) -> Any:
    """A ``nbytes`` array made in the job: returned, or only its size (the same work but the sending)."""
    import numpy

    array = numpy.full(nbytes, 7, dtype=numpy.uint8)
    return array if send else array.nbytes


def bench_transfer(rounds: int = 5, nbytes: int = _ARRAY_BYTES) -> None:
    """A 100 MB result's MB/s: the time it adds to a job that makes it and returns only its
    size, against ``pickle.dump`` to a local file and ``pickle.load`` back."""
    import numpy

    array = numpy.full(nbytes, 7, dtype=numpy.uint8)
    path = os.path.join(tempfile.mkdtemp(prefix="jobber-bench-pickle-"), "array.pkl")

    def by_pickle() -> None:
        with open(path, "wb") as f:
            pickle.dump(array, f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(path, "rb") as f:
            assert pickle.load(f).nbytes == nbytes
        os.unlink(path)

    sent, kept, pickled = [], [], []
    with _store().executor() as ex:
        ex.submit(make_array, 1, False).result()
        for _ in range(rounds):
            sent.append(_ms(lambda: ex.submit(make_array, nbytes, True).result().nbytes == nbytes or sys.exit("!")))
            kept.append(_ms(lambda: ex.submit(make_array, nbytes, False).result() == nbytes or sys.exit("!")))
            pickled.append(_ms(by_pickle))
    extra = max(statistics.median(sent) - statistics.median(kept), 1e-3)
    ours, theirs = nbytes / 1e6 / (extra / 1000), nbytes / 1e6 / (statistics.median(pickled) / 1000)
    row("a 100 MB numpy array returned by a function job", f"{ours:.0f} MB/s ({_verdict(ours / theirs, 0.5, False)})",
        f"pickle to a local file and back {theirs:.0f} MB/s", ">= 0.5x")


def main() -> None:
    os.environ.setdefault("JOBBER_JOBS_DIR", tempfile.mkdtemp(prefix="jobber-bench-") + "/jobs")
    benches = {"roundtrip": bench_roundtrip, "map": bench_map, "transfer": bench_transfer}
    run_chosen(benches)


if __name__ == "__main__":
    main()
