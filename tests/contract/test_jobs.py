"""A job through any session: made, listed, run, read, stopped and waited for alike.

Moved here from the hand-written pairs (tests/test_client.py for the remote session,
tests/test_jobs.py and tests/test_storage.py for the local store).
"""

from __future__ import annotations

import pytest

from jobber import Job, JobError, JobNotFound, JobStatus, Limits

from .conftest import log_of, ran


class TestSession:
    def test_a_new_identity_has_no_jobs(self, session):
        assert session.get_jobs() == []

    def test_new_job_is_created_not_started(self, session, expect):
        job = session.new_job("echo hi", Limits(memory="64M", cpu=0.5))
        assert isinstance(job, Job) and job.backend == expect.backend
        assert (job.command, job.limits) == ("echo hi", Limits(memory="64M", cpu=0.5))
        assert job.status().state == "created"
        assert session.get_jobs() == [job]
        assert session.get_job(job.id) == job

    def test_unknown_job_is_not_found(self, session):
        with pytest.raises(JobNotFound, match="no job 404") as caught:
            session.get_job(404)
        assert caught.value.job_id == 404
        assert isinstance(caught.value, LookupError)

    @pytest.mark.parametrize(("command", "limits", "error", "message"), [
        ("", None, JobError, "the command is empty: give the shell command"),
        ("  ", None, JobError, "the command is empty"),
        ("a\0b", None, JobError, "NUL"),
        ("true", {"memory": "1G"}, JobError, "jobber.Limits"),
    ])
    def test_bad_jobs_are_refused(self, session, command, limits, error, message):
        with pytest.raises(error, match=message):
            session.new_job(command, limits)
        assert session.get_jobs() == []

    def test_bad_env_is_refused_before_anything_is_made(self, session):
        with pytest.raises(JobError, match="not a variable name"):
            session.new_job("true", env={"1X": "v"})
        assert session.get_jobs() == []


class TestRun:
    def test_lifecycle(self, session, expect):
        job = session.new_job("echo out; echo err >&2; exit 4")
        job.start()
        status = job.wait(expect.wait_s)
        assert isinstance(status, JobStatus)
        assert (status.state, status.exit_code, status.backend) == ("failed", 4, expect.backend)
        assert status.isolation in expect.isolations
        assert status.started_at is not None and status.ended_at >= status.started_at
        buf = bytearray(100)
        assert bytes(buf[: job.tail(buf)]) == b"out\nerr\n"

    @pytest.mark.parametrize(("command", "described", "code"), [
        ("exit 0", "exited (code 0)", 0),
        ("echo oops >&2; exit 3", "failed (code 3)", 3),
    ])
    def test_exit_codes(self, session, expect, command, described, code):
        status = ran(session.new_job(command), expect.wait_s)
        assert (status.describe(), status.exit_code) == (described, code)

    def test_env_reaches_the_job(self, session, expect):
        job = session.new_job('echo "$SEED"', env={"SEED": "42"})
        job.start()
        assert job.wait(expect.wait_s).state == "exited"
        buf = bytearray(100)
        assert bytes(buf[: job.tail(buf)]) == b"42\n"

    def test_the_job_knows_its_id(self, session, expect):
        job = session.new_job('echo "$JOBBER_JOB_ID"')
        ran(job, expect.wait_s)
        assert log_of(job) == f"{job.id}\n".encode()

    def test_start_twice_raises(self, session):
        job = session.new_job("true")
        job.start()
        with pytest.raises(JobError, match="already started") as caught:
            job.start()
        assert caught.value.job_id == job.id

    def test_limits_reach_the_job(self, session, expect):
        job = session.new_job("true", Limits(memory="64M", pids=50))
        job.start()
        assert job.wait(expect.wait_s).limits == Limits(memory="64M", pids=50)

    def test_another_session_of_the_identity_sees_the_job(self, session, expect, reopen):
        job = session.new_job("echo shared", label="seen")
        status = ran(job, expect.wait_s)
        other = reopen()  # as another process (another kernel, the CLI) opens it
        again = other.get_job(job.id)
        assert again == job and other.find_job("seen") == job
        assert (again.command, again.label, again.status()) == ("echo shared", "seen", status)
        assert log_of(again) == b"shared\n"

    def test_status_is_the_same_from_a_fresh_lookup(self, session, expect):
        job = session.new_job("exit 2")
        status = ran(job, expect.wait_s)
        assert session.get_job(job.id).status() == status


class TestStopAndWait:
    def test_stop_returns_the_final_status(self, session, expect):
        job = session.new_job("sleep 60")
        job.start()
        assert job.stop(grace=1).state == "stopped"
        assert job.status().state == "stopped"

    def test_stop_of_a_created_job_raises(self, session):
        with pytest.raises(JobError, match="never started"):
            session.new_job("true").stop()

    def test_stopping_an_ended_job_returns_its_final_status(self, session, expect):
        job = session.new_job("exit 3")
        status = ran(job, expect.wait_s)
        assert job.stop() == status

    def test_wait_with_a_timeout_returns_the_current_status(self, session):
        assert session.new_job("true").wait(timeout=0.2).state == "created"

    def test_wait_with_a_timeout_on_a_running_job_returns_before_its_end(self, session, expect):
        job = session.new_job("sleep 60")
        job.start()
        status = job.wait(timeout=0.3)
        assert status.state in ("pending", "running") and not status.ended
        assert job.stop(grace=0).state == "stopped"


class TestTail:
    def test_tail_has_readinto_semantics(self, session, expect):
        job = session.new_job("printf 0123456789")
        job.start()
        job.wait(expect.wait_s)
        buf = bytearray(4)
        assert (job.tail(buf, 3), bytes(buf)) == (4, b"3456")
        assert (job.tail(buf, -2), bytes(buf[:2])) == (2, b"89")
        assert job.tail(buf, 50) == 0
        assert job.tail(memoryview(bytearray(0))) == 0
        with pytest.raises(JobError, match="read-only"):
            job.tail(memoryview(b"abcd"))
        with pytest.raises(JobError, match="offset must be an int"):
            job.tail(buf, 1.5)

    def test_bytes_pass_through_untouched(self, session, expect):
        job = session.new_job("printf '\\000\\377\\r\\n\\033[31mred'")
        ran(job, expect.wait_s)
        assert log_of(job) == b"\x00\xff\r\n\x1b[31mred"


class TestRemove:
    def test_a_running_job_is_not_removed(self, session, expect, gate):
        job = session.new_job(f"while [ ! -e {gate} ]; do sleep 0.05; done")
        job.start()
        with pytest.raises(JobError, match="stop it first"):
            job.remove()
        gate.touch()
        assert job.wait(expect.wait_s).state == "exited"
        job.remove()
        with pytest.raises(JobNotFound):
            session.get_job(job.id)

    def test_a_job_never_started_is_removed(self, session):
        job = session.new_job("true")
        job.remove()
        assert session.get_jobs() == []
