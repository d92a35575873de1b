"""Python cells as jobs: ``%%jobber_py``, ``%jobber_fetch`` and ``%%jobber_sweep --py`` in a
real ipykernel, driven over jupyter_client as a browser would (see kernel_session.py).

What a cell set in the notebook is read back by running a next cell that prints it; what
the view says arrives as widget state (``result_html``, ``status_html``).
"""

from __future__ import annotations

import html
import re
import sys

import pytest

from jobber._backends.local.isolation import choose
from kernel_session import Kernel, job_id_of
from polling import wait_for

pytestmark = pytest.mark.timeout(240)

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")


def start_kernel() -> Kernel:
    kernel = Kernel.start()
    reply, _ = kernel.execute("%load_ext jobber_magics")
    assert reply["status"] == "ok"
    return kernel


@pytest.fixture
def kernel(identity):
    kernel = start_kernel()
    yield kernel
    kernel.shutdown(now=True)


def printed(kernel: Kernel, source: str) -> str:
    """What a cell prints (its stdout), after checking that it ran without an error."""
    reply, messages = kernel.execute(source)
    assert reply["status"] == "ok", reply
    return "".join(m.content.get("text", "") for m in messages if m.type == "stream")


def result_line(kernel: Kernel, job_id: int, timeout: float = 90) -> str:
    """The result line the job's view shows once the job has ended (as text)."""
    view = kernel.view_of(job_id)

    def latest() -> str:
        for message in reversed(kernel.updates(view)):
            if message.content["data"]["state"].get("result_html"):
                return message.content["data"]["state"]["result_html"]
        return ""

    kernel.receive_until(lambda _m: bool(latest()), timeout=timeout)
    return html.unescape(re.sub(r"<[^>]+>", " ", latest()))


def usage_error(kernel: Kernel, source: str) -> str:
    reply, messages = kernel.execute(source)
    assert reply["status"] == "error" and reply["ename"] == "UsageError", reply
    shown = "".join("\n".join(m.content["traceback"]) for m in messages if m.type == "error")
    assert "Traceback" not in shown
    return reply["evalue"]


class TestJobberPy:
    def test_in_and_out_names_cross_over_with_a_notebook_function(self, kernel, identity):
        printed(kernel, "xs = [1, 2, 3]\ndef double(v):\n    return 2 * v\n")
        reply, messages = kernel.execute("%%jobber_py --in xs,double --out total,doubled\n"
                                         "import os\n"
                                         "doubled = [double(v) for v in xs]\n"
                                         "total = sum(doubled)\n"
                                         "print('total in job', total, os.getpid())\n")
        assert reply["status"] == "ok", reply
        job_id = job_id_of(messages)
        line = result_line(kernel, job_id)
        assert "set: total (int), doubled (list)" in line
        assert "not set" not in line
        assert printed(kernel, "print(total, doubled)") == "12 [2, 4, 6]\n"
        assert identity.get_job(job_id).label == "jobber_py"
        log = identity.get_job(job_id).path.joinpath("log").read_text()
        assert "total in job 12" in log
        pid = int(re.search(r"total in job 12 (\d+)", log).group(1))
        assert printed(kernel, "import os; print(os.getpid())").strip() != str(pid), "the cell ran in the kernel"

    def test_a_class_the_cell_defines_comes_back_by_value(self, kernel):
        reply, messages = kernel.execute("%%jobber_py --out point\n"
                                         "class Point:\n"
                                         "    def __init__(self, x):\n"
                                         "        self.x = x\n"
                                         "point = Point(7)\n")
        assert reply["status"] == "ok", reply
        assert "set: point (Point)" in result_line(kernel, job_id_of(messages))
        assert printed(kernel, "print(type(point).__name__, point.x)") == "Point 7\n"

    def test_an_out_name_the_cell_did_not_set_is_named(self, kernel):
        reply, messages = kernel.execute("%%jobber_py --out a,b\na = 1\n")
        line = result_line(kernel, job_id_of(messages))
        assert "set: a (int)" in line and "not set by the cell: b" in line
        assert printed(kernel, "print(a, 'b' in dir())") == "1 False\n"

    def test_an_exception_shows_its_traceback_and_sets_nothing(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_py --out y\ny = 1\nraise ValueError('bad input 42')\n")
        job_id = job_id_of(messages)
        line = result_line(kernel, job_id)
        assert "nothing set" in line
        assert "Traceback" in line and "ValueError: bad input 42" in line
        assert "raise ValueError('bad input 42')" in line, "the traceback shows the cell's line"
        assert "function_runner" not in line, "the runner's frames are left out"
        assert identity.get_job(job_id).status().state == "failed"
        assert printed(kernel, "print('y' in dir())") == "False\n"

    def test_an_exception_that_cannot_be_rebuilt_here_still_shows_its_traceback(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_py --out y\nclass Odd(Exception):\n"
                                         "    def __init__(self, a, b):\n        super().__init__(a)\n"
                                         "y = 1\nraise Odd(1, 2)\n")
        line = result_line(kernel, job_id_of(messages))
        assert "nothing set: the cell raised " in line and "Odd" in line
        assert "raise Odd(1, 2)" in line, line
        assert printed(kernel, "print('y' in dir())") == "False\n"

    def test_a_missing_in_name_is_one_line_and_starts_nothing(self, kernel, identity):
        error = usage_error(kernel, "%%jobber_py --in nowhere --out x\nx = nowhere\n")
        assert error.startswith("--in: no variable 'nowhere' in the notebook")
        assert identity.get_jobs() == []
        assert usage_error(kernel, "%%jobber_py --out 2x\nx = 1\n").startswith("--out '2x' is not a Python variable")
        assert "not valid Python" in usage_error(kernel, "%%jobber_py\nx = (\n")
        assert identity.get_jobs() == []

    def test_an_unpicklable_in_value_is_named_before_anything_starts(self, kernel, identity):
        printed(kernel, "import threading\nguard = threading.Lock()\n")
        error = usage_error(kernel, "%%jobber_py --in guard\nprint(guard)\n")
        assert "lock" in error.lower() and "cannot be sent to a job" in error, error
        assert identity.get_jobs() == []

    def test_no_follow_still_sets_the_names_and_name_holds_the_job(self, kernel, identity):
        text = printed(kernel, "%%jobber_py --no-follow --name job --out answer\nanswer = 6 * 7\n")
        assert re.match(r"job \d+ started: .*answer will be set when it ends", text), text
        job_id = int(re.match(r"job (\d+)", text).group(1))
        identity.get_job(job_id).wait(60)
        wait_for(lambda: printed(kernel, "print('answer' in dir())") == "True\n", 30, "answer to be set")
        assert printed(kernel, "print(answer, job.id)") == f"42 {job_id}\n"

    @needs_cgroup
    def test_a_memory_limit_is_enforced_on_the_cell(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_py --memory 64M --out big\nbig = bytearray(512 << 20)\n"
                                         "big[::4096] = b'x' * len(big[::4096])\n")
        job_id = job_id_of(messages)
        line = result_line(kernel, job_id)
        assert identity.get_job(job_id).status().state == "oom-killed"
        assert "nothing set: job " in line and "OOM-killed" in line
        assert line.count("OOM-killed") == 1, line
        assert printed(kernel, "print('big' in dir())") == "False\n"

    @needs_cgroup
    def test_an_oom_kill_retried_with_growth_sets_the_value_of_the_attempt_that_fits(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_py --memory 40M --retries 3 --oom-growth 2 --out size\n"
                                         "block = bytearray(70 << 20)\nsize = len(block)\n")
        job_id = job_id_of(messages)
        assert "set: size (int)" in result_line(kernel, job_id)
        assert [attempt.state for attempt in identity.get_job(job_id).attempts] == ["oom-killed", "exited"]
        assert printed(kernel, "print(size)") == f"{70 << 20}\n"


class TestFunctionJobView:
    def test_a_function_jobs_view_ends_with_its_results_type_and_size(self, kernel, identity):
        reply, messages = kernel.execute("import os, jobber\n"
                                         "ex = jobber.Certificate.from_file(os.environ['JOBBER_CERT']).executor()\n"
                                         "future = ex.submit(sorted, [3, 1, 2])\nfuture.job")
        assert reply["status"] == "ok", reply
        job_id = job_id_of(messages)
        size = identity.get_job(job_id).wait(60) and identity.get_job(job_id).result_info()["size"]
        assert result_line(kernel, job_id).strip() == f"result: list, {size} B"

    def test_a_command_jobs_view_has_no_result_line(self, kernel, identity):
        text = printed(kernel, "%%jobber_run --no-follow\necho done")
        job_id = int(re.match(r"job (\d+)", text).group(1))
        identity.get_job(job_id).wait(60)
        printed(kernel, f"view = %jobber_tail -f {job_id}")
        assert printed(kernel, "print(view.wait(60), repr(view.result_html), view.state)") == "True '' exited\n"
        # The same view of a function job has the line (so the check above can fail).
        printed(kernel, "import os, jobber\nfuture = jobber.Certificate.from_file(os.environ['JOBBER_CERT'])"
                        ".executor().submit(len, 'abc')\nfuture.result(60)\n"
                        "view = %jobber_tail -f {future.job.id}")
        assert printed(kernel, "print(view.wait(60), view.result_html)").startswith("True result: int, ")

class TestFetch:
    def test_fetch_after_a_kernel_restart_sets_the_outputs_again(self, identity):
        kernel = start_kernel()
        try:
            text = printed(kernel, "%%jobber_py --no-follow --out answer,words\nanswer = 42\nwords = ['a', 'b']\n")
            job_id = int(re.match(r"job (\d+)", text).group(1))
            assert identity.get_job(job_id).wait(60).state == "exited"
        finally:
            kernel.shutdown(now=True)
        kernel = start_kernel()
        try:
            assert printed(kernel, "print('answer' in dir())") == "False\n"
            assert printed(kernel, f"%jobber_fetch {job_id}") == f"job {job_id}: set answer (int), words (list)\n"
            assert printed(kernel, "print(answer, words)") == "42 ['a', 'b']\n"
            assert printed(kernel, f"%jobber_fetch {job_id} --out words") == f"job {job_id}: set words (list)\n"
            assert usage_error(kernel, f"%jobber_fetch {job_id} --out nope") == (
                f"job {job_id} did not return nope: it has answer, words")
        finally:
            kernel.shutdown(now=True)

    def test_a_command_job_has_no_result(self, kernel, identity):
        text = printed(kernel, "%%jobber_run --no-follow\ntrue")
        job_id = int(re.match(r"job (\d+)", text).group(1))
        identity.get_job(job_id).wait(60)
        assert "has no result" in usage_error(kernel, f"%jobber_fetch {job_id}")

    def test_a_running_job_is_refused(self, kernel):
        text = printed(kernel, "%%jobber_py --no-follow\nimport time\ntime.sleep(300)\n")
        job_id = int(re.match(r"job (\d+)", text).group(1))
        assert usage_error(kernel, f"%jobber_fetch {job_id}").startswith(f"job {job_id} has not ended")


class TestPythonSweep:
    def test_each_combination_binds_its_values_and_the_table_has_the_results(self, kernel, identity):
        printed(kernel, "offset = 100\n")
        reply, messages = kernel.execute("%%jobber_sweep --py --in offset --out score --label sq n=1,2,3 m=10,20\n"
                                         "score = n * m + offset\nprint('score', score)\n")
        assert reply["status"] == "ok", reply
        sweep_jobs = [job for job in identity.get_jobs()]
        assert [job.label for job in sweep_jobs] == [f"sq-{n}" for n in range(1, 7)]
        for job in sweep_jobs:
            assert job.wait(90).state == "exited"
        text = printed(kernel, "t = _.table()\nrows = t if isinstance(t, list) else t.reset_index().to_dict('records')\n"
                               "print([(r['n'], r['m'], r['score']) for r in rows])")
        assert text == ("[(1, 10, 110), (1, 20, 120), (2, 10, 120), (2, 20, 140), (3, 10, 130), "
                        "(3, 20, 160)]\n")

    def test_in_and_out_need_py(self, kernel):
        assert usage_error(kernel, "%%jobber_sweep --out x n=1,2\necho {n}").startswith(
            "--in and --out are for a Python sweep: add --py")


class TestPieces:
    """The IPython-free parts, in this process."""

    def test_jobber_py_takes_every_option_of_the_run_magic(self):
        from jobber_magics._magics import JobberMagics
        from jobber_magics._pymagics import JobberPyMagics

        def flags(parser):
            return {", ".join(a.option_strings): (a.dest, a.help, a.metavar, a.type, a.default, a.nargs)
                    for a in parser._actions if a.option_strings and a.dest not in ("inputs", "out", "help")}

        run, py = flags(JobberMagics.jobber_run.parser), flags(JobberPyMagics.jobber_py.parser)
        assert set(run) == set(py)
        assert {name: run[name] for name in run if name not in ("--no-follow", "--replace")} == {
            name: py[name] for name in py if name not in ("--no-follow", "--replace")}

    def test_names_are_split_on_commas_once_each(self):
        from jobber_magics._pyjobs import names_list

        assert names_list("--in", ["a,b", "c", "a, d,"]) == ["a", "b", "c", "d"]
        with pytest.raises(ValueError, match="--in 'class' is not a Python variable name"):
            names_list("--in", ["x,class"])

    def test_a_cells_traceback_starts_at_the_cell(self):
        from jobber_magics._pyjobs import from_the_cell

        text = ("Traceback in job 3:\nTraceback (most recent call last):\n"
                '  File "/x/function_runner.py", line 68, in main\n    value = fn(*args)\n'
                '  File "<dynamic-code>", line 75, in run_cell\n'
                '  File "<jobber_py cell>", line 2, in <module>\n    raise ValueError(1)\nValueError: 1')
        assert from_the_cell(text) == ("Traceback in job 3:\nTraceback (most recent call last):\n"
                                       '  File "<jobber_py cell>", line 2, in <module>\n    raise ValueError(1)\n'
                                       "ValueError: 1")
        assert from_the_cell("ValueError: 1") == "ValueError: 1"

    @pytest.mark.parametrize("pandas", [True, False], ids=["dataframe", "dicts"])
    def test_a_python_sweeps_table_has_a_column_per_output(self, identity, monkeypatch, pandas):
        from jobber_magics._pyjobs import PySweep, cell_function

        if pandas:
            pytest.importorskip("pandas", reason="pandas is not installed: sweep.table() gives dicts")
        else:
            monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
        function = cell_function("if n == 2:\n    raise ValueError(n)\nsquare = n * n\n", ["square"])
        futures = [identity.executor(label=f"t-{n}").submit(function, {"n": n}) for n in (1, 2, 3)]
        sweep = PySweep([f.job for f in futures], [{"n": n} for n in (1, 2, 3)], "square = n * n", ["square"])
        for job in sweep:
            job.wait(60)
        table = sweep.table()
        rows = table.reset_index().to_dict("records") if pandas else table
        squares = [None if row["square"] != row["square"] else row["square"] for row in rows]  # NaN: no value
        assert [(row["n"], row["state"], square) for row, square in zip(rows, squares)] == [
            (1, "exited", 1), (2, "failed", None), (3, "exited", 9)]



class TestCellRun:
    """What a cell run sets when its job ends, in this process (the kernel tests above run it
    through the magic)."""

    def test_a_run_superseded_by_a_later_run_of_its_cell_sets_nothing(self, identity):
        from jobber_magics._pyjobs import CellRun, cell_function

        namespace = {"which": "second"}
        earlier = identity.executor().submit(cell_function("which = 'first'", ["which"]), {})
        later = identity.executor().submit(cell_function("which = 'second'", ["which"]), {})
        run = CellRun(earlier, ["which"], namespace, latest=lambda: later.job)
        assert run.wait(60)
        assert namespace == {"which": "second"}
        assert run.text == f"nothing set: job {later.job.id}, a later run of this cell, sets its names"
        own = CellRun(later, ["which"], namespace, latest=lambda: later.job)
        assert own.wait(60) and own.ok


class TestFunctionJobViewEnds:
    def test_the_view_stops_waiting_for_a_result_when_the_job_is_removed(self, identity):
        import threading
        from concurrent.futures import Future

        from jobber_magics._pyjobs import CellRun
        from jobber_magics._pyview import FunctionJobWidget

        job = identity.new_job("true")
        job.start()
        job.wait(60)
        future: Future = Future()  # never done: as when no watcher delivers the outcome
        future.job = job  # type: ignore[attr-defined]
        run = CellRun(future, [], {})
        waiting = threading.Event()
        wait = run.wait

        def wait_noted(timeout=None):
            waiting.set()
            return wait(timeout)

        run.wait = wait_noted  # type: ignore[method-assign]
        view = FunctionJobWidget(job, run=run, refresh=0.05)
        try:
            assert waiting.wait(60), "the view waits for the result"
            job.remove()
            view._thread.join(60)
            assert not view._thread.is_alive(), "the view still waits for a result that will never come"
            assert "could not read the result" in view.problem
        finally:
            view.close()
