"""Python functions as jobs on this host: ``executor()``, ``new_function_job``, ``Job.result``.

Real jobs in real cgroups (skipped with the reason where this host confines nothing),
real interpreters, a real second process for ``result()`` after a restart. The payload
and the runner alone: tests/test_pycall.py; every session kind: tests/contract/test_functions.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from jobber import Executor, JobError, Limits
from jobber._backends.local.isolation import choose
from jobber._jobs.job import spec_of
from jobber._jobs.pycall import pack_call
from polling import wait_for

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")
MiB = 1 << 20
WAIT_S = 300.0  # a deadline, never a measure: under emulation (the cgroup v2 VM) a job takes seconds


def add(a, b):
    return a + b


def square(x):
    return x * x


def slow_square(x):
    import time

    time.sleep(0.3 * (3 - x))  # the first item ends last
    return x * x


def fail(message):
    raise ValueError(message)


def sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return "opened"


def env_var(name):
    return os.environ.get(name)


def hold_memory(mib):
    """Touch ``mib`` MiB and keep it while returning its size."""
    block = bytearray(mib * MiB)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block) // MiB


def cgroup_dirs(job) -> list[str]:
    record = json.loads((job.path / "confinement.json").read_bytes())
    return list(record.get("dirs", {}).values()) if record.get("isolation") != "none" else []


@pytest.fixture
def executor(store):
    with store.executor() as ex:
        yield ex


class TestSubmit:
    def test_the_result_and_the_job(self, executor, store):
        fut = executor.submit(add, 1, b=2)
        assert fut.result(WAIT_S) == 3
        job = fut.job
        assert job.label == "add" and job.status().state == "exited"
        assert spec_of(job).python == sys.executable and spec_of(job).result_max == 1 << 30
        assert "function_runner.py" in job.command and store.get_job(job.id) == job
        assert job.result_info()["type"] == "int"

    def test_prints_reach_the_log_live(self, executor, tmp_path):
        go = tmp_path / "go"

        def talk_then_wait(path):
            import os
            import time

            print("started", flush=False)  # -u: no flush needed
            while not os.path.exists(path):
                time.sleep(0.02)
            return "done"

        fut = executor.submit(talk_then_wait, str(go))
        wait_for(lambda: fut.job.log_path.exists() and b"started" in fut.job.log_path.read_bytes(), WAIT_S,
                 "the print while the job runs")
        assert not fut.done()
        go.touch()
        assert fut.result(WAIT_S) == "done"

    def test_map_gives_results_in_order(self, executor):
        assert list(executor.map(slow_square, range(3))) == [0, 1, 4]

    def test_as_completed_and_wait(self, executor, tmp_path):
        gate = tmp_path / "gate"
        held, free = executor.submit(wait_for_file, str(gate)), executor.submit(add, 1, 1)
        first = next(concurrent.futures.as_completed([held, free], timeout=WAIT_S))
        assert first is free and first.result() == 2 and not held.done()
        gate.touch()
        done, not_done = concurrent.futures.wait([held, free], timeout=WAIT_S)
        assert done == {held, free} and not not_done and held.result() == "opened"

    def test_an_exception_is_reraised_with_the_jobs_traceback(self, executor):
        fut = executor.submit(fail, "diverged")
        with pytest.raises(ValueError, match="diverged") as err:
            fut.result(WAIT_S)
        assert fut.job.status().state == "failed"
        text = err.value.__notes__[0] if sys.version_info >= (3, 11) else err.value.__cause__.traceback_text
        assert "in fail" in text and "ValueError: diverged" in text
        if sys.version_info >= (3, 11):
            assert text.startswith(f"Traceback in job {fut.job.id}:")
        assert b"ValueError: diverged" in fut.job.log_path.read_bytes()

    def test_an_unpicklable_argument_is_refused_before_any_job_is_made(self, executor, store):
        before = store.get_jobs()
        with pytest.raises(JobError, match=r"^argument 'b': a lock held by the kernel cannot be sent to a job"):
            executor.submit(add, 1, threading.Lock())
        assert store.get_jobs() == before

    def test_over_result_max_the_job_fails_saying_why(self, store):
        with store.executor(result_max="1K") as ex:
            fut = ex.submit(bytes, 4096)
            with pytest.raises(JobError, match="more than result_max"):
                fut.result(WAIT_S)
        assert fut.job.status().state == "failed"
        assert b"result_max" in fut.job.log_path.read_bytes()

    def test_options_pass_through(self, store):
        with store.executor(Limits(memory="200M"), label="sq", env={"FOO": "bar"}, timeout="1h") as ex:
            fut = ex.submit(env_var, "FOO")
            assert fut.result(WAIT_S) == "bar"
        job = fut.job
        assert (job.label, job.limits.memory, spec_of(job).timeout) == ("sq", 200 * MiB, 3600.0)

    def test_after_shutdown_nothing_is_submitted(self, store):
        ex = store.executor()
        ex.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(add, 1, 2)


class TestResult:
    def test_from_another_process_as_often_as_asked(self, store, executor):
        fut = executor.submit(add, "a", "b")
        assert fut.result(WAIT_S) == "ab"
        code = textwrap.dedent(f"""
            from jobber._jobs.store import JobStore
            job = JobStore({store.owner!r}, {str(store.root)!r}).get_job({fut.job.id})
            print(job.result(), job.result())
        """)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S)
        assert done.stdout == "ab ab\n", done.stderr
        assert store.get_job(fut.job.id).result() == "ab"

    def test_a_command_job_has_none(self, store):
        job = store.new_job("true")
        with pytest.raises(JobError, match=f"job {job.id} is a command job: it has no result"):
            job.result()

    def test_a_timeout_raises_timeout_error(self, executor):
        fut = executor.submit(sleep_then, 300, 1)
        with pytest.raises(TimeoutError, match="still"):
            fut.job.result(timeout=0.2)
        assert fut.cancel()

    def test_a_removed_job_has_none(self, executor, store):
        from jobber import JobNotFound

        fut = executor.submit(add, 1, 1)
        fut.result(WAIT_S)
        fut.job.remove()
        with pytest.raises(JobNotFound):
            store.get_job(fut.job.id).result()

    def test_a_rerun_runs_the_same_call(self, executor):
        fut = executor.submit(add, 20, 22)
        assert fut.result(WAIT_S) == 42
        again = fut.job.rerun()
        assert again.command != fut.job.command and str(again.path) in again.command
        again.start()
        assert again.result(WAIT_S) == 42

    def test_a_job_never_started_has_none_and_result_does_not_wait_for_ever(self, store):
        job = store.new_function_job(pack_call(add, (1, 2)))
        with pytest.raises(JobError, match=f"job {job.id} was never started"):
            job.result()

    def test_a_malformed_executor_is_refused_when_made(self, store):
        with pytest.raises(JobError, match="jobber.Limits"):
            store.executor({"memory": "1G"})
        with pytest.raises(JobError, match="result_max"):
            store.executor(result_max="lots")

    def test_new_function_job_refuses_what_is_not_a_call(self, store):
        with pytest.raises(JobError, match="must be the pickled call"):
            store.new_function_job("print(1)")

    def test_a_python_of_another_version_is_refused_before_the_job_is_made(self, store, tmp_path):
        fake = tmp_path / "python3.9"
        fake.write_text("#!/bin/sh\necho 3.9\necho yes\n")
        fake.chmod(0o755)
        with pytest.raises(JobError, match=r"is Python 3\.9, but this kernel is Python 3\.\d+"):
            store.new_function_job(pack_call(add, (1, 2)), python=str(fake))
        assert store.get_jobs() == []


@needs_cgroup
class TestConfined:
    def test_cancel_stops_a_running_job_and_removes_its_cgroup(self, executor):
        fut = executor.submit(sleep_then, 300, 1)
        wait_for(lambda: fut.job.status().state == "running", WAIT_S, "the job to run")
        dirs = cgroup_dirs(fut.job)
        assert dirs and all(os.path.exists(d) for d in dirs)
        assert fut.running()
        assert fut.cancel()
        assert fut.cancelled() and fut.job.status().state == "stopped"
        assert not any(os.path.exists(d) for d in dirs)
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result()

    def test_a_cancel_wakes_as_completed(self, executor):
        futures = [executor.submit(sleep_then, 300, 1), executor.submit(sleep_then, 300, 2)]
        wait_for(lambda: all(f.job.status().state == "running" for f in futures), WAIT_S, "both to run")
        threading.Timer(0.1, futures[1].cancel).start()
        first = next(concurrent.futures.as_completed(futures, timeout=WAIT_S))
        assert first is futures[1] and first.cancelled()
        futures[0].cancel()

    def test_an_oom_killed_function_returns_on_the_attempt_that_fits(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")
        with store.executor(Limits(memory="150M"), retries=2, oom_growth=3) as ex:
            fut = ex.submit(hold_memory, 300)
            assert fut.result(WAIT_S) == 300
        attempts = fut.job.attempts
        assert [a.state for a in attempts] == ["oom-killed", "exited"]
        assert fut.job.status().attempt == 2

    def test_an_oom_kill_without_retries_says_so(self, store):
        with store.executor(Limits(memory="100M")) as ex:
            fut = ex.submit(hold_memory, 400)
            with pytest.raises(JobError, match="OOM-killed"):
                fut.result(WAIT_S)

    def test_a_timed_out_function_says_so(self, store):
        with store.executor(timeout=1) as ex:
            fut = ex.submit(sleep_then, 300, 1)
            with pytest.raises(JobError, match=f"job {fut.job.id} timed out"):
                fut.result(WAIT_S)
        assert fut.job.status().state == "timed-out"

    def test_map_through_a_queue(self, store):
        store.set_queue("fn", parallel=2)
        with store.executor(queue="fn") as ex:
            assert list(ex.map(square, range(6), timeout=2 * WAIT_S)) == [0, 1, 4, 9, 16, 25]

    def test_map_timeout_stops_the_jobs_left(self, executor, store, tmp_path):
        results = executor.map(wait_for_file, [str(tmp_path / "never"), str(tmp_path / "nor-this")], timeout=1)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        assert [job.status().state for job in store.get_jobs()] == ["stopped", "stopped"]

    def test_map_stops_what_it_made_when_an_item_cannot_be_sent(self, executor, store):
        with pytest.raises(JobError, match="argument 'value': a lock held by the kernel"):
            executor.map(sleep_then, [300, 300], [1, threading.Lock()])
        assert [job.status().state for job in store.get_jobs()] == ["stopped"]

    def test_shutdown_cancel_futures_stops_the_jobs_waiting(self, store):
        store.set_queue("one", parallel=1)
        ex = store.executor(queue="one")
        running = ex.submit(sleep_then, 1, "ran")
        waiting = ex.submit(sleep_then, 300, "never")
        wait_for(lambda: running.job.status().state == "running", WAIT_S, "the first to run")
        ex.shutdown(wait=True, cancel_futures=True)
        assert running.result() == "ran"
        assert waiting.cancelled() and waiting.job.status().state == "stopped"


def test_the_executor_is_exported():
    assert issubclass(Executor, concurrent.futures.Executor)


def watcher_threads() -> list[threading.Thread]:
    from jobber._jobs.executor import WATCHER_NAME

    return [t for t in threading.enumerate() if t.name == WATCHER_NAME]


@pytest.fixture
def idle_watcher():
    """The process's watcher with no thread running (each test below starts it afresh)."""
    from jobber._jobs import executor as module

    wait_for(lambda: not watcher_threads(), 60, "the watcher thread to end (nothing left to watch)")
    module._shared.error = None
    return module._shared


DELIVERY_S = 60.0  # a deadline: a watcher that works delivers within a few polls of 2 s at most


class TestWatcher:
    """One watcher thread per process, for every executor; it survives what inotify refuses,
    and a thread that died is started again."""

    def test_many_executors_share_one_thread(self, store, tmp_path, idle_watcher):
        go = tmp_path / "go"
        executors = [store.executor() for _ in range(8)]
        try:
            futures = [ex.submit(wait_for_file, str(go)) for ex in executors]
            wait_for(lambda: all(f.job.status().state == "running" for f in futures), WAIT_S, "the jobs to run")
            assert len(watcher_threads()) == 1
        finally:
            go.touch()  # (a failure here leaves no job running)
        assert [f.result(WAIT_S) for f in futures] == ["opened"] * 8

    def test_without_inotify_the_futures_complete_by_polling(self, store, monkeypatch, idle_watcher):
        import errno

        from jobber._jobs import executor as module

        def refused():
            raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

        monkeypatch.setattr(module, "Inotify", refused)
        futures = [store.executor().submit(add, n, 1) for n in range(3)]
        assert [f.result(DELIVERY_S) for f in futures] == [1, 2, 3]
        assert idle_watcher.error is None

    def test_a_watcher_that_died_is_started_again_by_the_next_submit(self, store, monkeypatch, idle_watcher):
        from jobber._jobs import executor as module

        def broken():
            raise RuntimeError("a bug in the watcher")

        monkeypatch.setattr(module, "Inotify", broken)
        ex = store.executor()
        first = ex.submit(add, 1, 1)
        wait_for(lambda: not watcher_threads(), 60, "the watcher to die")
        assert isinstance(idle_watcher.error, RuntimeError) and not first.done()
        monkeypatch.undo()
        second = ex.submit(add, 2, 2)
        assert (first.result(DELIVERY_S), second.result(DELIVERY_S)) == (2, 4)  # the first one too


class TestLargeExceptions:
    def test_an_exception_over_result_max_comes_back_as_remote_error_with_a_cut_traceback(self, store):
        from jobber import RemoteError

        with store.executor(result_max="1M") as ex:
            fut = ex.submit(fail, b"x" * 5_000_000)
            with pytest.raises(RemoteError) as err:
                fut.result(WAIT_S)
        assert err.value.type_name == "ValueError" and "more than result_max" in str(err.value)
        assert "characters cut" in err.value.traceback_text and len(err.value.traceback_text) < 70_000
        assert not (fut.job.path / "result.pkl").exists()
        assert (fut.job.path / "result.json").stat().st_size < 100_000
        assert fut.job.status().state == "failed"
