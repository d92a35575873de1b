"""Being told when a job ends: the ``notify`` option, ``end_message``, ``job.on_end`` (local
and remote) and ``jobber wait ID --notify-cmd CMD``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from jobber import JobError, JobStatus, Limits
from jobber._job_flags import JobFlags
from jobber._jobs.ending import end_message
from jobber._jobs.spec import JobSpec
from jobber.cli import build_parser

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class TestNotifyOption:
    def test_kept_in_the_spec_and_by_a_rerun(self, identity):
        job = identity.new_job("true", notify=True)
        assert job.notify is True and JobSpec.from_json(JobSpec("x", notify=True).to_json()).notify is True
        assert identity.new_job("true").notify is False
        assert job.rerun().notify is True and job.rerun(notify=False).notify is False

    def test_left_out_of_spec_json_at_its_default(self):
        assert "notify" not in JobSpec("x").to_json() and JobSpec("x", notify=True).to_json()["notify"] is True

    @pytest.mark.parametrize("value", ["yes", 1, [True]])
    def test_only_a_bool(self, identity, value):
        with pytest.raises(JobError, match="notify must be True or False"):
            identity.new_job("true", notify=value)

    def test_the_flag(self):
        parser = build_parser()
        _, given = JobFlags.new_job_arguments(parser.parse_args(["run", "--notify", "--", "true"]))
        assert given["notify"] is True
        _, given = JobFlags.new_job_arguments(parser.parse_args(["run", "--", "true"]))
        assert "notify" not in given  # a re-run without --notify keeps the job's own
        assert JobFlags.lifecycle_options(parser.parse_args(["rerun", "3", "--notify"])) == {"notify": True}

    def test_over_a_jobber_server(self, session):
        job = session.new_job("exit 4", notify=True)
        assert job.notify is True and session.get_job(job.id).notify is True
        assert session.new_job("true").notify is False


class TestEndMessage:
    def status(self, state: str, **fields) -> JobStatus:
        return JobStatus(state=state, started_at=START, ended_at=START + timedelta(minutes=41, seconds=3), **fields)

    def test_an_exit_with_its_label_and_duration(self):
        assert end_message(12, "train", self.status("exited", exit_code=0)) == "job 12 `train` exited (code 0) after 41 min 03 s"

    def test_a_failure_without_label(self):
        assert end_message(3, None, self.status("failed", exit_code=2)) == "job 3 failed (code 2) after 41 min 03 s"

    def test_an_oom_kill_names_the_limit(self):
        status = self.status("oom-killed", oom_killed=True, signal=9, limits=Limits(memory="2G"))
        assert end_message(7, "big", status) == "job 7 `big` killed: out of memory at 2 GiB after 41 min 03 s"

    def test_a_job_that_never_ran(self):
        assert end_message(5, None, JobStatus(state="stopped")) == "job 5 stopped"


def _ended_once(job) -> list[JobStatus]:
    calls: list[JobStatus] = []
    called = threading.Event()

    def record(status: JobStatus) -> None:
        calls.append(status)
        called.set()

    thread = job.on_end(record)
    assert called.wait(60) and not thread.join(60) and not thread.is_alive()
    return calls


class TestOnEnd:
    def test_called_once_with_the_final_status(self, identity):
        job = identity.new_job("sleep 0.3; exit 3")
        job.start()
        [status] = _ended_once(job)
        assert (status.state, status.exit_code) == ("failed", 3)

    def test_an_ended_job_is_told_at_once(self, identity):
        job = identity.new_job("true")
        job.start()
        job.wait()
        assert [s.state for s in _ended_once(job)] == ["exited"]

    def test_a_removed_job_is_not_told(self, identity):
        job = identity.new_job("true")  # never started, then removed: no end to tell
        calls = []
        job.remove()
        thread = job.on_end(calls.append)
        thread.join(30)
        assert not thread.is_alive() and calls == []

    def test_over_a_jobber_server(self, session):
        job = session.new_job("sleep 0.3; exit 5")
        job.start()
        [status] = _ended_once(job)
        assert (status.state, status.exit_code) == ("failed", 5)


class TestWaitNotifyCmd:
    def wait(self, demo, jobs_dir, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "JOBBER_ROOT": str(demo["root"]), "JOBBER_CERT": str(demo["client"]),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        return subprocess.run([sys.executable, "-m", "jobber", "wait", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    def test_runs_the_command_with_the_jobs_end(self, identity, demo, jobs_dir, tmp_path):
        job = identity.new_job("sleep 0.3; exit 3", label="train")
        job.start()
        out = tmp_path / "told"
        done = self.wait(demo, jobs_dir, str(job.id), "--notify-cmd",
                         f'printf "%s|%s|%s" "$JOBBER_JOB_ID" "$JOBBER_JOB_STATE" "$JOBBER_JOB_MESSAGE" > {out}')
        assert done.returncode == 3, done.stderr
        job_id, state, message = out.read_text().split("|")
        assert (job_id, state) == (str(job.id), "failed")
        assert message == end_message(job.id, "train", job.status()) and message.startswith(f"job {job.id} `train` failed (code 3)")
        assert f"jobber: {message}" in done.stderr

    def test_a_label_stands_for_its_newest_job(self, identity, demo, jobs_dir):
        identity.new_job("true", label="prep").start()
        assert self.wait(demo, jobs_dir, "prep").returncode == 0

    def test_a_timeout_first_exits_124_and_runs_nothing(self, identity, demo, jobs_dir, tmp_path):
        job = identity.new_job("sleep 300")
        job.start()
        try:
            done = self.wait(demo, jobs_dir, str(job.id), "--timeout", "0.5s", "--notify-cmd", f"touch {tmp_path / 'told'}")
            assert done.returncode == 124 and "still running" in done.stderr and not (tmp_path / "told").exists()
        finally:
            job.stop()

    def test_jobber_status_says_it(self, identity, demo, jobs_dir):
        job = identity.new_job("true", notify=True)
        env = {**os.environ, "JOBBER_ROOT": str(demo["root"]), "JOBBER_CERT": str(demo["client"]),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        shown = subprocess.run([sys.executable, "-m", "jobber", "status", str(job.id)], env=env, capture_output=True,
                               text=True, timeout=60)
        assert "notify     its end is announced (--notify)" in shown.stdout

    def test_a_failing_command_is_not_silent(self, identity, demo, jobs_dir):
        job = identity.new_job("true")
        job.start()
        done = self.wait(demo, jobs_dir, str(job.id), "--notify-cmd", "exit 7")
        assert done.returncode == 7 and "--notify-cmd exited with code 7" in done.stderr

    def test_an_unknown_job(self, identity, demo, jobs_dir):
        done = self.wait(demo, jobs_dir, "999")
        assert done.returncode == 1 and "no job 999" in done.stderr and "Traceback" not in done.stderr
