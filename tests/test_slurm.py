"""The Slurm backend for real: jobs submitted to a Slurm cluster on this machine.

Bring the cluster up first (`.ci/slurm_up.sh`, about 10 s; `.ci/slurm_down.sh` after).
Without a reachable Slurm the cluster tests skip with the reason; the option checks, the
batch script and the state mapping are tested everywhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import polling
from jobber import JobError, Limits
from jobber._backends.slurm import backend as _slurm
from jobber._backends.slurm import query as _slurm_query
from jobber._jobs.store import JobStore
from slurm_cluster import UNREACHABLE

pytestmark = pytest.mark.timeout(240)


needs_slurm = [pytest.mark.slurm, pytest.mark.skipif(UNREACHABLE is not None, reason=UNREACHABLE or "")]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """At Slurm's pace: each status() is an scontrol call, so ask every 50 ms, for up to 30 s."""
    return polling.wait_for(predicate, timeout, what, every=0.05)


def node_cpus() -> int:
    return int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0])


def scontrol(slurm_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", slurm_id], capture_output=True, text=True, check=True).stdout


def slurm_id(job) -> str:
    return (job.path / "slurm-id").read_text().strip()


def process_start(pid: int) -> str | None:
    """The start time of a live process (a pid may be reused), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if stat[0] == "Z" else stat[19]


def slurm(store: JobStore, command: str, limits: Limits | None = None, **options):
    """A started Slurm job."""
    job = store.new_job(command, limits, backend="slurm", **options)
    job.start()
    return job


class TestOptions:
    """Options become single argv items; anything sbatch could misread is refused."""

    def test_options_pass_through_as_single_arguments(self):
        checked = _slurm.validate_options({"backend": "slurm", "partition": "debug", "time": "1:00:00",
                                           "account": "ml team", "gres": "gpu:1"})
        assert _slurm.sbatch_arguments(Limits(), checked) == [
            "--partition=debug", "--time=1:00:00", "--account=ml team", "--gres=gpu:1"]

    @pytest.mark.parametrize(("options", "message"), [
        ({"partition": "--uid=0"}, r"partition='--uid=0' starts with '-'"),
        ({"account": " -x"}, r"account=' -x' starts with '-'"),
        ({"account": "a\n#SBATCH --uid=0"}, r"contains a line break"),
        ({"gres": "gpu:1\r"}, r"contains a line break"),
        ({"time": "soon"}, r"time='soon' is not a Slurm time limit: write MINUTES"),
        ({"time": ""}, r"time is empty"),
        ({"partition": 3}, r"partition must be a string, not int"),
        ({"qos": "high"}, r"unknown Slurm job option\(s\) qos: jobber passes partition, time, account, gres"),
        ({"jobs_dir": "relative/dir"}, r"jobs_dir='relative/dir' must be an absolute path"),
    ])
    def test_bad_options_are_refused_before_anything_starts(self, store, options, message):
        with pytest.raises(JobError, match=message):
            job = store.new_job("true", backend="slurm", **options)
            job.start()
        # Refused by new_job, or by start() before it claims the job: nothing started.
        assert all(job.status().state == "created" for job in store.get_jobs())

    @pytest.mark.parametrize("value", ["90", "1:30", "1:00:00", "2-12", "2-12:30", "2-12:30:00", "UNLIMITED", 30])
    def test_slurm_time_forms_are_accepted(self, value):
        assert _slurm.validate_options({"time": value}) == {"time": str(value)}

    @pytest.mark.parametrize(("limits", "requests"), [
        (Limits(cpu=0.5), ["--cpus-per-task=1"]),
        (Limits(cpu=2), ["--cpus-per-task=2"]),
        (Limits(cpu=2.1), ["--cpus-per-task=3"]),
        (Limits(memory="50M"), ["--mem=50M"]),
        (Limits(memory=(50 << 20) + 1), ["--mem=51M"]),
        (Limits(memory="1.5G", pids=10, io_write_bps="1M"), ["--mem=1536M"]),
    ])
    def test_limits_become_requests_rounded_up(self, limits, requests):
        assert _slurm.sbatch_arguments(limits, {}) == requests

    def test_limits_slurm_cannot_enforce_are_refused_when_isolation_is_required(self, store):
        job = store.new_job("true", Limits(pids=10, io_read_bps="1M", require_isolation=True), backend="slurm")
        with pytest.raises(JobError, match=r"Slurm cannot enforce pids=10, io_read_bps=1 MiB/s and isolation is required"):
            job.start()
        assert job.status().state == "created"

    def test_another_user_is_refused(self, store):
        job = store.new_job("true", backend="slurm")
        with pytest.raises(JobError, match=r"a Slurm job runs as the user who submits it.*'nobody'"):
            job.start(user="nobody")


class TestBatchScript:
    """The script runs the command exactly as local jobs do: ``/bin/sh -c COMMAND``."""

    COMMAND = "#SBATCH --partition=nope\necho \"$0\" 'it''s' \"$#\"\nx='a\nb'; echo \"$x\"\necho \\$HOME"

    def test_the_script_is_sh_c_of_the_command(self, store, tmp_path):
        job = store.new_job(self.COMMAND, backend="slurm")
        script = tmp_path / "script"
        script.write_text(_slurm.batch_script(job))
        ran = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, check=True)
        direct = subprocess.run(["/bin/sh", "-c", self.COMMAND], capture_output=True, text=True, check=True)
        assert ran.stdout == direct.stdout == "/bin/sh its 0\na\nb\n$HOME\n"

    def test_no_line_of_the_command_is_an_sbatch_directive(self, store):
        lines = _slurm.batch_script(store.new_job(self.COMMAND, backend="slurm")).splitlines()
        first_command = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        assert lines[first_command].startswith("exec /bin/sh -c '#SBATCH")


class TestWithoutSlurm:
    def test_missing_sbatch_says_how_to_run_locally(self, store, tmp_path, monkeypatch):
        monkeypatch.setenv("PATH", str(tmp_path))
        job = store.new_job("true", backend="slurm")
        with pytest.raises(JobError, match=r"Slurm is not installed or not reachable here \(`sbatch` is not on PATH\)"
                                           r".*backend=\"local\" \(`--backend local`, or unset JOBBER_BACKEND\)"):
            job.start()
        assert job.status().state == "created" and not (job.path / "started").exists()

    @pytest.mark.parametrize(("option", "why"), [
        ({"retries": 2}, "Slurm re-queues a job only when its node fails"),
        ({"oom_growth": 1.5}, "Slurm jobs are not retried"),
        ({"log_max": "200M"}, "jobber cannot cap it"),
    ])
    def test_lifecycle_options_slurm_cannot_honour_are_refused_when_made(self, store, option, why):
        with pytest.raises(JobError, match=f"{next(iter(option))} is not available for Slurm jobs: .*{why}"):
            store.new_job("true", backend="slurm", **option)
        assert store.get_jobs() == []
        store.new_job("true", backend="slurm", label="ok", timeout="2h")  # these it maps

    def test_jobber_backend_chooses_slurm(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_BACKEND", "slurm")
        job = store.new_job("true")
        assert job.backend == "slurm" and job.status().backend == "slurm"


class TestStateMapping:
    """How Slurm's final states read, from ``scontrol show job`` lines this cluster printed."""

    @pytest.mark.parametrize(("slurm_state", "exit_code", "expected"), [
        ("COMPLETED", "0:0", ("exited", 0, None, False, "exited (code 0)")),
        ("FAILED", "3:0", ("failed", 3, None, False, "failed (code 3)")),
        ("FAILED", "0:9", ("failed", None, 9, False, "failed (signal SIGKILL)")),
        ("OUT_OF_MEMORY", "0:125", ("oom-killed", None, None, True, "killed: out of memory")),
        ("CANCELLED", "0:15", ("stopped", None, 15, False, "stopped")),
        ("TIMEOUT", "0:0", ("timed-out", 0, None, False, "timed-out")),
        ("NODE_FAIL", "0:0", ("failed", 0, None, False, "failed (code 0)")),
    ])
    def test_final_states(self, store, slurm_state, exit_code, expected):
        job = store.new_job("true", backend="slurm")
        info = _slurm_query._fields(f"JobId=7 JobName=jobber-1 JobState={slurm_state} Reason=None "
                              f"ExitCode={exit_code} TimeLimit=00:01:00 Command=/a b/c=d")
        outcome = _slurm_query.outcome(job, "7", slurm_state, info)
        record = {**outcome, "started_at": 1.0, "ended_at": 2.0}
        status = _slurm_query.from_record(record, Limits())
        assert (status.state, status.exit_code, status.signal, status.oom_killed, status.describe()) == expected

    def test_a_time_out_says_which_limit(self, store):
        job = store.new_job("true", backend="slurm")
        # scontrol's forms, then the job completion log's (minutes)
        for limit, shown in (("00:01:00", "0:01:00"), ("1-02:00:00", "1-02:00:00"), ("1", "0:01:00"), ("1500", "1-01:00:00")):
            info = _slurm_query._fields(f"JobState=TIMEOUT ExitCode=0:0 TimeLimit={limit}")
            assert _slurm_query.outcome(job, "7", "TIMEOUT", info)["note"] == f"time limit {shown} reached (Slurm job 7)"


class TestRun:
    pytestmark = needs_slurm

    def test_env_and_cwd_reach_the_slurm_job(self, store, tmp_path):
        job = store.new_job('echo "$SEED $PWD"', env={"SEED": "7"}, cwd=tmp_path, backend="slurm")
        job.start()
        assert job.wait(120).state == "exited"
        buf = bytearray(4096)
        assert bytes(buf[: job.tail(buf)]) == f"7 {tmp_path}\n".encode()

    def test_output_is_followed_live_while_the_job_runs(self, store):
        job = slurm(store, "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.4; done")
        assert job.status().state in ("pending", "running")
        chunks, while_running = [], 0
        for chunk in job.follow():
            chunks.append(chunk)
            while_running += job.status().state == "running"
        assert b"".join(chunks) == b"".join(b"tick %d\n" % i for i in range(1, 7))
        assert while_running >= 3, f"chunks must arrive while the job runs: {while_running} of {len(chunks)}"
        status = job.status()
        assert (status.state, status.exit_code, status.backend, status.isolation) == ("exited", 0, "slurm", "slurm")
        assert status.started_at <= status.ended_at and status.started_at.tzinfo is not None

    @pytest.mark.parametrize(("command", "described", "code"), [
        ("exit 0", "exited (code 0)", 0),
        ("echo oops >&2; exit 3", "failed (code 3)", 3),
        ("kill -KILL $$", "failed (signal SIGKILL)", None),
    ])
    def test_exit_codes(self, store, command, described, code):
        status = slurm(store, command).wait(60)
        assert (status.describe(), status.exit_code) == (described, code)

    def test_stderr_joins_the_log(self, store):
        job = slurm(store, "echo out; echo err >&2")
        job.wait(60)
        assert job.log_path.read_bytes() == b"out\nerr\n"

    def test_the_job_runs_in_the_callers_directory_with_its_ids(self, store, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        job = slurm(store, 'echo "$PWD $JOBBER_JOB_ID $JOBBER_JOB_TAG $SLURM_JOB_ID"')
        job.wait(60)
        assert job.log_path.read_text() == f"{tmp_path} {job.id} {store.owner}/{job.id} {slurm_id(job)}\n"

    def test_starting_twice_is_an_error(self, store):
        job = slurm(store, "true")
        with pytest.raises(JobError, match=f"job {job.id} was already started"):
            job.start()

    def test_the_final_state_is_kept_and_slurm_is_not_asked_again(self, store, tmp_path, monkeypatch):
        job = slurm(store, "exit 4")
        ended = job.wait(60)
        record = json.loads((job.path / "status.json").read_bytes())
        assert record["state"] == "failed" and record["exit_code"] == 4 and record["oom_killed"] is False
        assert isinstance(record["started_at"], float) and isinstance(record["ended_at"], float)
        monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm command can run now
        assert job.status() == ended

    def test_a_job_slurm_forgot_is_read_from_the_job_completion_log(self, store, tmp_path, monkeypatch):
        job = slurm(store, "exit 5")
        expected = job.wait(60)
        (job.path / "status.json").unlink()
        # scontrol answers as it does once MinJobAge has passed; sacct -c is the real one.
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "scontrol").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
        (fake / "scontrol").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
        assert job.status() == expected
        assert json.loads((job.path / "status.json").read_bytes())["slurm_state"] == "FAILED"

    def test_a_job_unknown_to_slurm_reads_failed_with_the_reason(self, store, tmp_path, monkeypatch):
        job = slurm(store, "true")
        job.wait(60)
        (job.path / "status.json").unlink()
        (job.path / "slurm-id").write_text("999999\n")  # Slurm never ran such a job of ours
        status = job.status()
        assert (status.state, status.ended) == ("failed", True)
        assert status.note.startswith("Slurm no longer knows its job 999999")

    def test_a_shared_jobs_directory_holds_script_and_log(self, store, tmp_path, monkeypatch):
        shared = tmp_path / "shared"
        monkeypatch.setenv("JOBBER_SLURM_JOBS_DIR", str(shared))
        job = slurm(store, "echo on the shared filesystem")
        assert b"".join(job.follow()) == b"on the shared filesystem\n"
        files = shared / store.owner / str(job.id)
        assert (files / "script").is_file() and job.log_path.resolve() == files / "log"
        buf = bytearray(64)
        assert buf[: job.tail(buf, -11)] == b"filesystem\n"


class TestLimits:
    pytestmark = needs_slurm

    def test_cpu_and_memory_are_requested_from_slurm(self, store):
        job = slurm(store, "sleep 30", Limits(cpu=1.5, memory="50M", pids=20))
        fields = scontrol(slurm_id(job))
        assert "NumCPUs=2 " in fields and re.search(r"MinMemory\w*=50M ", fields)
        note = job.status().isolation_note
        assert "memory=50 MiB (--mem=50M)" in note and "2 CPUs (--cpus-per-task=2, rounded up from 1.5" in note
        assert note.endswith("not enforced: pids=20 (Slurm has no such limits)")
        assert job.stop(grace=0).state == "stopped"

    def test_a_job_over_its_memory_is_oom_killed(self, store):
        job = slurm(store, 'python3 -c "b = bytearray(200 << 20); b[::4096] = b\\"x\\" * len(b[::4096]); print(\\"survived\\")"',
                    Limits(memory="50M"))
        status = job.wait(60)
        assert (status.state, status.oom_killed, status.describe()) == ("oom-killed", True, "killed: out of memory at 50 MiB")
        log = job.log_path.read_text()
        assert "survived" not in log and "oom-kill event" in log


class TestRefused:
    """Submissions Slurm refuses are JobErrors with Slurm's words; nothing stays started."""

    pytestmark = needs_slurm

    @pytest.mark.parametrize(("limits", "options", "message"), [
        ("cpus", {}, "More processors requested than permitted"),
        (Limits(memory="100T"), {}, "Memory specification can not be satisfied"),
        (Limits(), {"partition": "tiny", "time": "5:00"}, r"Requested time limit is invalid \(missing or exceeds some limit\)"),
        (Limits(), {"partition": "nowhere"}, "Invalid partition name specified"),
    ])
    def test_refused(self, store, limits, options, message):
        if limits == "cpus":
            limits = Limits(cpu=node_cpus() + 1)
        job = store.new_job("true", limits, backend="slurm", **options)
        with pytest.raises(JobError, match=f"job {job.id}: Slurm refused it: .*{message}"):
            job.start()
        assert job.status().state == "created"
        assert not (job.path / "started").exists() and not (job.path / "slurm-id").exists()


class TestQueue:
    pytestmark = needs_slurm

    def test_a_job_waiting_for_cpus_is_pending_then_runs(self, store):
        blocker = slurm(store, "echo blocking; sleep 300", Limits(cpu=node_cpus()))
        wait_for(lambda: blocker.status().state == "running", what="the blocker to run")
        queued = slurm(store, "echo my turn", Limits(cpu=1))
        status = wait_for(lambda: (s := queued.status()).note.endswith("(reason: Resources)") and s,
                          what="Slurm to give the reason")
        assert status.state == "pending" and status.started_at is None and not status.ended
        assert queued.tail(bytearray(16)) == 0
        blocker.stop(grace=0)
        assert queued.wait(60).describe() == "exited (code 0)"
        assert queued.log_path.read_bytes() == b"my turn\n"

    def test_a_pending_job_can_be_stopped(self, store):
        blocker = slurm(store, "sleep 300", Limits(cpu=node_cpus()))
        queued = slurm(store, "echo never", Limits(cpu=1))
        wait_for(lambda: queued.status().state == "pending" and blocker.status().state == "running", what="the queue")
        status = queued.stop(grace=5)
        assert (status.state, status.started_at is None or status.elapsed == 0) == ("stopped", True)
        assert not queued.log_path.exists()


class TestStop:
    pytestmark = needs_slurm

    def test_stop_ends_every_process_of_the_job(self, store):
        job = slurm(store, "setsid sleep 300 & echo $!; wait")
        pid = int(wait_for(lambda: job.log_path.exists() and job.log_path.read_text().strip(), what="the pid"))
        start_time = process_start(pid)
        status = job.stop(grace=5)
        assert (status.state, status.ended) == ("stopped", True) and "stopped by jobber" in status.note
        # Slurm tracks the job by its cgroup: the setsid escapee goes with it.
        wait_for(lambda: process_start(pid) != start_time, timeout=10, what="the escapee to die")

    def test_a_job_ignoring_sigterm_is_killed_after_grace(self, store):
        job = slurm(store, "trap '' TERM; echo ready; while :; do sleep 0.1; done")
        wait_for(lambda: job.log_path.exists() and b"ready" in job.log_path.read_bytes())
        started = time.monotonic()
        assert job.stop(grace=1).state == "stopped"
        # grace, then scancel: SIGTERM (ignored) and SIGKILL after KillWait (5 s in CI).
        assert time.monotonic() - started >= 1

    def test_stopping_an_ended_job_changes_nothing(self, store):
        job = slurm(store, "exit 2")
        ended = job.wait(60)
        assert job.stop() == ended and ended.describe() == "failed (code 2)"

    def test_stopping_a_job_never_started_is_an_error(self, store):
        job = store.new_job("true", backend="slurm")
        with pytest.raises(JobError, match=f"job {job.id} was never started: nothing to stop"):
            job.stop()

    def test_a_job_cancelled_with_scancel_reads_stopped(self, store):
        job = slurm(store, "echo up; sleep 300")
        wait_for(lambda: job.status().state == "running")
        subprocess.run(["scancel", slurm_id(job)], check=True)
        status = job.wait(60)
        assert (status.state, status.signal) == ("stopped", signal.SIGTERM)


@pytest.mark.skipif(not os.environ.get("JOBBER_SLURM_SLOW_TESTS"),
                    reason="Slurm checks time limits every 30 s, so a 1-minute limit ends the job 60-90 s "
                           "after it starts (88 s measured): set JOBBER_SLURM_SLOW_TESTS=1 to run it")
class TestTimeLimit:
    pytestmark = needs_slurm

    @pytest.mark.timeout(200)
    def test_a_job_over_its_time_limit_is_timed_out(self, store):
        job = slurm(store, "echo start; sleep 300", time="0:00:01")  # Slurm rounds up to a minute
        status = job.wait(150)
        assert (status.state, status.note) == ("timed-out", f"time limit 0:01:00 reached (Slurm job {slurm_id(job)})")
        assert "DUE TO TIME LIMIT" in job.log_path.read_text()


class TestCommandLine:
    pytestmark = needs_slurm

    def jobber(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True, timeout=120,
                              check=False)

    def test_run_follow_ls_and_stop(self, identity):
        ran = self.jobber("run", "--backend", "slurm", "--partition", "debug", "--time", "1:00", "--memory", "100M",
                          "-f", "--", "echo from slurm; exit 4")
        assert (ran.returncode, ran.stdout) == (4, "from slurm\n")
        started = self.jobber("run", "--backend", "slurm", "--", "sleep 300")
        job = identity.get_job(int(started.stdout))
        wait_for(lambda: job.status().state == "running")
        listed = self.jobber("ls").stdout.splitlines()
        assert re.search(r"\sfailed \(code 4\)\s+slurm\s+-\s+echo from slurm; exit 4", listed[1])
        assert re.search(r"\srunning\s+slurm\s+-\s+sleep 300", listed[2])
        stopped = self.jobber("stop", str(job.id), "--grace", "1")
        assert stopped.stdout == f"job {job.id}: stopped\n"

    def test_slurm_options_need_the_slurm_backend(self, identity, monkeypatch):
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
        refused = self.jobber("run", "--partition", "debug", "--", "true")
        assert refused.returncode == 1 and "partition" in refused.stderr and "--backend slurm" in refused.stderr


class TestKernel:
    """The magics end to end in a real kernel, on Slurm."""

    pytestmark = [*needs_slurm, pytest.mark.timeout(180)]

    @pytest.fixture
    def kernel(self, identity):
        from kernel_session import Kernel

        kernel = Kernel.start()
        reply, _ = kernel.execute("%load_ext jobber_magics")
        assert reply["status"] == "ok"
        yield kernel
        kernel.shutdown(now=True)

    def test_jobber_run_follows_a_slurm_job_live(self, identity, monkeypatch):
        from kernel_session import Kernel, job_id_of, value

        # The site default, as a configuration would set it: every %%jobber_run goes to Slurm.
        monkeypatch.setenv("JOBBER_BACKEND", "slurm")
        kernel = Kernel.start("--InteractiveShellApp.extensions=jobber_magics")
        try:
            reply, messages = kernel.execute("%%jobber_run --memory 100M\nfor i in $(seq 1 8); do echo tick $i; sleep 0.4; done")
            assert reply["status"] == "ok"
            job = identity.get_job(job_id_of(messages))
            assert job.backend == "slurm"
            view = kernel.view_of(job.id)
            ticks, while_running = kernel.follow_ticks(view, job, last=8, timeout=60)
            assert ticks == list(range(1, 9))
            assert len(while_running) >= 3, f"lines must reach the browser while the job runs: {while_running}"
            kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m), timeout=60)
        finally:
            kernel.shutdown(now=True)

    def test_the_python_api_in_a_kernel(self, kernel, identity):
        code = ("import jobber, os\n"
                "job = jobber.Certificate.from_file(os.environ['JOBBER_CERT']).new_job("
                "'echo one; sleep 0.5; echo two', jobber.Limits(memory='64M'), backend='slurm', time='1:00')\n"
                "job.start()\n"
                "for chunk in job.follow():\n"
                "    print(chunk.decode(), end='')\n"
                "print(job.status().describe(), job.status().backend)")
        reply, messages = kernel.execute(code, timeout=90)
        assert reply["status"] == "ok"
        out = "".join(m.content["text"] for m in messages if m.type == "stream")
        assert out == "one\ntwo\nexited (code 0) slurm\n"

    def test_jobber_run_backend_flag(self, kernel, identity):
        from kernel_session import job_id_of

        reply, messages = kernel.execute("%%jobber_run --backend slurm --partition debug --time 1:00 --no-follow\necho flagged")
        assert reply["status"] == "ok"
        job = identity.get_job(job_id_of(messages))
        assert job.options == {"backend": "slurm", "partition": "debug", "time": "1:00"}
        assert job.wait(60).describe() == "exited (code 0)"


class TestTimeoutOnSlurm:
    def test_a_timeout_becomes_slurms_time_limit_in_whole_minutes(self, store):
        job = store.new_job("true", timeout="90s", backend="slurm")
        captured = {}

        def fake_run(argv, env=None):
            captured["argv"] = argv
            raise _slurm.JobError("stop here: the arguments are what is checked")

        import pytest as _pytest

        with _pytest.MonkeyPatch.context() as mp:
            mp.setattr(_slurm, "slurm_tool", lambda name: name)
            mp.setattr(_slurm, "run_slurm", fake_run)
            with _pytest.raises(_slurm.JobError, match="stop here"):
                job.start()
        assert "--time=2" in captured["argv"]
        assert job.status().state == "created"  # the failed submission left it startable


def _submitted_argv(job) -> list[str]:
    """The sbatch argv ``job.start()`` would run (nothing is submitted; the job stays created)."""
    captured = {}

    def fake_run(argv, env=None):
        captured["argv"] = argv
        raise _slurm.JobError("stop here: the arguments are what is checked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_slurm, "slurm_tool", lambda name: name)
        mp.setattr(_slurm, "run_slurm", fake_run)
        with pytest.raises(_slurm.JobError, match="stop here"):
            job.start()
    assert job.status().state == "created"
    return captured["argv"]


class TestDependenciesAndGpus:
    """``after`` becomes ``--dependency`` on Slurm's ids, ``gpus`` becomes ``--gres=gpu:N``."""

    def test_gpus_become_a_gres_request(self, store):
        assert "--gres=gpu:2" in _submitted_argv(store.new_job("true", Limits(gpus=2), backend="slurm"))

    def test_the_gres_option_wins_over_gpus(self, store):
        argv = _submitted_argv(store.new_job("true", Limits(gpus=2), backend="slurm", gres="gpu:a100:1"))
        assert [a for a in argv if a.startswith("--gres")] == ["--gres=gpu:a100:1"]

    def test_no_gpus_no_gres(self, store):
        assert not [a for a in _submitted_argv(store.new_job("true", backend="slurm")) if a.startswith("--gres")]

    @pytest.fixture
    def fake_slurm(self, monkeypatch):
        """Slurm's commands as if installed, whatever the host has; any submission is recorded."""
        submitted = []

        def fake_run(argv, env=None):
            submitted.append(argv)
            raise _slurm.JobError("submitted: the dependency was not refused")

        monkeypatch.setattr(_slurm, "slurm_tool", lambda name: name)
        monkeypatch.setattr(_slurm, "run_slurm", fake_run)
        return submitted

    def test_after_a_local_job_is_refused_before_anything_is_submitted(self, store, fake_slurm):
        local = store.new_job("true", backend="local")
        job = store.new_job("true", backend="slurm", after=local)
        with pytest.raises(JobError, match=f"after job {local.id}, which is not a Slurm job"):
            job.start()
        assert fake_slurm == []
        assert job.status().state == "created"

    def test_after_a_slurm_job_not_submitted_yet_is_refused(self, store, fake_slurm):
        first = store.new_job("true", backend="slurm")
        job = store.new_job("true", backend="slurm", after=first)
        with pytest.raises(JobError, match=f"after job {first.id}, which was not submitted to Slurm yet"):
            job.start()
        assert fake_slurm == []

    def test_the_dependency_names_slurms_ids(self, store):
        first, second = store.new_job("true", backend="slurm"), store.new_job("true", backend="slurm")
        for job, fake_id in ((first, "4242"), (second, "4343")):
            (job.path / "started").touch()
            (job.path / "slurm-id").write_text(f"{fake_id}\n")
        job = store.new_job("true", backend="slurm", after=[first, (second, "any")])
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(_slurm, "ask_slurm", lambda job, slurm_id: {"JobState": "RUNNING"})
                argv = _submitted_argv(job)
        finally:
            for made_up in (first, second):  # never submitted: the clean-up must not ask Slurm about them
                (made_up.path / "started").unlink()
                (made_up.path / "slurm-id").unlink()
        assert "--dependency=afterok:4242,afterany:4343" in argv

    @pytest.mark.slurm
    @pytest.mark.skipif(UNREACHABLE is not None, reason=UNREACHABLE or "")
    def test_a_job_runs_after_its_dependency_on_the_cluster(self, store):
        first = slurm(store, "sleep 2")
        second = slurm(store, "echo second", after=first)
        assert f"dependency=afterok:{slurm_id(first)}" in scontrol(slurm_id(second)).lower().replace("(unfulfilled)", "")
        wait_for(lambda: second.status().ended, timeout=120, what="the dependent job's end")
        assert second.status().state == "exited"
        assert second.status().started_at >= first.status().ended_at

    @pytest.mark.slurm
    @pytest.mark.skipif(UNREACHABLE is not None, reason=UNREACHABLE or "")
    def test_after_any_runs_after_a_failure_and_a_met_dependency_is_dropped(self, store):
        first = slurm(store, "exit 3")
        second = slurm(store, "echo anyway", after=[(first, "any")])
        assert second.wait(120).state == "exited"
        assert first.status().state == "failed"
        third = slurm(store, "true", after=[(first, "any")])  # already met: no --dependency at all
        assert "Dependency=(null)" in scontrol(slurm_id(third))
        with pytest.raises(JobError, match=f"after job {first.id}, which ended failed"):
            slurm(store, "true", after=first)


class TestSweepArray:
    """A sweep on Slurm is one ``sbatch --array``; each of its jobs is one task of it."""

    TEMPLATE = "echo lr={lr} bs={bs} \"$SWEEP_LR\" \"$JOBBER_JOB_ID\""

    def submit(self, store, monkeypatch, **options):
        """A 2x3 sweep submitted to a fake sbatch that answers array id 4242; its argv."""
        from jobber._backends.slurm import array as _array
        from jobber._jobs.sweeps import sweep

        captured = {}

        def fake_run(argv, env=None):
            captured.update(argv=argv, env=env)
            return subprocess.CompletedProcess(argv, 0, "4242\n", "")

        monkeypatch.setattr(_array, "slurm_tool", lambda name: name)
        monkeypatch.setattr(_array, "run_slurm", fake_run)
        # What Slurm would say once the tasks ended, so that no test asks a real cluster.
        monkeypatch.setattr(_slurm, "ask_slurm", lambda job, slurm_id: {"JobState": "COMPLETED", "ExitCode": "0:0"})
        jobs = sweep(store, self.TEMPLATE, lr=[0.1, 0.01], bs=[32, 64, 128], backend="slurm", **options)
        return jobs, captured["argv"]

    def test_one_sbatch_array_with_the_throttle(self, store, monkeypatch):
        jobs, argv = self.submit(store, monkeypatch, parallel=2)
        assert len(jobs) == 6 and argv[0] == "sbatch"
        assert [a for a in argv if a.startswith("--array")] == ["--array=0-5%2"]
        array_dir = jobs[0].path / "array"
        assert f"--output={array_dir}/%a/log" in argv and argv[-1] == str(array_dir / "script")
        assert f"--job-name=jobber-sweep-{jobs[0].id}" in argv
        assert [slurm_id(job) for job in jobs] == [f"4242_{i}" for i in range(6)]
        # Task i's log is job i's own: array/<i> links to its directory.
        assert [(array_dir / str(i)).resolve() for i in range(6)] == [job.path.resolve() for job in jobs]

    def test_no_parallel_no_throttle(self, store, monkeypatch):
        _, argv = self.submit(store, monkeypatch)
        assert [a for a in argv if a.startswith("--array")] == ["--array=0-5"]

    def test_task_i_runs_the_ith_command_as_sh_c(self, store, monkeypatch):
        jobs, argv = self.submit(store, monkeypatch, parallel=2)
        outputs = []
        for i in range(6):
            ran = subprocess.run(["/bin/sh", argv[-1]], capture_output=True, text=True, check=True,
                                 env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i)})
            outputs.append(ran.stdout)
        expected = [f"lr={lr} bs={bs} {lr} {job.id}\n"
                    for job, (lr, bs) in zip(jobs, [(lr, bs) for lr in ("0.1", "0.01") for bs in (32, 64, 128)])]
        assert outputs == expected
        assert [job.command for job in jobs] == [self.TEMPLATE.replace("{lr}", lr).replace("{bs}", str(bs))
                                                 for lr in ("0.1", "0.01") for bs in (32, 64, 128)]
        unknown = subprocess.run(["/bin/sh", argv[-1]], capture_output=True, text=True, check=False,
                                 env={**os.environ, "SLURM_ARRAY_TASK_ID": "6"})
        assert (unknown.returncode, unknown.stderr) == (1, "jobber: no job for array task 6\n")

    def test_each_task_reads_its_own_state(self, store, monkeypatch):
        jobs, _ = self.submit(store, monkeypatch)
        asked = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_slurm, "ask_slurm", lambda job, sid: asked.append(sid) or {"JobState": "RUNNING"})
            assert jobs[3].status().state == "running" and asked == ["4242_3"]
            assert jobs[3].status().note == "Slurm job 4242_3"
        assert jobs[3].status().note == "Slurm job 4242_3: COMPLETED"

    def test_after_a_task_depends_on_that_task_only(self, store, monkeypatch):
        jobs, _ = self.submit(store, monkeypatch)
        later = store.new_job("true", backend="slurm", after=jobs[4])
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_slurm, "ask_slurm", lambda job, sid: {"JobState": "RUNNING"})
            assert "--dependency=afterok:4242_4" in _submitted_argv(later)

    def test_a_refused_array_leaves_no_job(self, store, monkeypatch):
        from jobber._backends.slurm import array as _array
        from jobber._jobs.sweeps import sweep

        monkeypatch.setattr(_array, "slurm_tool", lambda name: name)
        monkeypatch.setattr(_array, "run_slurm", lambda argv, env=None: subprocess.CompletedProcess(
            argv, 1, "", "sbatch: error: Batch job submission failed: Invalid job array specification\n"))
        with pytest.raises(JobError, match=r"Slurm refused their array: Batch job submission failed: Invalid job array"):
            sweep(store, "echo {x}", x=[1, 2], backend="slurm", parallel=1)
        assert store.get_jobs() == []

    @pytest.mark.parametrize(("options", "message"), [
        ({"parallel": 2}, r"parallel= is for Slurm sweeps \(backend=\"slurm\"\), not 'local' ones: .*queue"),
        ({"parallel": 0, "backend": "slurm"}, r"parallel=0: give how many .* at least 1"),
        ({"parallel": True, "backend": "slurm"}, r"parallel=True: give how many"),
        ({"parallel": 2, "backend": "slurm", "start": False}, r"parallel= caps the Slurm array .* start=True"),
    ])
    def test_bad_parallel_is_refused_before_any_job_is_made(self, store, monkeypatch, options, message):
        from jobber._jobs.sweeps import sweep

        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
        with pytest.raises(JobError, match=message):
            sweep(store, "echo {x}", x=[1, 2], **options)
        assert store.get_jobs() == []

    @pytest.mark.parametrize(("listed", "state"), [
        # Task 3 split out (running) and the pending remainder [4-5%2], as scontrol prints them.
        ("JobId=4245 JobName=n ArrayJobId=4242 ArrayTaskId=3 JobState=RUNNING Reason=None", "RUNNING"),
        ("JobId=4242 JobName=n ArrayJobId=4242 ArrayTaskId=3-5%2 JobState=PENDING Reason=JobArrayTaskLimit", "PENDING"),
        ("JobId=4242 JobName=n ArrayJobId=4242 ArrayTaskId=1,3,5 JobState=PENDING", "PENDING"),
        ("JobId=4242 JobName=n ArrayJobId=4242 ArrayTaskId=4-5%2 JobState=PENDING", None),
        ("JobId=77 JobName=n ArrayJobId=77 ArrayTaskId=3 JobState=RUNNING", None),
    ])
    def test_a_task_not_listed_separately_is_pending(self, listed, state):
        info = _slurm_query._array_task(listed + "\n", "4242_3")
        assert info.get("JobState") == state

    def test_the_first_job_is_removed_only_after_the_other_tasks_end(self, store, monkeypatch):
        jobs, _ = self.submit(store, monkeypatch)
        for job in jobs[:1]:
            job.status()  # the first ended (COMPLETED); the others are asked below
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_slurm, "ask_slurm", lambda job, sid: {"JobState": "RUNNING"})
            with pytest.raises(JobError, match=rf"job {jobs[0].id} holds the Slurm array script .* job {jobs[1].id}"):
                jobs[0].remove()
        jobs[0].remove()  # every task ended
        assert not jobs[0].path.exists() and jobs[1].path.exists()


class TestSweepArrayOnCluster:
    """A 2x3 sweep with parallel=2 on the test cluster: six tasks of one array."""

    pytestmark = [*needs_slurm, pytest.mark.timeout(240)]

    def test_six_tasks_run_two_at_a_time_each_into_its_own_log(self, store):
        from jobber._jobs.sweeps import sweep

        jobs = sweep(store, "echo start $(date +%s.%N); echo lr={lr} bs={bs}; sleep 1; echo end $(date +%s.%N)",
                     lr=[1, 2], bs=[3, 4, 5], backend="slurm", parallel=2)
        array_id = slurm_id(jobs[0]).partition("_")[0]
        assert [slurm_id(job) for job in jobs] == [f"{array_id}_{i}" for i in range(6)]
        assert [job.wait(120).describe() for job in jobs] == ["exited (code 0)"] * 6
        spans = []
        for job, (lr, bs) in zip(jobs, [(lr, bs) for lr in (1, 2) for bs in (3, 4, 5)]):
            lines = job.log_path.read_text().splitlines()
            assert len(lines) == 3 and lines[1] == f"lr={lr} bs={bs}", lines
            spans.append((float(lines[0].split()[1]), float(lines[2].split()[1])))
        running_at_each_start = [sum(s <= t < e for s, e in spans) for t, _ in spans]
        assert max(running_at_each_start) <= 2, spans
        table = jobs.table()
        rows = table.reset_index().to_dict("records") if hasattr(table, "reset_index") else table
        assert [(row["job"], row["state"]) for row in rows] == [(job.id, "exited") for job in jobs]
        assert [row["last_line"].split()[0] for row in rows] == ["end"] * 6

    def test_stopping_a_pending_task_cancels_only_it(self, store):
        from jobber._jobs.sweeps import sweep

        jobs = sweep(store, "echo {x}; sleep 300", x=[0, 1, 2], backend="slurm", parallel=1)
        wait_for(lambda: [job.status().state for job in jobs] == ["running", "pending", "pending"],
                 what="task 0 to run, tasks 1 and 2 to wait")
        assert "JobArrayTaskLimit" in jobs[2].status().note
        assert jobs[2].stop(grace=0).state == "stopped"
        assert [job.status().state for job in jobs] == ["running", "pending", "stopped"]
        # Slurm keeps no record of a task cancelled in the pending remainder; jobber keeps the stop.
        assert "cancelled before it ran" in jobs[2].status().note
        assert [s.state for s in jobs.stop(grace=0)] == ["stopped"] * 3
