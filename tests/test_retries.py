"""Retries: attempts started again by the job's own supervisor, each with its own log.

Real jobs in real cgroups, with both supervisors (compiled launcher and Python). The
backoff is cut to 0.2 s (``JOBBER_RETRY_BACKOFF``) except where a test needs time to act
between two attempts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobber import JobError, JobStatus, Limits
from jobber._backends.local.isolation import choose
from jobber._backends.local.retrying import backoff, grown_memory
from jobber._jobs.job import spec_of
from jobber._jobs.options import check_lifecycle, check_lifecycle_option
from polling import wait_for

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")
MiB = 1 << 20
# Fails until the file exists, then succeeds: attempt 1 makes it.
SECOND_TIME_LUCKY = 'if [ -e "$M" ]; then echo second; else touch "$M"; echo first; exit 3; fi'


pytestmark = pytest.mark.usefixtures("launcher")  # both supervisors (conftest.py)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")


def processes_naming(path) -> list[str]:
    """Live processes whose command line names ``path`` (a job's supervisors and watchdogs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if os.fsencode(path) in cmdline and not zombie:
            found.append(pid)
    return found


def attempt_log(job, n: int) -> bytes:
    return (job.path / "attempts" / str(n) / "log").read_bytes()


class TestRetries:
    def test_a_failed_attempt_is_started_again_until_retries_run_out(self, store):
        job = store.new_job('echo "attempt $JOBBER_JOB_ID"; exit 3', retries=2)
        job.start()
        status = job.wait(60)
        assert (status.state, status.exit_code, status.attempt, status.retries) == ("failed", 3, 3, 2)
        attempts = job.attempts
        assert [a.attempt for a in attempts] == [1, 2, 3]
        assert all(a.state == "failed" and a.exit_code == 3 for a in attempts)
        assert [a.started_at for a in attempts] == sorted(a.started_at for a in attempts)
        for n in (1, 2):
            assert attempt_log(job, n) == f"attempt {job.id}\n".encode()
        assert job.path.joinpath("log").read_bytes() == f"attempt {job.id}\n".encode()
        assert job.attempt == 3

    def test_success_ends_the_retries(self, store, tmp_path):
        job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / "m")}, retries=5)
        job.start()
        status = job.wait(60)
        assert (status.state, status.attempt) == ("exited", 2)
        assert [a.state for a in job.attempts] == ["failed", "exited"]
        assert attempt_log(job, 1) == b"first\n"
        assert b"".join(job.follow(1)) == b"econd\n"  # a nonzero offset: in the current attempt's log

    def test_an_ending_not_in_retry_on_is_final(self, store):
        job = store.new_job("exit 3", retries=3, retry_on=("oom-killed",))
        job.start()
        status = job.wait(30)
        assert (status.state, status.attempt) == ("failed", 1)
        assert len(job.attempts) == 1
        assert not (job.path / "attempts").exists()

    def test_a_stopped_job_is_never_retried(self, store):
        job = store.new_job("sleep 300", retries=3)
        job.start()
        status = job.stop(grace=0)
        assert (status.state, status.attempt) == ("stopped", 1)
        assert job.wait(1).state == "stopped"
        assert not (job.path / "attempts").exists()

    def test_follow_reads_every_attempt_with_a_marker_between(self, store, tmp_path):
        job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / "m")}, retries=1)
        job.start()
        out = b"".join(job.follow())
        first, marker, second = out.partition(b"[jobber: attempt 1 of 2 failed; attempt 2 starts in ")
        assert first == b"first\n\n" and marker
        assert second.endswith(b"\nsecond\n")

    def test_a_follower_never_loses_an_attempt_that_ended_before_it_looked(self, store, tmp_path, monkeypatch):
        # The race of issue 18: the first attempt may end, and its log move to
        # attempts/1/, before follow() opens it. No backoff: the next attempt's log takes
        # the name at once. Cheap jobs, many runs: a lost attempt shows up. A run mostly
        # waits on its job's processes, so four go at once (as many runs, more interleavings).
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0")

        def start_and_follow(run: int) -> bytes:
            job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / f"m{run}")}, retries=1)
            job.start()
            return b"".join(job.follow())

        with ThreadPoolExecutor(4) as runs:
            for run, out in enumerate(runs.map(start_and_follow, range(100))):
                assert out.startswith(b"first\n\n[jobber: attempt 1 of 2 failed; attempt 2 starts in 0 s]\n"), (run, out)
                assert out.endswith(b"]\nsecond\n"), (run, out)

    def test_a_follower_that_starts_after_the_end_reads_every_attempt(self, store):
        job = store.new_job("echo run; exit 3", retries=2)
        job.start()
        assert job.wait(60).attempt == 3
        out = b"".join(job.follow())
        assert out.count(b"run\n") == 3, out
        assert b"[jobber: attempt 1 of 3 failed; attempt 2 starts in " in out
        assert b"[jobber: attempt 2 of 3 failed; attempt 3 starts in " in out
        assert b"".join(job.follow(-4)) == b"run\n"  # from the end: the current attempt only

    def test_retries_go_on_with_no_starter_alive(self, store, tmp_path):
        # The starter is a separate process that exits at once: every attempt after the
        # first is started by the job's own supervisor.
        job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / "m")}, retries=1)
        code = ("import sys; from jobber._jobs.store import JobStore; "
                f"JobStore({store.owner!r}).get_job({job.id}).start()")
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
        status = job.wait(60)
        assert (status.state, status.attempt) == ("exited", 2)


class TestBetweenAttempts:
    def test_stop_during_the_backoff_ends_the_job_without_another_attempt(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "30")
        job = store.new_job("exit 3", retries=2)
        job.start()
        pending = wait_for(lambda: (s := job.status()).state == "pending" and s, 30, "the backoff")
        assert pending.attempt == 2 and "attempt 2 starts in 30 s" in pending.note
        assert not pending.ended
        status = job.stop(grace=1)
        assert (status.state, status.attempt) == ("stopped", 2)
        assert "stopped before its next attempt started" in status.note
        assert [a.state for a in job.attempts] == ["failed", "stopped"]

    def test_a_killed_supervisor_between_attempts_ends_the_job_failed(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "30")
        job = store.new_job("exit 3", retries=2)
        job.start()
        wait_for(lambda: job.status().state == "pending", 30, "the backoff")
        pid = json.loads((job.path / "status.json").read_text())["supervisor_pid"]
        os.kill(pid, signal.SIGKILL)
        # Ended by the first attempt's watchdog with nobody looking: the file, not a status read.
        wait_for(lambda: json.loads((job.path / "status.json").read_text())["state"] == "failed", 30,
                 "the watchdog to end the job")
        status = job.status()
        assert status.state == "failed"
        assert "between two attempts" in status.note

    def test_the_watchdogs_of_every_attempt_leave_with_the_job(self, store, tmp_path):
        job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / "m")}, retries=1)
        job.start()
        assert job.wait(60).state == "exited"
        wait_for(lambda: not processes_naming(job.path), 10, "every supervisor and watchdog of the job to leave")

    def test_wait_does_not_return_between_attempts(self, store, tmp_path, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "1")
        job = store.new_job(SECOND_TIME_LUCKY, env={"M": str(tmp_path / "m")}, retries=1)
        job.start()
        assert job.wait(60).state == "exited"


@needs_cgroup
class TestOomGrowth:
    def test_memory_grows_after_each_oom_kill_until_the_job_fits(self, store):
        job = store.new_job("python3 -c 'x = bytearray(70 << 20); print(len(x))'", Limits(memory="40M"),
                            retries=3, retry_on=("oom-killed",), oom_growth=1.5)
        job.start()
        status = job.wait(90)
        assert status.state == "exited", status
        memories = [a.limits.memory for a in job.attempts]
        assert memories == [40 * MiB, 60 * MiB, 90 * MiB]
        assert [a.state for a in job.attempts] == ["oom-killed", "oom-killed", "exited"]
        assert job.path.joinpath("log").read_bytes() == f"{70 << 20}\n".encode()
        assert job.limits.memory == 40 * MiB  # what was asked for stays as it was

    def test_growth_stops_at_its_cap(self, store):
        job = store.new_job("python3 -c 'x = bytearray(200 << 20)'", Limits(memory="40M"),
                            retries=2, retry_on=("oom-killed",), oom_growth=(2, "64M"))
        job.start()
        status = job.wait(90)
        assert status.state == "oom-killed"
        assert [a.limits.memory for a in job.attempts] == [40 * MiB, 64 * MiB, 64 * MiB]

    def test_oom_growth_alone_retries_an_oom_kill(self, store):
        job = store.new_job("python3 -c 'x = bytearray(60 << 20); print(len(x))'", Limits(memory="40M"),
                            retries=2, oom_growth=2)
        assert spec_of(job).retry_on == ("failed", "oom-killed")
        job.start()
        status = job.wait(90)
        assert status.state == "exited", status
        assert [(a.state, a.limits.memory) for a in job.attempts] == [("oom-killed", 40 * MiB), ("exited", 80 * MiB)]
        assert status.attempt_text() == "2 of 3 attempts"
        assert ", not retried" not in status.describe()

    def test_an_oom_kill_retry_on_leaves_out_says_it_was_not_retried(self, store):
        job = store.new_job("python3 -c 'x = bytearray(60 << 20)'", Limits(memory="40M"), retries=2)
        job.start()
        status = job.wait(60)
        assert (status.state, status.attempt) == ("oom-killed", 1)
        assert status.describe() == "killed: out of memory at 40 MiB, not retried: retry_on failed"
        assert status.attempt_text() == ""
        assert not (job.path / "attempts").exists()

    def test_a_timed_out_attempt_is_retried_when_asked(self, store, tmp_path):
        job = store.new_job('if [ -e "$M" ]; then echo done; else touch "$M"; sleep 300; fi',
                            env={"M": str(tmp_path / "m")}, timeout=1, retries=1, retry_on=("timed-out",))
        job.start()
        status = job.wait(60)
        assert (status.state, status.attempt) == ("exited", 2)
        assert job.attempts[0].state == "timed-out"


class TestRules:
    def test_backoff_doubles_from_the_first_delay_up_to_five_minutes(self, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "1")
        assert [backoff(n) for n in (2, 3, 4)] == [1, 2, 4]
        assert backoff(30) == 300

    def test_growth_rounds_up_to_whole_mebibytes_and_honours_the_cap(self):
        assert grown_memory({"oom_growth": 1.5}, 100 * MiB + 1, True) == 151 * MiB
        assert grown_memory({"oom_growth": 1.5, "oom_growth_max": 120 * MiB}, 100 * MiB, True) == 120 * MiB
        assert grown_memory({"oom_growth": 1.5}, 100 * MiB, False) == 100 * MiB
        assert grown_memory({}, 100 * MiB, True) == 100 * MiB

    @pytest.mark.parametrize("bad", [1, 0.5, "x", "1", (2,), (2, "lots"), (2, "1M", 3), True])
    def test_oom_growth_is_a_factor_or_a_factor_and_cap(self, bad):
        with pytest.raises(JobError, match="oom_growth"):
            check_lifecycle(retries=1, oom_growth=bad)
        with pytest.raises(JobError, match="oom_growth"):
            check_lifecycle_option("oom_growth", bad)

    def test_oom_growth_with_a_cap_is_recorded(self):
        assert check_lifecycle(retries=1, oom_growth=(1.5, "8G")) == {
            "retries": 1, "retry_on": ["failed", "oom-killed"], "oom_growth": 1.5, "oom_growth_max": 8 << 30}

    def test_oom_growth_adds_oom_kills_to_a_retry_on_not_given(self):
        assert check_lifecycle(retries=2, oom_growth=2)["retry_on"] == ["failed", "oom-killed"]
        assert check_lifecycle(retries=2, retry_on=None, oom_growth=2)["retry_on"] == ["failed", "oom-killed"]
        assert check_lifecycle(retries=2, retry_on="oom-killed", oom_growth=2)["retry_on"] == ["oom-killed"]
        assert "retry_on" not in check_lifecycle(retries=2)  # the default, ("failed",), is not written

    def test_oom_growth_is_refused_where_it_could_never_apply(self, store):
        with pytest.raises(JobError, match=r"^oom_growth needs retries: .*add retries \(e.g. retries=2, --retries 2\), "
                                           r"or drop oom_growth$"):
            store.new_job("true", oom_growth=2)
        with pytest.raises(JobError, match=r"^oom_growth grows the memory of an attempt retried after an OOM kill, but "
                                           r"retry_on failed does not retry OOM kills: add oom-killed to retry_on "
                                           r"\(retry_on=\('failed', 'oom-killed'\), --retry-on failed,oom-killed\), "
                                           r"or drop oom_growth$"):
            store.new_job("true", retries=2, retry_on=("failed",), oom_growth=2)
        with pytest.raises(JobError, match="retry_on timed-out does not retry OOM kills"):
            store.new_job("true", retries=2, retry_on="timed-out", oom_growth=2)
        assert store.get_jobs() == []

    def test_a_rerun_given_oom_growth_retries_oom_kills(self, store):
        plain = store.new_job("true", retries=2)
        assert spec_of(store.rerun(plain, oom_growth=2)).retry_on == ("failed", "oom-killed")
        chosen = store.new_job("true", retries=2, retry_on=("timed-out",))
        with pytest.raises(JobError, match="retry_on timed-out does not retry OOM kills"):
            store.rerun(chosen, oom_growth=2)
        grown = store.new_job("true", retries=2, oom_growth=2)
        assert spec_of(store.rerun(grown)).retry_on == ("failed", "oom-killed")
        with pytest.raises(JobError, match="^oom_growth needs retries"):
            store.rerun(grown, retries=0, oom_growth=3)
        # An override that makes the growth it had moot drops it rather than refuse the re-run.
        assert (spec_of(store.rerun(grown, retries=0)).oom_growth, spec_of(store.rerun(grown, retry_on="failed")).oom_growth) \
            == (None, None)


class TestAttemptText:
    """The one rule of "attempt 2/3": never on a job that ended at its first attempt."""

    @pytest.mark.parametrize(("fields", "describe", "attempt"), [
        ({"state": "running"}, "running", "attempt 1/3"),
        ({"state": "pending", "attempt": 2}, "pending", "attempt 2/3"),
        ({"state": "oom-killed"}, "killed: out of memory at 150 MiB, not retried: retry_on failed", ""),
        ({"state": "timed-out", "retry_on": ("failed", "oom-killed")},
         "timed-out, not retried: retry_on failed,oom-killed", ""),
        ({"state": "failed", "exit_code": 3, "retry_on": ("oom-killed",), "attempt": 2},
         "failed (code 3), not retried: retry_on oom-killed", "2 of 3 attempts"),
        ({"state": "oom-killed", "retry_on": ("oom-killed",), "attempt": 3}, "killed: out of memory at 150 MiB",
         "3 of 3 attempts"),
        ({"state": "exited", "exit_code": 0}, "exited (code 0)", ""),
        ({"state": "stopped"}, "stopped", ""),
        ({"state": "oom-killed", "retries": 0}, "killed: out of memory at 150 MiB", ""),
    ])
    def test_describe_and_attempt_text(self, fields, describe, attempt):
        status = JobStatus(**{"retries": 2, "limits": Limits(memory="150M"), **fields})
        assert (status.describe(), status.attempt_text()) == (describe, attempt)

    def test_retry_on_comes_back_from_json(self):
        status = JobStatus(state="failed", retries=1, retry_on=("oom-killed",))
        again = JobStatus.from_dict(json.loads(json.dumps(status.to_dict())))
        assert again == status and again.describe() == "failed (code None), not retried: retry_on oom-killed"
