"""The `jobber` command line, run as a user would run it (a real process, real jobs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest

from certfactory import require_openssl
from jobber._backends.local.isolation import choose

needs_cgroup = pytest.mark.skipif(choose()[0].NAME == "none", reason="jobs are not isolated on this host")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = subprocess.run([sys.executable, "-m", "jobber", "certs", "init-demo", str(root)],
                         capture_output=True, text=True, check=True)
    assert f"JOBBER_ROOT={root}" in out.stdout
    return root


@pytest.fixture
def jobber(demo, jobs_dir):
    def run(*args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "JOBBER_ROOT": str(demo), "JOBBER_CERT": str(demo / "client.pem"),
               "JOBBER_JOBS_DIR": str(jobs_dir)}  # read now: tests monkeypatch the environment
        result = subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True,
                                env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"jobber {' '.join(args)} -> {result.returncode}\n{result.stderr}")
        return result

    return run


class TestRun:
    def test_follow_prints_the_log_and_exits_with_the_jobs_code(self, jobber):
        result = jobber("run", "--memory", "64M", "--follow", "--", "echo one; echo two >&2; exit 3")
        assert result.returncode == 3
        assert result.stdout == "one\ntwo\n"
        assert result.stderr == "job 1 started\njobber: job 1 failed (code 3)\n"

    def test_started_comes_before_the_output_and_the_outcome_after_it(self, jobber, demo, jobs_dir):
        # stdout and stderr in one pipe, as on a terminal: the order a person reads.
        env = {**os.environ, "JOBBER_ROOT": str(demo), "JOBBER_CERT": str(demo / "client.pem"),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        result = subprocess.run([sys.executable, "-m", "jobber", "run", "-f", "--", "echo out"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        assert result.stdout == "job 1 started\nout\njobber: job 1 exited (code 0)\n"

    @needs_cgroup
    def test_an_oom_kill_ends_with_its_outcome_and_137(self, jobber):
        result = jobber("run", "--memory", "20M", "-f", "--", "python3 -c 'x = bytearray(100 << 20)'")
        assert result.returncode == 137
        assert result.stderr.splitlines()[-1] == "jobber: job 1 killed: out of memory at 20 MiB"

    def test_a_mistyped_option_is_the_subcommands_error_with_a_suggestion(self, jobber):
        result = jobber("run", "--memroy", "1G", "--", "true")
        assert result.returncode == 2
        assert result.stderr.startswith("usage: jobber run ")
        assert result.stderr.strip().endswith("jobber run: error: unrecognized arguments: --memroy; "
                                              "--memroy: did you mean --memory?")
        assert json.loads(jobber("ls", "--json").stdout) == [], "nothing started"

    def test_an_unknown_option_close_to_none_gets_no_suggestion(self, jobber):
        # `prune --label x` was answered "--label: did you mean --help?". Once prune filters by
        # label, the first command is simply accepted; it must never be offered --help.
        labelled = jobber("prune", "--label", "x", "--dry-run")
        assert "did you mean" not in labelled.stderr
        assert labelled.returncode == 0 or labelled.stderr.strip().endswith(
            "jobber prune: error: unrecognized arguments: --label x")
        result = jobber("prune", "--colour", "--dry-run")
        assert result.returncode == 2
        assert result.stderr.strip().endswith("jobber prune: error: unrecognized arguments: --colour")

    def test_limits_beyond_the_host_are_warned_about(self, jobber):
        result = jobber("run", "--cpu", "512", "--memory", "100T", "-f", "--", "true")
        assert result.returncode == 0
        assert f"jobber: warning: --cpu 512 is more than the {len(os.sched_getaffinity(0))} CPU" in result.stderr
        assert "jobber: warning: --memory 100 TiB is more than the" in result.stderr

    def test_several_words_are_quoted_and_joined(self, jobber):
        result = jobber("run", "-f", "--", "printf", "%s|", "a b", "$HOME")
        assert result.stdout == "a b|$HOME|"

    def test_without_follow_prints_the_id(self, jobber):
        result = jobber("run", "--", "true", check=True)
        assert result.stdout == "1\n" and result.stderr == "job 1 started (`jobber logs 1 -f` to follow it)\n"

    def test_bad_size_is_a_one_line_error(self, jobber):
        result = jobber("run", "--memory", "12Q", "--", "true")
        assert result.returncode == 1
        assert result.stderr.startswith("jobber: error: memory: '12Q' is not a size")
        assert "Traceback" not in result.stderr

    def test_no_identity_says_how_to_get_one(self, jobber, monkeypatch):
        result = subprocess.run([sys.executable, "-m", "jobber", "run", "--", "true"], capture_output=True,
                                text=True, env={k: v for k, v in os.environ.items() if k != "JOBBER_CERT"})
        assert result.returncode == 1 and "JOBBER_CERT" in result.stderr

    def test_slurm_options_need_the_slurm_backend(self, jobber):
        result = jobber("run", "--partition", "debug", "--", "true")
        assert result.returncode == 1 and "--backend slurm" in result.stderr

    @pytest.mark.parametrize("flag", ["--partition", "--time", "--account", "--gres"])
    def test_a_slurm_flag_without_the_slurm_backend_is_refused_as_the_magics_refuse_it(self, jobber, flag, monkeypatch):
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)  # read by the CLI's process
        result = jobber("run", flag, "x", "--", "true")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == ("jobber: error: --partition, --time, --account and --gres are Slurm options: "
                                 "add --backend slurm\n")
        assert json.loads(jobber("ls", "--json", check=True).stdout) == [], "nothing made"

    def test_no_command_is_an_error(self, jobber):
        result = jobber("run", "--")
        assert result.returncode == 1 and "no command" in result.stderr


class TestInspect:
    def test_ls_status_logs(self, jobber):
        jobber("run", "-f", "--", "for i in 1 2 3 4 5; do echo line $i; done", check=True)
        jobber("run", "--", "sleep 300; echo a long command line that goes on and on and on and on", check=True)
        header, *rows = jobber("ls", check=True).stdout.splitlines()
        assert header.split() == ["ID", "STARTED", "DURATION", "RESULT", "BACKEND", "LABEL", "COMMAND"]
        assert [row.split()[0] for row in rows] == ["1", "2"], "newest last"
        assert "exited (code 0)" in rows[0] and " running " in rows[1] and "STATE" not in header
        assert len({line.index("local") for line in rows} | {header.index("BACKEND")}) == 1, "aligned"
        started = json.loads(jobber("status", "1", "--json", check=True).stdout)["started_at"]
        assert datetime.fromisoformat(started).astimezone().strftime("%Y-%m-%d %H:%M:%S") in rows[0]
        jobber("stop", "2", "--grace", "0", check=True)
        status = json.loads(jobber("status", "1", "--json", check=True).stdout)
        assert status["state"] == "exited" and status["exit_code"] == 0
        assert jobber("logs", "1", "-n", "2", check=True).stdout == "line 4\nline 5\n"
        assert jobber("logs", "1", "-n", "2", "-f", check=True).stdout == "line 4\nline 5\n"
        assert jobber("logs", "1", check=True).stdout.count("\n") == 5
        assert "command" in jobber("status", "1", check=True).stdout

    def test_unknown_job(self, jobber):
        result = jobber("status", "42")
        assert result.returncode == 1 and "no job 42" in result.stderr

    def test_stop(self, jobber):
        jobber("run", "--", "sleep 300", check=True)
        result = jobber("stop", "1", "--grace", "0", check=True)
        assert "stopped" in result.stdout
        assert json.loads(jobber("status", "1", "--json").stdout)["state"] == "stopped"

    def test_logs_follow_ends_with_the_job(self, jobber):
        jobber("run", "--", "sleep 0.5; echo late", check=True)
        assert jobber("logs", "1", "-f", check=True).stdout == "late\n"


class TestCerts:
    def test_lists_the_pool(self, jobber):
        out = jobber("certs", check=True).stdout
        assert "pool:" in out and " ca " in out  # the demo CA

    def test_check_says_valid_for_whom_and_the_hash(self, jobber, demo):
        require_openssl()
        openssl = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                                  str(demo / "client.pem")], capture_output=True, text=True, check=True)
        fingerprint = openssl.stdout.split("=", 1)[1].strip().replace(":", "").lower()
        out = jobber("certs", "check", str(demo / "client.pem"), check=True).stdout
        assert out.startswith(f"{demo / 'client.pem'}: valid, a client identity of the pool {demo / 'pool'}\n")
        assert "  for      CN=demo-user,O=jobber demo\n" in out and f"  sha256   {fingerprint}" in out
        assert jobber("certs", "check", "--hash", str(demo / "client.pem"), check=True).stdout == fingerprint + "\n"

    def test_check_names_the_ca_certificate(self, jobber, demo):
        result = jobber("certs", "check", str(demo / "ca.pem"))
        assert result.returncode == 1 and "is the CA certificate (CN=jobber demo CA" in result.stderr
        assert "use your client certificate instead" in result.stderr and "keyUsage" not in result.stderr

    def test_check_refuses_with_the_reason(self, jobber, tmp_path):
        bad = tmp_path / "bad.pem"
        bad.write_text("hello")
        result = jobber("certs", "check", str(bad))
        assert result.returncode == 1 and "jobber: error:" in result.stderr

    def test_init_demo_refuses_to_overwrite(self, jobber, demo):
        result = jobber("certs", "init-demo", str(demo))
        assert result.returncode == 1 and "force" in result.stderr


def test_help_lists_every_command(jobber):
    out = jobber("--help", check=True).stdout
    for command in ("run", "ls", "status", "logs", "stop", "certs", "serve"):
        assert command in out


class TestRunEnvironment:
    def test_env_and_cwd_reach_the_job(self, jobber, tmp_path):
        result = jobber("run", "--env", "SEED=7", "--env", "NAME=a=b", "--cwd", str(tmp_path), "-f", "--",
                        'echo "$SEED $NAME $PWD"')
        assert (result.returncode, result.stdout) == (0, f"7 a=b {tmp_path}\n"), result.stderr

    def test_env_without_a_value_is_a_one_line_error(self, jobber):
        result = jobber("run", "--env", "SEED", "--", "true")
        assert result.returncode == 1
        assert result.stderr.strip() == "jobber: error: --env 'SEED': write NAME=VALUE, e.g. --env SEED=1"

    def test_a_missing_cwd_starts_nothing(self, jobber, tmp_path):
        result = jobber("run", "--cwd", str(tmp_path / "nowhere"), "--", "true")
        assert result.returncode == 1 and "does not exist" in result.stderr
        assert json.loads(jobber("ls", "--json", check=True).stdout) == []


class TestDoctor:
    def test_json_says_what_confines_jobs_and_each_limit(self, jobber):
        from jobber._backends.local.isolation import choose

        result = jobber("doctor", "--json")
        report = json.loads(result.stdout)
        driver, reason = choose()
        assert report["isolation"] == (driver.NAME if reason is None else "none")
        limits = {check["name"]: check for check in report["checks"] if check["name"].endswith(" limit")}
        assert set(limits) == {"cpu limit", "memory limit", "pids limit", "io limit"}
        # The exit code is the verdict: 0 only when every limit is enforced.
        assert result.returncode == (0 if all(c["ok"] for c in limits.values()) else 1)
        assert report["confined"] == (result.returncode == 0)
        for check in limits.values():
            assert check["ok"] or check["fix"], check
        identity = next(c for c in report["checks"] if c["name"] == "identity")
        assert identity["ok"] and "client" in identity["found"]

    def test_the_text_report_names_every_check(self, jobber):
        text = jobber("doctor").stdout
        for name in ("cgroup layout", "isolation", "cpu limit", "io limit", "launcher", "jobs directory", "pool"):
            assert name in text
        assert text.rstrip().endswith(("fully confined", "see the fixes above"))

    def test_doctor_leaves_no_cgroup_behind(self, jobber):
        import glob

        jobber("doctor")
        assert not [p for p in glob.glob("/sys/fs/cgroup/**/jobber/doctor", recursive=True)]

    def test_unconfined_is_exit_code_1_with_a_fix(self, jobber, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        result = jobber("doctor", "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 1 and report["isolation"] == "none" and not report["confined"]
        isolation = next(c for c in report["checks"] if c["name"] == "isolation")
        assert not isolation["ok"] and isolation["fix"] == "unset JOBBER_ISOLATION"


_UNDER_HARD_NOFILE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
from jobber.cli import main
sys.exit(main(sys.argv[2:]))
"""


class TestDoctorDescriptors:
    """What a server's job may open, said by ``jobber doctor`` (text and --json)."""

    @staticmethod
    def doctor(hard: int, *args: str, demo, jobs_dir) -> subprocess.CompletedProcess:
        env = {**os.environ, "JOBBER_ROOT": str(demo), "JOBBER_CERT": str(demo / "client.pem"),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        return subprocess.run([sys.executable, "-c", _UNDER_HARD_NOFILE, str(hard), "doctor", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    def test_a_low_hard_limit_is_said_with_the_fix(self, demo, jobs_dir):
        result = self.doctor(1000, "--json", demo=demo, jobs_dir=jobs_dir)
        report = json.loads(result.stdout)
        assert report["job_nofile"] == [1000, 1000], report
        check = next(c for c in report["checks"] if c["name"] == "job descriptors")
        assert not check["ok"] and "ulimit -n 1000 (hard 1000), below jobber's default 1024 (hard 4096)" in check["found"]
        assert "LimitNOFILE=4096" in check["fix"], check
        text = self.doctor(1000, demo=demo, jobs_dir=jobs_dir).stdout
        assert "no  job descriptors" in text and "fix: raise the hard limit" in text, text
        assert result.stderr == "", result.stderr

    def test_the_default_where_the_hard_limit_allows_it(self, demo, jobs_dir):
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < 4096:
            pytest.skip(f"the hard descriptor limit here is {hard}, below jobber's default 4096")
        report = json.loads(self.doctor(4096, "--json", demo=demo, jobs_dir=jobs_dir).stdout)
        check = next(c for c in report["checks"] if c["name"] == "job descriptors")
        assert (report["job_nofile"], check["ok"], check["fix"]) == ([1024, 4096], True, ""), check


class TestLifecycleCommands:
    def test_labels_work_where_ids_do(self, jobber):
        jobber("run", "--label", "train", "-f", "--", "echo first", check=True)
        jobber("run", "--label", "train", "-f", "--", "echo second", check=True)
        assert jobber("logs", "train", check=True).stdout == "second\n"
        assert "exited" in jobber("status", "train", check=True).stdout
        listed = json.loads(jobber("ls", "--json", "--label", "train", check=True).stdout)
        assert [job["id"] for job in listed] == [1, 2]
        result = jobber("logs", "nope")
        assert result.returncode == 1 and "no job is labelled 'nope'" in result.stderr

    def test_rerun_changes_only_what_it_is_told(self, jobber):
        jobber("run", "--memory", "64M", "--env", "SEED=1", "-f", "--", 'echo "$SEED"', check=True)
        result = jobber("rerun", "1", "--env", "SEED=2", "--memory", "128M", "-f", check=True)
        assert result.stdout == "2\n" and "re-run of job 1" in result.stderr
        status = json.loads(jobber("status", "2", "--json", check=True).stdout)
        assert status["limits"]["memory"] == 128 << 20

    def test_rm_and_prune(self, jobber):
        for command in ("true", "false", "true"):
            jobber("run", "-f", "--", command)
        assert jobber("prune", "--state", "failed", "--dry-run", check=True).stdout == "would remove 1 job: 2\n"
        assert jobber("rm", "1", check=True).stdout == "job 1 removed\n"
        assert jobber("prune", check=True).stdout == "removed 2 jobs: 2, 3\n"
        assert json.loads(jobber("ls", "--json", check=True).stdout) == []
        assert jobber("prune", check=True).stdout == "nothing to prune\n"

    @pytest.mark.parametrize(("flags", "message"), [
        (["--oom-growth", "2"], "oom_growth needs retries: it grows the memory of an attempt retried after an OOM "
                                "kill, and this job has none; add retries (e.g. retries=2, --retries 2), or drop oom_growth"),
        (["--retries", "2", "--retry-on", "failed,timed-out", "--oom-growth", "2"],
         "oom_growth grows the memory of an attempt retried after an OOM kill, but retry_on failed,timed-out does "
         "not retry OOM kills: add oom-killed to retry_on (retry_on=('failed', 'timed-out', 'oom-killed'), "
         "--retry-on failed,timed-out,oom-killed), or drop oom_growth"),
    ])
    def test_oom_growth_that_could_never_apply_is_refused(self, jobber, flags, message):
        result = jobber("run", *flags, "--", "true")
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"jobber: error: {message}\n")
        assert json.loads(jobber("ls", "--json", check=True).stdout) == [], "nothing made"

    def test_an_oom_kill_not_retried_says_so_in_ls(self, jobber):
        result = jobber("run", "--memory", "40M", "--retries", "2", "-f", "--", "python3 -c 'x = bytearray(60 << 20)'")
        assert result.returncode != 0
        listing = jobber("ls", check=True).stdout
        assert "killed: out of memory at 40 MiB, not retried: retry_on failed" in listing and "attempt" not in listing

    def test_retries_with_oom_growth_and_the_log_of_each_attempt(self, jobber, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")
        result = jobber("run", "--label", "grow", "--memory", "40M", "--retries", "2", "--retry-on", "oom-killed",
                        "--oom-growth", "1.5:100M", "-f", "--", "python3 -c 'x = bytearray(50 << 20); print(len(x))'")
        assert result.returncode == 0, result.stderr
        assert "[jobber: attempt 1 of 3 oom-killed at 40 MiB; attempt 2 starts in 0.2 s with memory 60 MiB]" in result.stdout
        assert result.stdout.endswith(f"{50 << 20}\n")
        assert "(2 of 3 attempts)" in jobber("ls", check=True).stdout
        assert "retries    2 of 3 attempts" in jobber("status", "grow", check=True).stdout
        assert str(50 << 20) not in jobber("logs", "grow", "--attempt", "1", check=True).stdout
        assert jobber("logs", "grow", "--attempt", "2", check=True).stdout == f"{50 << 20}\n"
        missing = jobber("logs", "grow", "--attempt", "3")
        assert missing.returncode == 1 and "has attempts 1 to 2" in missing.stderr

    def test_memory_auto_learns_from_the_label_and_says_what_it_picked(self, jobber):
        refused = jobber("run", "--label", "fresh", "--memory", "auto", "--", "true")
        assert refused.returncode == 1 and "needs an earlier run" in refused.stderr
        jobber("run", "--label", "fresh", "--memory", "200M", "-f", "--",
               "python3 -c 'x = bytearray(60 << 20)'", check=True)
        result = jobber("run", "--label", "fresh", "--memory", "auto", "-f", "--", "true", check=True)
        assert "last run of `fresh` (job " in result.stderr and ") peaked at" in result.stderr
        picked = json.loads(jobber("status", "fresh", "--json", check=True).stdout)["limits"]["memory"]
        assert picked >= 1.25 * (60 << 20)
        assert f"--memory auto: {picked >> 20} MiB" in result.stderr

    def test_lifecycle_flags_are_checked_with_clear_errors(self, jobber):
        for flags, expected in ((["--oom-growth", "0.5"], "oom_growth must be a factor above 1"),
                                (["--retries", "2", "--retry-on", "sometimes"], "retry_on"),
                                (["--log-max", "1K"], "below 4 KiB")):
            result = jobber("run", *flags, "--", "true")
            assert result.returncode == 1 and expected in result.stderr, result.stderr


@needs_cgroup
class TestUsageNumbers:
    def test_status_shows_the_process_peak_and_whether_it_was_sampled(self, jobber):
        jobber("run", "--pids", "50", "-f", "--", "sleep 0.3 & sleep 1.2", check=True)
        out = jobber("status", "1", check=True).stdout
        match = re.search(r"processes  peak (\d+)( \(sampled\))?, limit 50", out)
        assert match, out
        measured = json.loads(jobber("status", "1", "--json", check=True).stdout)
        assert bool(match.group(2)) == measured["peak_pids_sampled"]  # v1: sampled; v2 (pids.peak): measured

    def test_a_sweep_beyond_the_host_warns_with_the_fix(self, jobber):
        cpus = len(os.sched_getaffinity(0))
        result = jobber("sweep", "--cpu", "1", "--param", f"n={','.join(str(i) for i in range(cpus + 2))}",
                        "--", "sleep 60 # {n}", check=True)
        try:
            assert f"ask for {cpus + 2} CPUs (this host has {cpus}) at once" in result.stderr, result.stderr
            assert f"`jobber queue NAME --parallel {cpus}` once, then `--queue NAME`" in result.stderr
        finally:
            for n in range(1, cpus + 3):
                jobber("stop", str(n), "--grace", "0")


class TestFindAndCleanUp:
    """`jobber ls` filters, and `rm`/`prune` by label and id range (issue 21)."""

    def test_ls_filters_and_shows_each_jobs_label(self, jobber):
        for label in ("prep", "train", "train"):
            jobber("run", "--label", label, "-f", "--", "python3 - <<'PY'\nprint(1)\nPY", check=True)
        jobber("run", "-f", "--", "exit 3")
        header, *rows = jobber("ls", "--label", "train", check=True).stdout.splitlines()
        assert [row.split()[0] for row in rows] == ["2", "3"]
        assert header.index("LABEL") == rows[0].index("train"), "a label column, aligned"
        assert "python3 - <<'PY'; print(1); PY" in rows[0]
        rows = jobber("ls", "--state", "failed", check=True).stdout.splitlines()[1:]
        assert [row.split()[0] for row in rows] == ["4"] and " - " in rows[0], "no label: -"
        note, _header, *rows = jobber("ls", "-n", "2", check=True).stdout.splitlines()
        assert note == "(2 older jobs not shown: `jobber ls --all`, or -n N)"
        assert [row.split()[0] for row in rows] == ["3", "4"], "the newest, newest last"
        assert len(jobber("ls", "-n", "2", "--all", check=True).stdout.splitlines()) == 5
        listed = json.loads(jobber("ls", "--json", "--state", "exited", "-n", "1", check=True).stdout)
        assert [job["id"] for job in listed] == [1, 2, 3], "--json lists every matching job"
        result = jobber("ls", "--state", "done")
        assert result.returncode == 2 and "done is not a job state: choose among created, pending" in result.stderr
        result = jobber("ls", "--label", "nobody")
        assert result.returncode == 0 and result.stdout == "" and result.stderr == "no jobs match\n"

    def test_prune_and_rm_by_label_and_id_range(self, jobber):
        for label in ("a", "b", "a", "a"):
            jobber("run", "--label", label, "-f", "--", "true", check=True)
        jobber("run", "--label", "a", "--", "sleep 300", check=True)
        assert jobber("prune", "--label", "a", "--dry-run", check=True).stdout == \
            "would remove 3 jobs: 1, 3, 4; kept 5 (running)\n"
        assert jobber("prune", "2-4", "--dry-run", check=True).stdout == "would remove 3 jobs: 2, 3, 4\n"
        assert jobber("prune", "1", "3", "--label", "a", check=True).stdout == "removed 2 jobs: 1, 3\n"
        result = jobber("rm", "2-5")
        assert result.returncode == 1 and result.stdout == "job 2 removed\njob 4 removed\n"
        assert result.stderr == ("jobber: job 5 kept: job 5 is running: stop it first "
                                 "(a running job's files are never removed)\n")
        jobber("stop", "5", "--grace", "0", check=True)
        jobber("run", "--label", "b", "-f", "--", "true", check=True)
        assert jobber("rm", "--label", "a", check=True).stdout == "job 5 removed\n"
        assert [job["id"] for job in json.loads(jobber("ls", "--json", check=True).stdout)] == [6]
        result = jobber("rm", "9", "6")
        assert result.returncode == 1 and result.stdout == "job 6 removed\n" and "no job 9" in result.stderr
        result = jobber("rm")
        assert result.returncode == 1 and "name the jobs to remove" in result.stderr
        result = jobber("prune", "40-12")
        assert result.returncode == 1 and "40-12 runs backwards" in result.stderr
