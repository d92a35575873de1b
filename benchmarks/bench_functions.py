"""Function jobs (``cert.executor()``) against what a user would pick instead, side by side.

    python benchmarks/bench_functions.py                # all three
    python benchmarks/bench_functions.py roundtrip      # one: roundtrip, map, transfer

Each figure sits beside its baseline measured in the same run, rounds taken in turn (A B A
B ...) so that a drift of this shared machine's speed falls on both:

- round trip of ``submit(add, 1, 2).result()``: a ``multiprocessing`` spawn-context
  ``Process`` + ``Queue``, and submitit's ``LocalExecutor``;
- 200 calls of ``time.sleep(0.1)`` through ``ex.map`` on a queue of parallel 8:
  ``concurrent.futures.ProcessPoolExecutor(8)`` (its start-up counted, as the job's are);
- a 100 MB numpy array returned: ``pickle`` to a local file and back (``bench_transfer``).

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
import shutil
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


def make_array(nbytes: int, send: bool, stamp: str | None = None) -> Any:
    """A ``nbytes`` array made in the job: returned, or only its size (the same work but the
    sending). With ``stamp``, the moment it returns (the result's writing starts) is written there."""
    import numpy

    array = numpy.full(nbytes, 7, dtype=numpy.uint8)
    if stamp is not None:
        with open(stamp, "w") as f:
            f.write(repr(time.time()))
    return array if send else array.nbytes


def bench_transfer(rounds: int = 5, nbytes: int = _ARRAY_BYTES, settle: float = 3.0) -> None:
    """A 100 MB result's MB/s against ``pickle.dump`` to a new local file and ``pickle.load`` back.

    Like with like: each round's pickle file is kept to the end, as a job's result is, and
    every timed phase starts ``settle`` seconds after the last, on both sides. This VM's
    memory is slow to fill afresh (its balloon hands free pages back to the host after ~2 s,
    and touching one again faults it in there: 100 MB written to a new file takes ~10x as
    long as into pages freed a moment before). A baseline that deleted its file just before
    writing the next, or a phase that reused the pages of the one before, would time that
    recycling rather than pickle. Two figures, each against the same baseline rounds:

    - the transfer: the job's write (from the function's return, stamped by the function, to
      the result's last file, by its mtime) plus the caller's ``job.result()`` of the ended
      job (read and unpickled), against ``pickle.dump`` plus ``pickle.load``;
    - end to end: what returning the array adds to ``ex.submit(...).result()`` over a job
      that makes it and returns only its size (p50 against p50): the transfer plus whatever
      else the bytes cost a job (its exit, its end's bookkeeping), with two jobs' noise, and
      with no settling (each read may reuse the pages its job just freed).
    """
    import numpy

    from jobber._jobs.pycall import RESULT_META, pack_call

    array = numpy.full(nbytes, 7, dtype=numpy.uint8)
    scratch = tempfile.mkdtemp(prefix="jobber-bench-pickle-")
    store = _store()
    times: dict[str, list[float]] = {name: [] for name in ("dump", "load", "write", "read", "sent", "kept")}

    def dump(path: str) -> None:
        with open(path, "wb") as f:
            pickle.dump(array, f, protocol=pickle.HIGHEST_PROTOCOL)

    def load(path: str) -> None:
        with open(path, "rb") as f:
            assert pickle.load(f).nbytes == nbytes

    def by_pickle(n: int) -> None:
        path = os.path.join(scratch, f"array-{n}.pkl")
        time.sleep(settle)
        times["dump"].append(_ms(lambda: dump(path)))
        time.sleep(settle)
        times["load"].append(_ms(lambda: load(path)))

    def by_job(n: int) -> None:
        stamp = os.path.join(scratch, f"returned-{n}")
        time.sleep(settle)
        job = store.new_function_job(pack_call(make_array, (nbytes, True, stamp)))
        job.start()
        job.wait()
        # result.json is written last, after result.pkl's rename; its mtime comes from the
        # kernel's coarse clock, which lags by at most a tick (a few ms): the write, if
        # anything, is timed a little short.
        written = os.stat(job.path / RESULT_META).st_mtime_ns / 1e6
        with open(stamp) as f:
            times["write"].append(written - float(f.read()) * 1000)
        time.sleep(settle)
        times["read"].append(_ms(lambda: job.result().nbytes == nbytes or sys.exit("!")))

    with store.executor() as ex:
        ex.submit(make_array, 1, False).result()
        for n in range(rounds):
            by_job(n)
            by_pickle(n)
            times["sent"].append(_ms(lambda: ex.submit(make_array, nbytes, True).result().nbytes == nbytes or sys.exit("!")))
            times["kept"].append(_ms(lambda: ex.submit(make_array, nbytes, False).result() == nbytes or sys.exit("!")))
    for job in store.get_jobs():
        job.remove()
    shutil.rmtree(scratch)
    p50 = {name: statistics.median(values) for name, values in times.items()}
    mbs = {name: nbytes / 1e6 / (ms / 1000) for name, ms in (("pickle", p50["dump"] + p50["load"]),
                                                               ("ours", p50["write"] + p50["read"]),
                                                               ("end", max(p50["sent"] - p50["kept"], 1e-3)))}
    theirs = f"pickle.dump {p50['dump']:.0f} ms + load {p50['load']:.0f} ms: {mbs['pickle']:.0f} MB/s"
    row("a 100 MB numpy array returned by a function job: written in the job + job.result() (p50s)",
        f"write {p50['write']:.0f} ms + read {p50['read']:.0f} ms: {mbs['ours']:.0f} MB/s "
        f"({_verdict(mbs['ours'] / mbs['pickle'], 0.5, False)})", theirs, ">= 0.5x")
    row("the same, end to end: submit().result() returning it, less one returning its size (p50s)",
        f"+{p50['sent'] - p50['kept']:.0f} ms: {mbs['end']:.0f} MB/s ({_verdict(mbs['end'] / mbs['pickle'], 0.5, False)})",
        theirs, ">= 0.5x")


def main() -> None:
    os.environ.setdefault("JOBBER_JOBS_DIR", tempfile.mkdtemp(prefix="jobber-bench-") + "/jobs")
    benches = {"roundtrip": bench_roundtrip, "map": bench_map, "transfer": bench_transfer}
    run_chosen(benches)


if __name__ == "__main__":
    main()
