"""The magics in-process, on an InteractiveShell with the extension freshly loaded per test.

Jobs are real (this host's isolation); the identity is a demo pool made once per session.
The same magics inside a real kernel are in test_kernel.py.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from jobber import Certificate, CertificateError, Job, JobNotFound, JobStatus, LimitError, Limits
from jobber._certificates.demo import init_demo
from jobber._jobs.job import spec_of
from jobber_magics._display import IdentityView, JobList, status_html
from jobber_magics._widget import JobWidget
from slurm_cluster import UNREACHABLE as SLURM_UNREACHABLE


@pytest.fixture
def no_identity(monkeypatch, tmp_path):
    """Neither $JOBBER_CERT nor a pool."""
    monkeypatch.delenv("JOBBER_CERT", raising=False)
    monkeypatch.setenv("JOBBER_ROOT", str(tmp_path / "no-root"))


@pytest.fixture
def shell():
    """The InteractiveShell singleton, reset, with jobber_magics loaded (unloaded after)."""
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("jobber_magics")
    yield ip
    ip.extension_manager.unload_extension("jobber_magics")
    ip.reset(new_session=False)


def run_cell(shell, source: str):
    """Run a cell as a user would; return (result, captured output)."""
    with capture_output() as captured:
        result = shell.run_cell(source)
    return result, captured


def run_job(shell, source: str):
    """Run a %%jobber_run --no-follow cell; return the job its one line names."""
    result, captured = run_cell(shell, source)
    assert result.success, result.error_in_exec
    assert result.result is None and captured.outputs == []
    found = re.search(r"^job (\d+) started: `%jobber_tail -f \1` to watch$", captured.stdout, re.MULTILINE)
    assert found, captured.stdout
    return magics(shell).session.get_job(int(found.group(1)))


def usage_error(shell, source: str) -> UsageError:
    """Run a cell that must fail with a one-line UsageError, no traceback; return it."""
    result, captured = run_cell(shell, source)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert captured.stderr.count("\n") == 1 and captured.stderr.startswith("UsageError: ")
    assert "Traceback" not in captured.stdout + captured.stderr
    return result.error_in_exec


def magics(shell):
    return shell.magics_manager.registry["JobberMagics"]


class TestLoading:
    def test_every_magic_is_registered_with_real_help(self, shell):
        for name in ("jobber_cert", "jobber_tail", "jobber_stop", "jobber_jobs", "jobber_connect"):
            assert shell.find_line_magic(name) is not None
        help_text = shell.find_cell_magic("jobber_run").__doc__
        assert "%%jobber_run [--cpu C] [--memory M] [--pids N] [--io-read B]" in help_text
        for option in ("--io-write B", "--name VAR", "--no-follow", "$HOME and {x} reach the shell"):
            assert option in help_text
        assert "-n LINES, --lines LINES" in shell.find_line_magic("jobber_tail").__doc__

    def test_question_mark_prints_the_help(self, shell):
        _, captured = run_cell(shell, "%jobber_run?")
        assert "--memory M" in captured.stdout

    def test_html_displays_are_registered_and_removed_on_unload(self, shell, identity):
        job = identity.new_job("echo hi")
        html = shell.display_formatter.formatters["text/html"]
        assert "<b>job " in html(job) and "created" in html(job)
        assert "CN=demo-user" in html(identity) and identity.hash() in html(identity)
        shell.extension_manager.unload_extension("jobber_magics")
        assert html(job) is None and shell.find_line_magic("jobber_jobs") is None
        shell.extension_manager.load_extension("jobber_magics")

    def test_loading_does_not_import_ipywidgets(self):
        code = (
            "import sys\n"
            "from IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'jobber_magics')\n"
            "print('ipywidgets' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"


class TestIdentity:
    def test_without_identity_every_magic_says_how_to_choose_one(self, shell, no_identity):
        for source in ("%jobber_jobs", "%jobber_tail 1", "%jobber_stop 1", "%%jobber_run\necho hi"):
            error = usage_error(shell, source)
            assert "no identity chosen yet: run `%jobber_cert PATH/TO/cert.pem`" in str(error)

    def test_jobber_cert_env_is_the_default_identity(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow\ntrue")
        assert job.owner == identity.hash()

    def test_choosing_a_certificate(self, shell, no_identity, demo, monkeypatch):
        monkeypatch.setenv("JOBBER_ROOT", str(demo["root"]))
        result, captured = run_cell(shell, f"%jobber_cert {demo['client2']}")
        assert captured.stdout == "Jobs now run on this host as CN=demo-user-2,O=jobber demo.\n"
        job = run_job(shell, "%%jobber_run --no-follow\ntrue")
        assert job.owner == Certificate.from_file(demo["client2"]).hash()

    def test_paths_expand_home_and_environment_variables(self, shell, identity):
        result, captured = run_cell(shell, "%jobber_cert $JOBBER_CERT")
        assert result.success and "CN=demo-user," in captured.stdout

    def test_one_identity_does_not_see_the_jobs_of_another(self, shell, demo, identity):
        shell.run_cell("%%jobber_run --no-follow\ntrue")
        run_cell(shell, f"%jobber_cert {demo['client2']}")
        assert shell.run_line_magic("jobber_jobs", "") == []
        assert "no job 1 for this certificate" in str(usage_error(shell, "%jobber_tail 1"))

    def test_a_certificate_outside_the_pool_is_refused(self, shell, identity, tmp_path):
        stranger = init_demo(tmp_path / "elsewhere")["client"]
        error = usage_error(shell, f"%jobber_cert {stranger}")
        assert str(stranger) in str(error) and isinstance(error.__cause__, CertificateError)

    def test_the_ca_certificate_is_named_as_such(self, shell, identity, demo):
        error = str(usage_error(shell, f"%jobber_cert {demo['ca']}"))
        assert "is the CA certificate (CN=jobber demo CA,O=jobber demo)" in error and "client certificate" in error
        assert "keyUsage" not in error

    def test_a_missing_file_is_refused(self, shell, identity, tmp_path):
        error = usage_error(shell, f"%jobber_cert {tmp_path}/nope.pem")
        assert "cannot read the certificate file" in str(error)

    def test_without_a_path_shows_the_identity_and_the_pool(self, shell, identity, demo):
        view = shell.run_line_magic("jobber_cert", "")
        assert isinstance(view, IdentityView)
        text, html = repr(view), view._repr_html_()
        assert text.startswith(f"identity: CN=demo-user,O=jobber demo  (sha256 {identity.hash()[:16]}")
        assert f"pool: {demo['pool']}" in text and "CN=jobber demo CA" in text and "issued your identity" in text
        assert "<table>" in html and "issued your identity" in html

    def test_showing_without_identity_is_not_an_error(self, shell, no_identity, demo, monkeypatch):
        monkeypatch.setenv("JOBBER_ROOT", str(demo["root"]))
        assert "no identity chosen yet" in repr(shell.run_line_magic("jobber_cert", ""))


class TestRun:
    def test_the_body_reaches_the_shell_verbatim(self, shell, identity, tmp_path):
        shell.user_ns["x"] = "python value"
        job = run_job(shell, '%%jobber_run --no-follow\necho "$HOME" {x} $((6*7)) \'$x\'\n')
        job.wait(30)
        assert job.command == 'echo "$HOME" {x} $((6*7)) \'$x\'\n'
        assert last_log(job) == f"{os.environ['HOME']} {{x}} 42 $x\n"

    N_HINT = ("`{n}` reaches the script as written, not as the value of n: add `--env N={n}` to the %%jobber_run "
              "line (IPython fills it in there) and write `$N` in the script")

    def test_a_notebook_variable_in_braces_gets_a_hint_and_the_job_runs_as_written(self, shell, identity):
        shell.user_ns["n"] = 5000
        result, captured = run_cell(shell, "%%jobber_run --no-follow\necho {n} {n}\n")
        job = identity.get_jobs()[-1]
        assert result.success and captured.stderr == ""
        assert captured.stdout == f"{self.N_HINT}\njob {job.id} started: `%jobber_tail -f {job.id}` to watch\n"
        assert job.wait(30).state == "exited" and last_log(job) == "{n} {n}\n"
        # The fix it names works: IPython fills {n} in on the magic's line.
        fixed = run_job(shell, "%%jobber_run --no-follow --env N={n}\necho $N\n")
        assert fixed.wait(30).state == "exited" and last_log(fixed) == "5000\n"

    def test_the_hint_is_a_notice_of_the_live_view(self, shell, identity):
        shell.user_ns["n"] = 5000
        job = run_cell(shell, "%%jobber_run\necho {n}")[0].result
        view = magics(shell)._cell_runs[magics(shell).current_cell][1]
        assert view.notice_html == html.escape(self.N_HINT)
        assert view.wait(30) and view.log_text() == "{n}" and job.status().state == "exited"

    @pytest.mark.parametrize(("body", "hint"), [
        ("echo {n}", N_HINT),
        ("python train.py --n {n} --lr {lr} --again {n}",
         "`{n}`, `{lr}` reach the script as written, not as the values of n, lr: add `--env N={n} --env LR={lr}` "
         "to the %%jobber_run line (IPython fills them in there) and write `$N`, `$LR` in the script"),
        ("ls {path}", "`{path}` reaches the script as written, not as the value of path: add `--env PY_PATH={path}` "
                      "to the %%jobber_run line (IPython fills it in there) and write `$PY_PATH` in the script"),
        ("echo ${HOME} ${n} $n", None),  # the shell's own
        ("echo {1..3} {a,b} {} { n } {n }", None),  # bash ranges and lists, find's {}, not names
        ("echo {{n}} {undefined} {_hidden} {In} {Out} {exit}", None),  # escaped, unknown, private, IPython's own
        ("python -c '\nfor n in range(3):\n    print(f\"{n}\", \"{lr}\".format(lr=n))\n'", None),  # Python's own
    ])
    def test_only_a_notebook_variable_alone_in_braces_gets_the_hint(self, shell, body, hint):
        from jobber_magics._magics import python_names_hint

        shell.run_cell("n, lr, path, _hidden = 5000, 0.1, '/data', 1")
        assert python_names_hint(body, shell.user_ns, shell.user_ns_hidden) == hint

    def test_returns_the_job_whose_one_display_is_the_live_view(self, shell, identity):
        result, captured = run_cell(shell, "%%jobber_run --name train\necho hello")
        job = result.result
        assert isinstance(job, Job) and shell.user_ns["_"] is job and shell.user_ns["train"] is job
        assert captured.outputs == [], "nothing displayed besides the result"
        assert captured.stdout.count(f"job {job.id}") == 1, "the result is shown once"
        view = magics(shell)._cell_runs[magics(shell).current_cell][1]
        assert isinstance(view, JobWidget) and view.job == job and not magics(shell)._pending, "the view was used"
        assert view.wait(30) and view.log_text() == "hello"
        data, _ = shell.display_formatter.format(job)  # any later display of a Job is a live view too
        assert "application/vnd.jupyter.widget-view+json" in data and data["text/plain"].startswith(f"job {job.id} · ")

    def test_rerunning_a_cell_whose_job_runs_says_so_and_starts_beside_it(self, shell, identity):
        source = "%%jobber_run\nsleep 300"
        first = run_cell(shell, source)[0].result
        second = run_cell(shell, source)[0].result
        view = magics(shell)._cell_runs[magics(shell).current_cell][1]
        assert first.status().state == "running" and second.status().state == "running"
        assert f"job {first.id} is still running from this cell: stop it with the button, or rerun the cell " \
               "with --replace" in view.notice_html and view.previous_job == first.id
        third = run_cell(shell, "%%jobber_run --replace\nsleep 300")[0].result  # another cell: its own history
        assert second.status().state == "running" and third.status().state == "running"
        fourth = run_cell(shell, "%%jobber_run --replace\nsleep 300")[0].result
        assert third.status().state == "stopped" and fourth.status().state == "running"
        view = magics(shell)._cell_runs[magics(shell).current_cell][1]
        assert f"job {third.id}, started by this cell before, was stopped first (--replace): stopped" in view.notice_html

    def test_rerunning_with_no_follow_prints_the_notice(self, shell, identity):
        first = run_job(shell, "%%jobber_run --no-follow\nsleep 300")
        _, captured = run_cell(shell, "%%jobber_run --no-follow\nsleep 300")
        assert captured.stdout.splitlines()[0].startswith(f"job {first.id} is still running from this cell")

    def test_limits_beyond_the_host_are_warned_about_not_refused(self, shell, identity):
        result, captured = run_cell(shell, "%%jobber_run --no-follow --cpu 512 --memory 100T\ntrue")
        assert result.success
        assert f"warning: --cpu 512 is more than the {len(os.sched_getaffinity(0))} CPU" in captured.stdout
        assert "warning: --memory 100 TiB is more than the" in captured.stdout

    def test_a_mistyped_option_gets_a_suggestion(self, shell, identity):
        error = str(usage_error(shell, "%%jobber_run --memroy 1G\necho hi"))
        assert "unrecognized arguments: --memroy 1G" in error and "did you mean --memory?" in error
        assert "did you mean --lines?" in str(usage_error(shell, "%jobber_tail 1 --lnies 3"))

    def test_a_mistyped_option_gets_a_suggestion_whatever_the_language(self, shell, identity, monkeypatch):
        # argparse's messages go through gettext: the unknown words are found without reading them.
        monkeypatch.setattr(argparse, "_", lambda text: {"unrecognized arguments: %s": "arguments inconnus : %s"}
                            .get(text, text))
        error = str(usage_error(shell, "%%jobber_run --memroy 1G\necho hi"))
        assert "--memroy: did you mean --memory?" in error and "(see %jobber_run? for the options)" in error
        error = str(usage_error(shell, "%%jobber_sweep --memroy 1G a=1\necho {a}"))
        assert "--memroy: did you mean --memory?" in error and "(see %jobber_sweep? for the options)" in error

    def test_env_and_cwd_pass_values_to_the_script(self, shell, identity, tmp_path):
        job = run_job(shell, f'%%jobber_run --no-follow --env LR=0.01 --env TAG=a=b --cwd {tmp_path}\n'
                             'echo "$LR $TAG $PWD"\n')
        assert job.wait(30).state == "exited"
        assert last_log(job) == f"0.01 a=b {tmp_path}\n"

    def test_env_without_a_value_is_a_usage_error(self, shell, identity):
        error = usage_error(shell, "%%jobber_run --env LR\ntrue")
        assert "write NAME=VALUE" in str(error)

    def test_the_job_runs_the_kernels_python(self, shell, identity, monkeypatch):
        monkeypatch.setenv("PATH", "/usr/bin:/bin")  # Jupyter started as .venv/bin/jupyter
        job = run_job(shell, "%%jobber_run --no-follow\ncommand -v python\n")
        job.wait(30)
        assert os.path.dirname(last_log(job).strip()) == os.path.dirname(sys.executable)

    def test_no_follow_prints_one_line_and_shows_no_view(self, shell, identity):
        result, captured = run_cell(shell, "%%jobber_run --no-follow\nsleep 0.2")
        job = identity.get_jobs()[-1]
        assert captured.outputs == [] and result.result is None and job.status().state == "running"
        assert captured.stdout == f"job {job.id} started: `%jobber_tail -f {job.id}` to watch\n"

    def test_limits_are_passed_to_the_job(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow --cpu 0.5 --memory 64M --pids 20 --io-read 1M --io-write 2G\ntrue")
        assert job.limits == Limits(cpu=0.5, memory=64 << 20, pids=20, io_read_bps=1 << 20, io_write_bps=2 << 30)

    def test_a_bad_size_is_a_usage_error_and_starts_nothing(self, shell, identity):
        error = usage_error(shell, "%%jobber_run --memory 12Q\necho hi")
        assert "memory: '12Q' is not a size" in str(error) and isinstance(error.__cause__, LimitError)
        assert identity.get_jobs() == []

    @pytest.mark.parametrize(("line", "message"), [
        ("--cpu none", "cpu must be a number of CPUs"),
        ("--pids -3", "pids must be at least 1"),
        ("--name 2fast", "is not a Python variable name"),
        ("--name class", "is not a Python variable name"),
        ("--bogus", "unrecognized arguments: --bogus"),
    ])
    def test_bad_options_are_usage_errors(self, shell, identity, line, message):
        assert message in str(usage_error(shell, f"%%jobber_run {line}\necho hi"))

    def test_an_empty_script_is_refused(self, shell, identity):
        assert "the command is empty" in str(usage_error(shell, "%%jobber_run\n\n"))

    def test_as_a_line_magic_it_explains_the_cell_form(self, shell, identity):
        assert "is a cell magic: write %%jobber_run (two %)" in str(usage_error(shell, "%jobber_run echo hi"))

    def test_a_job_that_cannot_be_confined_is_a_usage_error(self, shell, identity, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "cgroup-v3")
        assert "JOBBER_ISOLATION='cgroup-v3' is not one of" in str(usage_error(shell, "%%jobber_run\ntrue"))

    def test_require_isolation_refuses_to_run_unconfined(self, shell, identity, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")  # as on a host without a writable cgroup
        error = usage_error(shell, "%%jobber_run --require-isolation --memory 1G\ntrue")
        assert "needs isolation but would run unconfined" in str(error)
        assert [job.status().state for job in identity.get_jobs()] == ["created"], "nothing ran"

    def test_slurm_options_need_the_slurm_backend(self, shell, identity, monkeypatch):
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
        error = usage_error(shell, "%%jobber_run --partition gpu\ntrue")
        assert "--partition, --time, --account and --gres are Slurm options: add --backend slurm" in str(error)
        assert "invalid choice: 'k8s'" in str(usage_error(shell, "%%jobber_run --backend k8s\ntrue"))

    @pytest.mark.slurm
    @pytest.mark.skipif(SLURM_UNREACHABLE is not None, reason=SLURM_UNREACHABLE or "")
    def test_a_slurm_job_from_a_cell(self, shell, identity):
        job = run_job(shell, "%%jobber_run --backend slurm --time 1:00 --no-follow\necho \"on $SLURM_JOB_NAME\"")
        assert job.options == {"backend": "slurm", "time": "1:00"}
        assert job.wait(120).describe() == "exited (code 0)" and last_log(job).startswith("on ")


def last_log(job, size: int = 1 << 16) -> str:
    buf = bytearray(size)
    return bytes(buf[: job.tail(buf)]).decode()


class TestTail:
    @pytest.fixture
    def job(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow\nseq 1 30; printf 'bar 10%%\\rbar 99%%\\rbar 100%%\\n\\377 done'")
        job.wait(30)
        return job

    def test_prints_the_last_lines_as_a_terminal_shows_them(self, shell, job):
        _, captured = run_cell(shell, f"%jobber_tail {job.id} -n 3")
        assert captured.stdout == "30\nbar 100%\n\ufffd done\n"

    def test_ten_lines_by_default(self, shell, job):
        _, captured = run_cell(shell, f"%jobber_tail {job.id}")
        assert captured.stdout.splitlines() == [str(i) for i in range(23, 31)] + ["bar 100%", "\ufffd done"]

    def test_zero_lines_prints_nothing(self, shell, job):
        _, captured = run_cell(shell, f"%jobber_tail {job.id} -n 0")
        assert captured.stdout == ""

    def test_follow_returns_a_live_view_of_the_last_lines(self, shell, job):
        widget = shell.run_line_magic("jobber_tail", f"{job.id} -f -n 2")
        assert isinstance(widget, JobWidget) and widget.wait(30)
        assert widget.log_text() == "bar 100%\n\ufffd done"

    def test_an_unknown_job_is_a_usage_error(self, shell, identity):
        error = usage_error(shell, "%jobber_tail 999")
        assert "no job 999" in str(error) and isinstance(error.__cause__, JobNotFound)

    @pytest.mark.parametrize("job_id", ["@abc", "0", "-1", "3.5"])
    def test_a_malformed_job_id_is_a_usage_error(self, shell, identity, job_id):
        assert "is not a job id: give the job's number" in str(usage_error(shell, f"%jobber_tail {job_id}"))

    def test_a_malformed_line_count_is_a_usage_error(self, shell, job):
        assert "'many' is not a number of lines" in str(usage_error(shell, f"%jobber_tail {job.id} -n many"))


class TestStop:
    def test_stops_the_job_and_says_how_it_ended(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow\nsleep 300")
        _, captured = run_cell(shell, f"%jobber_stop {job.id} --grace 1")
        assert captured.stdout == f"job {job.id}: stopped\n" and job.status().state == "stopped"

    def test_stopping_an_ended_job_tells_its_outcome(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow\nexit 4")
        job.wait(30)
        _, captured = run_cell(shell, f"%jobber_stop {job.id}")
        assert captured.stdout == f"job {job.id}: failed (code 4)\n"

    def test_an_unknown_job_is_a_usage_error(self, shell, identity):
        assert "no job 7" in str(usage_error(shell, "%jobber_stop 7"))


class TestDoctor:
    def test_shows_each_check_and_the_verdict(self, shell, identity):
        result, _ = run_cell(shell, "%jobber_doctor")
        report = result.result
        names = [check.name for check in report.diagnosis.checks]
        assert {"isolation", "cpu limit", "memory limit", "pids limit", "io limit", "launcher"} <= set(names)
        html_text = report._repr_html_()
        assert all(name in html_text for name in names)
        assert ("fully confined" in html_text) == report.diagnosis.confined

    def test_takes_no_arguments(self, shell, identity):
        usage_error(shell, "%jobber_doctor --bogus")


class TestJobs:
    def test_a_damaged_job_is_named_with_why_and_the_rest_are_listed(self, shell, identity):
        good = run_job(shell, "%%jobber_run --no-follow\necho fine")
        bad = run_job(shell, "%%jobber_run --no-follow\necho soon damaged")
        good.wait(30)
        bad.wait(30)
        with open(os.path.join(bad.path, "spec.json"), "w") as f:
            f.write("{not json")
        jobs = shell.run_line_magic("jobber_jobs", "")
        assert [job.id for job in jobs] == [good.id] and set(jobs.skipped) == {bad.id}
        assert repr(jobs).splitlines()[-1].startswith(f"job {bad.id} skipped: ") and "spec.json" in repr(jobs)
        html = shell.display_formatter.formatters["text/html"](jobs)
        assert "<table" in html and f"job {bad.id} skipped: " in html

    def test_lists_this_identitys_jobs_with_their_true_state(self, shell, identity):
        done = run_job(shell, "%%jobber_run --no-follow\necho done")
        running = run_job(shell, "%%jobber_run --no-follow\nsleep 300")
        done.wait(30)
        jobs = shell.run_line_magic("jobber_jobs", "")
        assert isinstance(jobs, JobList) and jobs == [done, running], "newest last"
        header, *rows = repr(jobs).splitlines()
        assert header.split() == ["ID", "STARTED", "DURATION", "RESULT", "BACKEND", "LABEL", "COMMAND"]
        assert "exited (code 0)" in rows[0] and rows[0].endswith("local    -      echo done")
        assert " running " in rows[1] and rows[1].endswith("local    -      sleep 300")
        html = shell.display_formatter.formatters["text/html"](jobs)
        assert "<table" in html and "exited (code 0)" in html and "running" in html and ">started<" in html

    def test_takes_no_arguments(self, shell, identity):
        assert "unrecognized arguments: 3" in str(usage_error(shell, "%jobber_jobs 3"))


class FakeJob:
    def __init__(self, job_id: int, command: str) -> None:
        self.id, self.command, self.stopped, self.label = job_id, command, False, None

    def status(self):
        from jobber import JobStatus

        return JobStatus(state="stopped" if self.stopped else "running", backend="remote")

    def start(self):
        pass

    def stop(self, grace=5.0):
        self.stopped = True
        return self.status()

    def tail(self, buf, offset=0):
        data = f"remote job {self.id}\n".encode()[offset:]
        buf[: len(data)] = data
        return len(data)


class FakeSession:
    """Stands for a remote session: the same job methods as a Certificate."""

    def __init__(self) -> None:
        self.jobs: dict[int, FakeJob] = {}

    def new_job(self, command, limits=None, **options):
        job = self.jobs[len(self.jobs) + 1] = FakeJob(len(self.jobs) + 1, command)
        job.options = options
        return job

    def get_job(self, job_id):
        if job_id not in self.jobs:
            raise JobNotFound(job_id)
        return self.jobs[job_id]

    def get_jobs(self):
        return list(self.jobs.values())

    def find_job(self, ref):
        return self.get_job(int(ref))


class TestSession:
    def test_every_magic_uses_whatever_session_is_current(self, shell, no_identity):
        session = magics(shell)._session = FakeSession()
        job = run_job(shell, "%%jobber_run --no-follow\nhostname")
        assert session.jobs == {1: job}
        _, captured = run_cell(shell, "%jobber_tail 1")
        assert captured.stdout == "remote job 1\n"
        assert repr(shell.run_line_magic("jobber_jobs", "")).splitlines()[1].split() == ["1", "-", "-", "running", "remote", "-",
                                                                                   "hostname"]
        _, captured = run_cell(shell, "%jobber_stop 1")
        assert captured.stdout == "job 1: stopped\n"
        assert "no job 2" in str(usage_error(shell, "%jobber_tail 2"))

    def test_backend_options_reach_the_session(self, shell, no_identity):
        session = magics(shell)._session = FakeSession()
        shell.run_cell("%%jobber_run --no-follow --backend slurm --partition gpu --time 1:00:00 --account ml "
                       "--gres gpu:1\nnvidia-smi")
        assert session.jobs[1].options == {"backend": "slurm", "partition": "gpu", "time": "1:00:00",
                                           "account": "ml", "gres": "gpu:1"}
        shell.run_cell("%%jobber_run --no-follow\ntrue")
        assert session.jobs[2].options == {}, "no options: new_job(command, limits), as a remote session takes"

    def test_local_goes_back_to_the_chosen_identity(self, shell, identity, demo):
        run_cell(shell, f"%jobber_cert {demo['client']}")
        magics(shell)._session = FakeSession()
        _, captured = run_cell(shell, "%jobber_connect --local")
        assert captured.stdout == "Jobs now run on this host as CN=demo-user,O=jobber demo.\n"
        assert magics(shell).session == identity

    @pytest.mark.parametrize(("line", "message"), [
        ("", "give the server's URL"),
        ("--local https://example.org", "--local takes no URL"),
    ])
    def test_connect_explains_what_it_needs(self, shell, line, message):
        assert message in str(usage_error(shell, f"%jobber_connect {line}"))

    def test_connect_needs_a_certificate_and_key(self, shell, monkeypatch):
        monkeypatch.delenv("JOBBER_KEY", raising=False)
        assert "needs your certificate and its key" in str(usage_error(shell, "%jobber_connect https://example.org:8443"))


@pytest.fixture
def server(demo, tmp_path):
    """A jobber server on loopback, trusting the demo pool, with its own jobs directory."""
    from serve_for_notebooks import ServerProcess

    with ServerProcess(demo["server"], demo["server_key"], demo["root"], tmp_path / "server-jobs") as server:
        yield server


class TestRemote:
    def test_connect_then_every_magic_works_on_the_servers_jobs(self, shell, identity, demo, server, monkeypatch):
        monkeypatch.setenv("JOBBER_KEY", str(demo["client_key"]))
        _, captured = run_cell(shell, f"%jobber_connect {server.url} --ca {demo['ca']}")
        assert captured.stdout == f"Jobs now run on {server.url} as CN=demo-user,O=jobber demo.\n"

        result, captured = run_cell(shell, "%%jobber_run --name remote\nfor i in 1 2 3; do echo remote $i; sleep 0.1; done")
        job = result.result
        assert isinstance(job, Job) and job.backend == "remote" and shell.user_ns["remote"] is job
        assert captured.outputs == [] and captured.stdout.count(f"job {job.id} · ") == 1
        widget = JobWidget(job)  # a second view of the same remote job
        assert widget.wait(30) and widget.log_text() == "remote 1\nremote 2\nremote 3"
        assert "exited (code 0)" in widget.status_html

        _, captured = run_cell(shell, f"%jobber_tail {job.id} -n 2")
        assert captured.stdout == "remote 2\nremote 3\n"
        assert shell.run_line_magic("jobber_jobs", "") == [job]
        assert "exited (code 0)" in shell.display_formatter.formatters["text/html"](job)
        assert "on " + server.url in repr(shell.run_line_magic("jobber_cert", ""))

        run_cell(shell, "%jobber_connect --local")
        assert shell.run_line_magic("jobber_jobs", "") == [], "this host has none of the server's jobs"

    def test_a_server_that_is_not_there_is_a_usage_error(self, shell, identity, demo):
        error = usage_error(shell, f"%jobber_connect https://127.0.0.1:9 --key {demo['client_key']} --ca {demo['ca']}")
        assert "127.0.0.1:9" in str(error)


def started(shell, cell: str):
    """Run a --no-follow cell; return the job it started (the newest of the session)."""
    result, _ = run_cell(shell, cell)
    assert result.success, result.error_in_exec
    return magics(shell).session.get_jobs()[-1]


class TestLifecycleMagics:
    @pytest.mark.parametrize(("line", "message"), [
        ("--oom-growth 2", "oom_growth needs retries: "),
        ("--retries 2 --retry-on failed --oom-growth 2",
         "retry_on failed does not retry OOM kills: add oom-killed to retry_on"),
    ])
    def test_oom_growth_that_could_never_apply_is_refused(self, shell, identity, line, message):
        assert message in str(usage_error(shell, f"%%jobber_run --no-follow {line}\ntrue"))
        assert identity.get_jobs() == []

    def test_oom_growth_with_retries_retries_oom_kills(self, shell, identity):
        job = run_job(shell, "%%jobber_run --no-follow --retries 2 --oom-growth 2\ntrue")
        assert spec_of(job).retry_on == ("failed", "oom-killed")

    def test_the_live_view_never_counts_attempts_that_will_not_come(self, shell):
        ended = JobStatus(state="oom-killed", retries=2, limits=Limits(memory="150M"))
        assert "killed: out of memory at 150 MiB, not retried: retry_on failed" in status_html(4, ended)
        assert "attempt" not in status_html(4, ended)
        assert "attempt 2/3" in status_html(4, JobStatus(state="running", retries=2, attempt=2))

    def test_a_label_works_where_an_id_does(self, shell, identity):
        job = started(shell, "%%jobber_run --no-follow --label train\necho trained\n")
        job.wait(30)
        assert job.label == "train"
        result, captured = run_cell(shell, "%jobber_tail train")
        assert captured.stdout.strip() == "trained"

    def test_rerun_with_more_memory_keeps_the_original(self, shell, identity):
        old = started(shell, "%%jobber_run --no-follow --memory 64M --env SEED=1\necho $SEED\n")
        old.wait(30)
        result, captured = run_cell(shell, f"%jobber_rerun {old.id} --memory 128M --env SEED=2 --no-follow")
        assert "a re-run of job" in captured.stdout
        new = magics(shell).session.get_jobs()[-1]
        assert new.rerun_of == old.id and new.limits.memory == 128 << 20 and old.limits.memory == 64 << 20
        new.wait(30)
        assert last_log(new) == "2\n"

    def test_rm_and_prune(self, shell, identity):
        jobs = [started(shell, f"%%jobber_run --no-follow\n{cmd}\n") for cmd in ("true", "false", "sleep 30")]
        for job in jobs[:2]:
            job.wait(30)
        error = usage_error(shell, f"%jobber_rm {jobs[2].id}")
        assert "stop it first" in str(error)
        result, captured = run_cell(shell, "%jobber_prune --state failed --dry-run")
        assert result.result == [jobs[1].id] and "would remove 1 job" in captured.stdout
        run_cell(shell, f"%jobber_rm {jobs[0].id}")
        assert [job.id for job in magics(shell).session.get_jobs()] == [jobs[1].id, jobs[2].id]
        jobs[2].stop(grace=0)
        result, _ = run_cell(shell, "%jobber_prune")
        assert result.result == [jobs[1].id, jobs[2].id]


class TestOversubscribingCells:
    """Several %%jobber_run cells in a row: the one that takes the host's CPUs past what it
    has says so, with the fix."""

    def test_the_cell_past_the_hosts_cpus_warns(self, shell, identity):
        cpus = len(os.sched_getaffinity(0))
        try:
            for _ in range(cpus):
                run_job(shell, "%%jobber_run --no-follow --cpu 1\nsleep 60\n")
            result, captured = run_cell(shell, "%%jobber_run --no-follow --cpu 1\nsleep 60\n")
            assert result.success, result.error_in_exec
            assert (f"warning: this job and the {cpus} already running or waiting ask for {cpus + 1} CPUs (this host "
                    f"has {cpus}) at once") in captured.stdout
            assert f"`%jobber_queue NAME --parallel {cpus}` once, then `--queue NAME`" in captured.stdout
            assert "warning" not in run_cell(shell, "%%jobber_run --no-follow\nsleep 60\n")[1].stdout  # asks for no CPUs
        finally:
            for job in identity.get_jobs():
                job.stop(grace=0)
