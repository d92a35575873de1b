"""Faults around the supervisor, for real: a start that cannot be recorded, endings
recorded outside the finisher (which must wake the jobs waiting for them), a retry's
launcher on its way while the supervisor between attempts dies, and two reapers at once.
Both supervisors run every test. (A hand-over to a retry on a full disk: test_disk_full.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from jobber import JobError
from jobber._backends.local import backend as local_backend
from jobber._backends.local import launcher_build as _launcher
from jobber._backends.local.isolation import choose
from jobber._backends.local.supervisor import process_start_time
from polling import wait_for

pytestmark = pytest.mark.usefixtures("launcher")  # both supervisors (conftest.py)


def running_with(token: str) -> list[int]:
    """Live processes whose command line holds ``token``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline.split(b"\0") and state != b"Z":
            found.append(int(pid))
    return found


def raw_status(job) -> dict:
    return json.loads((job.path / "status.json").read_bytes())


class TestAStartThatCannotBeRecorded:
    def test_the_job_is_killed_its_cgroup_removed_and_the_failure_said(self, store):
        token = f"{900000 + os.getpid()}"  # `sleep TOKEN`: found in /proc by it
        job = store.new_job(f"setsid sleep {token} & exec sleep {token}")
        # The launcher cannot write the job's pid (a rename onto a directory fails, as a
        # full or read-only disk would): the job already runs by then.
        (job.path / "pid").mkdir()
        with pytest.raises(JobError, match=r"cannot record the job's start: .*pid: Is a directory"):
            job.start()
        status = job.status()
        assert status.state == "failed" and "cannot record the job's start" in status.note, status
        wait_for(lambda: not running_with(token), 30, "every process of the job to be killed")
        record = json.loads((job.path / "confinement.json").read_bytes())
        assert not any(map(os.path.isdir, (record.get("dirs") or {}).values())), "the job's cgroup was left"
        assert not list(job.path.glob(".*.tmp")), "a temporary file was left"


def wait_raw(job, states: tuple[str, ...], what: str) -> dict:
    """Poll the job's status.json (never its status(), which would run a pass itself)."""
    return wait_for(lambda: (raw := raw_status(job))["state"] in states and raw, 60, what)


class TestEndingsOutsideTheFinisherWakeTheWaiting:
    def test_a_killed_supervisor_s_dependents_start_with_nobody_looking(self, store, tmp_path):
        first = store.new_job("exec sleep 300")
        anyway = store.new_job(f"touch {tmp_path}/anyway", after=[(first.id, "any")])
        only_ok = store.new_job(f"touch {tmp_path}/only-ok", after=first)
        for job in (first, anyway, only_ok):
            job.start()
        os.kill(raw_status(first)["supervisor_pid"], signal.SIGKILL)  # the watchdog's reap.py ends it
        assert wait_raw(anyway, ("exited", "failed"), "the dependent to start, unread")["state"] == "exited"
        refused = wait_raw(only_ok, ("exited", "failed"), "the dependent to be refused, unread")
        assert refused["error"].startswith(f"its dependency job {first.id} did not succeed"), refused
        assert (tmp_path / "anyway").exists() and not (tmp_path / "only-ok").exists()

    def test_a_stop_during_the_backoff_wakes_the_dependents(self, store, tmp_path, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "30")
        first = store.new_job("exit 3", retries=1)
        after = store.new_job(f"touch {tmp_path}/after", after=[(first.id, "any")])
        first.start()
        after.start()
        wait_raw(first, ("pending",), "the backoff")
        assert first.stop(grace=0).state == "stopped"
        assert wait_raw(after, ("exited", "failed"), "the dependent to start, unread")["state"] == "exited"


def reapers_of(job) -> list[int]:
    """The watchdogs' reap.py processes for ``job``."""
    return [pid for pid in running_with(str(job.path)) if any(b"reap.py" in arg for arg in
                                                               Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))]


class TestTheWatchdogDuringARetry:
    def test_a_live_launcher_of_the_next_attempt_is_not_called_dead(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "300")
        job = store.new_job("exit 3", retries=1)
        job.start()
        pending = wait_for(lambda: (raw := raw_status(job))["state"] == "pending" and raw, 60, "the backoff")
        # run_next_attempt.py was starting the next attempt: its launcher took the gate and lives on.
        launcher = subprocess.Popen(["sleep", "300"])
        try:
            (job.path / "launched").write_text(f"{launcher.pid} {process_start_time(launcher.pid)}\n")
            os.kill(pending["supervisor_pid"], signal.SIGKILL)  # the supervisor between the attempts
            wait_for(lambda: reapers_of(job), 30, "the watchdog's reap.py to wait for the launcher")
            assert raw_status(job)["state"] == "pending"
            assert job.status().state == "pending"  # a status read leaves it to the launcher too
        finally:
            launcher.kill()
            launcher.wait()
        final = wait_raw(job, ("failed",), "the reap once the launcher died too")
        assert "died between two attempts" in final["error"], final


@pytest.mark.skipif(choose()[0].NAME == "none", reason="jobs are not isolated on this host: no cgroup to race over")
class TestTwoReapers:
    def test_the_second_finds_the_cgroup_gone_and_calls_it_cleaned_up(self, store):
        job = store.new_job("exec sleep 300")
        job.start()
        raw = raw_status(job)
        record = json.loads((job.path / "confinement.json").read_bytes())
        supervisor = raw["supervisor_pid"]
        watchdogs = [int(c) for c in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
                     if int(c) != raw["pid"]]
        for pid in [*watchdogs, supervisor]:  # nobody reaps it but the two readers below
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: process_start_time(supervisor) is None, 30, "the supervisor to be gone")
        # The first reaper killed the job and removed its cgroup, and has not written yet:
        local_backend._kill_leftovers(record, raw["pid"])
        status = job.status()  # the second
        assert status.state == "failed" and "its processes were killed and its cgroup removed" in status.note, status


class TestTheJobsStart:
    def test_the_job_holds_only_its_three_descriptors(self, store):
        job = store.new_job("/bin/ls /proc/$$/fd")  # the job's shell's own descriptors
        job.start()
        assert job.wait(60).state == "exited"
        assert b"".join(job.follow()) == b"0\n1\n2\n"  # no stray /dev/null, nothing of the supervisor's

    @pytest.mark.parametrize(("mode", "why"), [
        (0o644, r"others may read or write it \(mode 0644, not 0600\)"),
        (0o600, r"it is owned by uid 65534, not by uid 0 \(this launcher's\)"),
    ])
    def test_an_env_file_not_ours_alone_is_refused_saying_why_and_what_to_do(self, tmp_path, mode, why):
        if os.geteuid() != 0:
            pytest.skip("making a file of another uid needs root")
        env = tmp_path / "env"
        env.write_bytes(b"SECRET=1\0")
        env.chmod(mode)
        if mode == 0o600:
            os.chown(env, 65534, -1)
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        argv = [*_launcher.launcher_command(str(job_dir)), "--env-file", str(env), "--", "echo ran"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert re.search(f"^error .*refusing the environment file {env}: {why}; it must be a regular file of uid 0 "
                         r"with mode 0600 \(jobber writes it so: if something replaced it, start the job again\)$",
                         done.stdout.strip()), done.stdout + done.stderr
        assert env.exists() and not (job_dir / "pid").exists()  # refused: not read, nothing ran
