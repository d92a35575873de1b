"""`jobber queue`, `jobber sweep` and `jobber run --queue/--after/--gpus`, run as a user would
run them (a real process, real jobs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "jobber", "certs", "init-demo", str(root)], capture_output=True,
                   text=True, check=True)
    return root


@pytest.fixture
def jobber(demo, jobs_dir):
    def run(*args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "JOBBER_ROOT": str(demo), "JOBBER_CERT": str(demo / "client.pem"),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        result = subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True,
                                env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"jobber {' '.join(args)} -> {result.returncode}\n{result.stderr}")
        return result

    return run


def _states(jobber) -> dict[int, dict]:
    return {job["id"]: job for job in json.loads(jobber("ls", "--json", check=True).stdout)}


def _until(jobber, done, timeout: float = 30) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = _states(jobber)
        if done(jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


class TestQueue:
    def test_without_queues_it_says_how_to_make_one(self, jobber):
        result = jobber("queue", check=True)
        assert result.stdout == ("no queues yet: set one with `jobber queue NAME --parallel 2`, or run a job "
                                 "with --queue NAME\n")

    def test_set_then_show_one_and_all(self, jobber):
        result = jobber("queue", "gpu", "--parallel", "2", "--memory", "16G", "--gpus", "2", check=True)
        assert result.stdout.splitlines() == ["QUEUE  RUNNING  WAITING  LIMITS",
                                              "gpu          0        0  parallel 2, memory 16 GiB, 2 GPUs"]
        jobber("queue", "cpu", "--cpus", "4", check=True)
        assert json.loads(jobber("queue", "gpu", "--json", check=True).stdout) == {
            "gpu": {"parallel": 2, "memory": 16 << 30, "cpus": None, "gpus": 2, "running": 0, "waiting": 0}}
        assert [line.split()[0] for line in jobber("queue", check=True).stdout.splitlines()] == ["QUEUE", "cpu", "gpu"]

    def test_zero_removes_a_limit(self, jobber):
        jobber("queue", "q", "--parallel", "2", "--cpus", "3", check=True)
        assert jobber("queue", "q", "--parallel", "0", check=True).stdout.splitlines()[1].split(None, 3)[3] == "3 CPUs"

    def test_a_limit_without_a_name_is_refused(self, jobber):
        result = jobber("queue", "--parallel", "2")
        assert result.returncode == 1
        assert result.stderr == "jobber: error: which queue? name it: jobber queue NAME --parallel 2\n"

    def test_a_malformed_value_is_the_librarys_message(self, jobber):
        result = jobber("queue", "q", "--parallel", "two")
        assert result.returncode == 1
        assert "parallel must be a whole number >= 0" in result.stderr

    def test_a_bad_name_is_refused(self, jobber):
        result = jobber("queue", "a/b", "--parallel", "1")
        assert result.returncode == 1
        assert "is not a queue name" in result.stderr


class TestRunInAQueue:
    def test_parallel_one_runs_the_jobs_one_at_a_time_and_ls_says_why_they_wait(self, jobber):
        jobber("queue", "one", "--parallel", "1", check=True)
        for _ in range(3):
            jobber("run", "--queue", "one", "--", "sleep 1.5", check=True)
        listing = jobber("ls", check=True).stdout
        assert "pending: queue `one`: 1 of 1 running" in listing
        jobs = _until(jobber, lambda jobs: all(j["state"] == "exited" for j in jobs.values()))
        assert [j["state"] for j in jobs.values()] == ["exited"] * 3
        spans = sorted((j["started_at"], j["ended_at"]) for j in jobs.values())
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), spans

    def test_queue_shows_running_and_waiting(self, jobber):
        jobber("queue", "one", "--parallel", "1", check=True)
        jobber("run", "--queue", "one", "--", "sleep 30", check=True)
        jobber("run", "--queue", "one", "--", "true", check=True)
        try:
            assert jobber("queue", "one", check=True).stdout.splitlines()[1].split() == ["one", "1", "1", "parallel",
                                                                                          "1"]
        finally:
            jobber("stop", "1", "--grace", "0", check=True)
        assert _until(jobber, lambda jobs: jobs[2]["state"] == "exited")[2]["state"] == "exited"


class TestAfter:
    def test_a_job_waits_for_its_dependencies(self, jobber):
        jobber("run", "--", "sleep 3", check=True)
        jobber("run", "--after", "1", "--", "echo second", check=True)
        assert "pending: after job 1" in jobber("ls", check=True).stdout
        jobs = _until(jobber, lambda jobs: jobs[2]["state"] == "exited")
        assert jobs[2]["started_at"] >= jobs[1]["ended_at"]
        assert jobber("logs", "2", check=True).stdout == "second\n"

    def test_a_failed_dependency_fails_the_job_unrun_unless_any(self, jobber):
        jobber("run", "--", "exit 3", check=True)
        jobber("run", "--after", "1", "--", "echo never", check=True)
        jobber("run", "--after", "1:any", "--", "echo anyway", check=True)
        jobs = _until(jobber, lambda jobs: jobs[2]["state"] != "pending" and jobs[3]["state"] == "exited")
        assert jobs[2]["state"] == "failed" and jobs[2]["started_at"] is None
        assert jobs[3]["state"] == "exited"

    def test_several_ids(self, jobber):
        jobber("run", "--", "true", check=True)
        jobber("run", "--", "true", check=True)
        jobber("run", "--after", "1,2:ok", "--", "true", check=True)
        assert _until(jobber, lambda jobs: jobs[3]["state"] == "exited")[3]["state"] == "exited"

    @pytest.mark.parametrize("given", ["1x", "1:maybe", "", "1,,2"])
    def test_malformed_ids_are_refused_before_any_job(self, jobber, given):
        result = jobber("run", "--after", given, "--", "true")
        assert result.returncode == 1
        assert result.stderr.startswith(f"jobber: error: --after {given!r}: write job ids separated by commas")
        assert _states(jobber) == {}

    def test_an_unknown_id_is_refused(self, jobber):
        result = jobber("run", "--after", "41", "--", "true")
        assert result.returncode == 1
        assert result.stderr == "jobber: error: after: there is no job 41 (see `jobber ls`)\n"


class TestGpus:
    def test_gpus_on_a_host_without_any_are_refused_when_the_job_is_made(self, jobber, monkeypatch):
        monkeypatch.setenv("JOBBER_GPUS", "none")  # read by the CLI's process, as the host's GPUs
        result = jobber("run", "--gpus", "1", "--", "true")
        assert result.returncode == 1
        assert "this host has no GPUs" in result.stderr and "JOBBER_GPUS" in result.stderr
        assert json.loads(jobber("ls", "--json", check=True).stdout) == []

    def test_a_bad_count_is_refused(self, jobber):
        result = jobber("run", "--gpus", "many", "--", "true")
        assert result.returncode == 1
        assert "gpus must be a whole number of GPUs" in result.stderr


class TestSweep:
    def test_prints_each_jobs_id_and_parameters_and_runs_them(self, jobber):
        result = jobber("sweep", "--param", "lr=0.1,0.01", "--param", "bs=32,64", "--label", "train", "--",
                        "echo lr={lr} bs={bs} $SWEEP_LR", check=True)
        assert result.stdout.splitlines() == ["1\tlr=0.1 bs=32", "2\tlr=0.1 bs=64", "3\tlr=0.01 bs=32",
                                              "4\tlr=0.01 bs=64"]
        assert result.stderr == "jobber: 4 jobs started (`jobber ls` shows them)\n"
        jobs = _until(jobber, lambda jobs: all(j["state"] == "exited" for j in jobs.values()))
        assert len(jobs) == 4
        assert jobber("logs", "3", check=True).stdout == "lr=0.01 bs=32 0.01\n"
        assert jobber("logs", "train-4", check=True).stdout == "lr=0.01 bs=64 0.01\n"

    def test_takes_runs_options_a_queue_too(self, jobber):
        jobber("queue", "sw", "--parallel", "1", check=True)
        jobber("sweep", "--param", "n=1,2,3", "--queue", "sw", "--memory", "64M", "--", "sleep 0.3; echo {n}",
               check=True)
        jobs = _until(jobber, lambda jobs: all(j["state"] == "exited" for j in jobs.values()))
        spans = sorted((j["started_at"], j["ended_at"]) for j in jobs.values())
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), spans
        assert {j["limits"]["memory"] for j in jobs.values()} == {64 << 20}

    def test_without_parameters(self, jobber):
        result = jobber("sweep", "--", "echo {lr}")
        assert result.returncode == 1
        assert result.stderr == "jobber: error: a sweep needs parameters: --param lr=0.1,0.01 (repeatable)\n"

    def test_a_parameter_the_template_does_not_use_makes_no_job(self, jobber):
        result = jobber("sweep", "--param", "lr=1,2", "--param", "bs=3", "--", "echo {lr}")
        assert result.returncode == 1
        assert "the template does not use {bs}" in result.stderr
        assert _states(jobber) == {}

    @pytest.mark.parametrize("given", ["lr", "lr=", "=1,2"])
    def test_a_malformed_param(self, jobber, given):
        result = jobber("sweep", "--param", given, "--", "echo {lr}")
        assert result.returncode == 1
        assert result.stderr.startswith(f"jobber: error: --param {given!r}: write NAME=V1,V2")

    def test_a_slurm_flag_without_the_slurm_backend_is_refused(self, jobber, monkeypatch):
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
        result = jobber("sweep", "--param", "lr=1,2", "--account", "ml", "--", "echo {lr}")
        assert result.returncode == 1
        assert result.stderr == ("jobber: error: --partition, --time, --account and --gres are Slurm options: "
                                 "add --backend slurm\n")
        assert _states(jobber) == {}

    def test_without_a_template(self, jobber):
        result = jobber("sweep", "--param", "lr=1")
        assert result.returncode == 1
        assert "no command template" in result.stderr
