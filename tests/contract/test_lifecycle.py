"""The lifecycle options through any session: labels, time limits, retries and their
attempts, log caps. Slurm takes labels and maps ``timeout`` to ``--time``; retries,
``oom_growth`` and ``log_max`` it refuses by design, and those cases assert the refusal.

Moved here from tests/test_server_lifecycle.py (remote) and tests/test_retries.py (local).
"""

from __future__ import annotations

import os
import tempfile

import pytest

from jobber import JobError, JobNotFound

from .conftest import log_of, ran


class TestLabels:
    def test_listing_filters_by_label_and_a_label_finds_the_newest(self, session):
        first = session.new_job("echo 1", label="sweep")
        session.new_job("echo other", label="other")
        newest = session.new_job("echo 2", label="sweep")
        assert session.get_jobs(label="sweep") == [first, newest]
        assert session.find_job("sweep") == newest
        assert session.find_job(str(first.id)) == first
        assert session.find_job(first.id) == first
        assert session.get_jobs(label="nothing") == []
        assert (first.label, session.get_job(first.id).label) == ("sweep", "sweep")

    def test_an_unknown_label_is_not_found(self, session):
        with pytest.raises(JobNotFound, match="no job is labelled 'missing'"):
            session.find_job("missing")

    def test_a_bad_label_is_refused_before_anything_is_made(self, session):
        with pytest.raises(JobError, match="label"):
            session.new_job("true", label="two words")
        assert session.get_jobs() == []


class TestTimeout:
    def test_a_timeout_ends_the_job_timed_out(self, session, expect):
        if expect.slurm:
            pytest.skip("Slurm's time limit is whole minutes (--time): tests/test_slurm.py checks the mapping")
        job = session.new_job("sleep 30", timeout=1)
        job.start()
        status = job.wait(30)
        assert status.state == "timed-out", status
        assert status.describe() == "timed out after 1 s"

    def test_a_job_that_ends_in_time_is_untouched(self, session, expect):
        job = session.new_job("echo done", timeout="1h")
        status = ran(job, expect.wait_s)
        assert status.state == "exited"
        if not expect.slurm:  # a Slurm job's limit is Slurm's --time, not a status field
            assert status.timeout == 3600.0
        assert log_of(job) == b"done\n"


class TestRetries:
    def test_a_failed_attempt_is_started_again_until_retries_run_out(self, session, expect):
        if expect.slurm:
            with pytest.raises(JobError, match=expect.refused_on_slurm("retries")):
                session.new_job("exit 3", retries=2)
            assert session.get_jobs() == []
            return
        job = session.new_job("echo try; exit 3", retries=2)
        job.start()
        status = job.wait(60)
        assert (status.state, status.exit_code, status.attempt, job.attempt) == ("failed", 3, 3, 3)
        attempts = job.attempts
        assert [(a.attempt, a.state, a.exit_code, a.backend) for a in attempts] == [
            (1, "failed", 3, expect.backend), (2, "failed", 3, expect.backend), (3, "failed", 3, expect.backend)]
        assert [a.started_at for a in attempts] == sorted(a.started_at for a in attempts)
        assert attempts[-1] == status

    def test_an_ending_not_in_retry_on_is_final(self, session, expect):
        if expect.slurm:
            with pytest.raises(JobError, match=expect.refused_on_slurm("retries")):
                session.new_job("exit 3", retries=3, retry_on=("oom-killed",))
            return
        job = session.new_job("exit 3", retries=3, retry_on=("oom-killed",))
        status = ran(job)
        assert (status.state, status.attempt) == ("failed", 1)
        assert len(job.attempts) == 1

    def test_a_stopped_job_is_never_retried(self, session, expect):
        if expect.slurm:
            pytest.skip("Slurm jobs are never retried (retries= is refused: see the test above)")
        job = session.new_job("sleep 300", retries=3)
        job.start()
        status = job.stop(grace=0)
        assert (status.state, status.attempt) == ("stopped", 1)
        assert job.wait(1).state == "stopped"

    def test_a_job_without_retries_has_one_attempt(self, session, expect):
        job = session.new_job("exit 4")
        job.start()
        status = job.wait(expect.wait_s)
        attempts = job.attempts
        assert attempts == [status] and job.attempt == 1
        assert (attempts[0].attempt, attempts[0].exit_code, attempts[0].backend) == (1, 4, expect.backend)
        assert (status.attempt, status.retries) == (1, 0)

    def test_a_job_not_started_has_its_one_attempt_created(self, session):
        assert [status.state for status in session.new_job("true").attempts] == ["created"]

    def test_oom_growth_is_taken_where_retries_are(self, session, expect):
        if expect.slurm:
            with pytest.raises(JobError, match=expect.refused_on_slurm("oom_growth")):
                session.new_job("true", retries=0, oom_growth=2)
            return
        job = session.new_job("true", retries=1, retry_on="oom-killed", oom_growth=2)
        assert ran(job).state == "exited"


class TestFollowAcrossAttempts:
    def test_a_follower_reads_every_attempt(self, session, expect):
        # Each attempt's log is moved aside when the next one starts: the follower drains
        # it, says why, and goes on into the next. (Not under /tmp: a server's job has a
        # /tmp of its own.)
        shared = tempfile.mkdtemp(dir="/var/tmp", prefix="jobber-test-")
        os.chmod(shared, 0o777)  # a server's tenant uid runs the job and makes the flag
        flag = os.path.join(shared, "second")
        command = f'if [ -e {flag} ]; then echo second; else touch {flag}; echo first; sleep 0.3; exit 3; fi'
        try:
            if expect.slurm:
                with pytest.raises(JobError, match=expect.refused_on_slurm("retries")):
                    session.new_job(command, retries=1)
                return
            job = session.new_job(command, retries=1)
            job.start()
            out = b"".join(job.follow())
            assert out.startswith(b"first\n") and out.endswith(b"second\n"), out
            assert b"[jobber: attempt 1 of 2 failed; attempt 2 starts in " in out
            assert job.wait(30).state == "exited"
            # Once it ended: follow(0) is the first attempt's start, as when it ran (the
            # server's follower once began at the current attempt), and a negative offset
            # counts back from the current attempt's end.
            assert b"".join(job.follow(0)) == out
            assert b"".join(job.follow(-7)) == b"second\n"
        finally:
            for name in os.listdir(shared):
                os.unlink(os.path.join(shared, name))
            os.rmdir(shared)


class TestLogCap:
    def test_a_capped_log_keeps_its_head_and_newest_bytes(self, session, expect):
        command = "head -c 20000 /dev/zero | tr '\\0' a; head -c 20000 /dev/zero | tr '\\0' z; echo END"
        if expect.slurm:
            with pytest.raises(JobError, match=expect.refused_on_slurm("log_max")):
                session.new_job(command, log_max="8K")
            return
        job = session.new_job(command, log_max="8K")
        status = ran(job)
        log = log_of(job)
        assert log.startswith(b"aaaa") and log.endswith(b"zzzzEND\n"), log[:16] + log[-16:]
        assert status.log_dropped_bytes > 0
