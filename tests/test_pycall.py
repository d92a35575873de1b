"""A Python call as a job's payload (``jobber._jobs.pycall``), and the runner that the job
runs (``function_runner.py``), run here as the job would: a real interpreter process on
a job directory. The jobs themselves: tests/test_function_jobs.py.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading

import pytest

from jobber import JobError, RemoteError
from jobber._jobs import pycall
from jobber._jobs.pycall import check_python, function_name, load_result, pack_call, result_max_of, runner_command


def add(a, b):
    return a + b


class Unbuildable(Exception):
    """Pickles, but cannot be rebuilt: its __init__ takes two arguments, its args hold one."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def run_call(tmp_path, fn, *args, result_max=1 << 30, python=sys.executable, cwd=None, **kwargs):
    """Run the runner on a job directory holding the call, as a job would; (exit code,
    result.json, result.pkl's bytes or None, its output)."""
    job_dir = tmp_path / "job"
    job_dir.mkdir(exist_ok=True)
    (job_dir / "call.pkl").write_bytes(pack_call(fn, args, kwargs))
    done = subprocess.run(["/bin/sh", "-c", runner_command(python, job_dir, result_max)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    meta = json.loads((job_dir / "result.json").read_text())
    data = (job_dir / "result.pkl").read_bytes() if (job_dir / "result.pkl").exists() else None
    return done.returncode, meta, data, done.stdout + done.stderr


class TestPackCall:
    def test_a_lock_argument_is_named_with_why(self):
        lock = threading.Lock()

        def use(data, lock):
            return data

        with pytest.raises(JobError) as err:
            pack_call(use, ([1, 2],), {"lock": lock})
        assert str(err.value).startswith("argument 'lock': a lock held by the kernel cannot be sent to a job "
                                         "(_thread.lock cannot be pickled)")

    def test_a_positional_argument_is_named_by_its_parameter(self):
        with pytest.raises(JobError, match=r"^argument 'b': a lock held by the kernel"):
            pack_call(add, (1, threading.RLock()))

    def test_a_lambda_over_a_closed_over_socket_names_the_variable(self):
        sock = socket.socket()
        try:
            send = lambda data: sock.send(data)  # noqa: E731 - the case users write
            with pytest.raises(JobError) as err:
                pack_call(send, (b"x",))
        finally:
            sock.close()
        assert "closed-over variable 'sock': an open socket of the kernel cannot be sent to a job" in str(err.value)
        assert "socket.socket cannot be pickled" in str(err.value)

    def test_a_lock_deep_in_an_argument_is_found_where_it_is(self):
        state = {"weights": [1.0, 2.0], "guard": {"lock": threading.Lock()}}
        with pytest.raises(JobError, match=r"^argument 'a'\['guard'\]\['lock'\]: a lock held by the kernel"):
            pack_call(add, (state, 1))

    def test_a_file_open_in_the_kernel(self, tmp_path):
        with open(tmp_path / "f", "w") as f, pytest.raises(JobError, match="a file open in the kernel cannot be sent"):
            pack_call(add, (f, 1))

    def test_not_callable(self):
        with pytest.raises(JobError, match="is not callable"):
            pack_call(42, ())

    def test_a_function_defined_here_goes_by_value_with_the_callers_path(self):
        payload = pickle.loads(pack_call(add, (1, 2)))
        assert payload["python"] == pycall.PYTHON_VERSION
        assert len(payload["sys_path"]) == len(sys.path) and all(os.path.isabs(p) for p in payload["sys_path"])
        fn, args, kwargs = pickle.loads(payload["call"])
        assert fn(*args, **kwargs) == 3


class TestNames:
    def test_function_name(self):
        import functools

        def inner():
            pass

        assert function_name(add) == "add"
        assert function_name(inner) == "TestNames.test_function_name.inner"
        assert function_name(functools.partial(add, 1)) == "add"
        assert function_name(len) == "len"

    def test_function_label_is_always_a_label(self):
        from jobber._jobs.options import check_label
        from jobber._jobs.pycall import function_label

        def a_function_whose_name_is_long_enough_to_pass_the_sixty_four_characters_of_a_label():
            pass

        assert function_label(lambda: 1) == "TestNames.test_function_label_is_always_a_label.lambda"
        assert function_label(add) == "add"
        long = function_label(a_function_whose_name_is_long_enough_to_pass_the_sixty_four_characters_of_a_label)
        assert long.endswith("sixty_four_characters_of_a_label") and check_label(long) == long
        assert check_label(function_label(lambda: 1))

    @pytest.mark.parametrize(("given", "size"), [(None, 1 << 30), ("200M", 200 << 20), (1024, 1024)])
    def test_result_max(self, given, size):
        assert result_max_of(given) == size

    @pytest.mark.parametrize("given", [0, "-1", "lots"])
    def test_a_bad_result_max_is_refused(self, given):
        with pytest.raises(JobError, match="result_max"):
            result_max_of(given)


class TestCheckPython:
    def test_this_interpreter_needs_no_run(self):
        assert check_python(None) == sys.executable

    def fake_python(self, tmp_path, version: str, cloudpickle: str = "yes"):
        path = tmp_path / f"python{version}"
        path.write_text(f"#!/bin/sh\necho {version}\necho {cloudpickle}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def test_another_version_is_refused_naming_both(self, tmp_path):
        python = self.fake_python(tmp_path, "3.9")
        with pytest.raises(JobError) as err:
            check_python(python)
        assert f"is Python 3.9, but this kernel is Python {pycall.PYTHON_VERSION}" in str(err.value)

    def test_the_same_version_is_taken(self, tmp_path):
        python = self.fake_python(tmp_path, pycall.PYTHON_VERSION)
        assert check_python(python) == python

    def test_one_without_cloudpickle_is_refused_saying_how_to_install_it(self, tmp_path):
        python = self.fake_python(tmp_path, pycall.PYTHON_VERSION, "no")
        with pytest.raises(JobError, match=r"has no cloudpickle.*-m pip install cloudpickle"):
            check_python(python)

    def test_the_callers_version_is_what_counts_on_a_server(self, tmp_path):
        """A server of another Python checks the client's version, not its own."""
        python = self.fake_python(tmp_path, "3.9")
        assert check_python(python, "3.9") == python
        with pytest.raises(JobError, match=r"is Python 3\.9, but the caller is Python 3\.8"):
            check_python(python, "3.8")
        with pytest.raises(JobError, match=r"the caller's 3\.9: name a Python 3\.9 interpreter"):
            check_python(None, "3.9")

    def test_a_missing_interpreter(self, tmp_path):
        with pytest.raises(JobError, match="cannot be run"):
            check_python(str(tmp_path / "nope"))


class TestTheRunner:
    def test_a_return_value(self, tmp_path):
        code, meta, data, _ = run_call(tmp_path, add, 2, b=3)
        assert code == 0
        assert meta == {"ok": True, "type": "int", "size": len(data), "traceback": None, "error": None,
                        "python": pycall.PYTHON_VERSION}
        assert load_result(meta, data, 1) == 5
        assert sorted(os.listdir(tmp_path / "job")) == ["call.pkl", "result.json", "result.pkl"]  # no temporary left
        assert stat.S_IMODE((tmp_path / "job" / "result.pkl").stat().st_mode) == 0o600

    def test_prints_go_to_the_output(self, tmp_path):
        def chatty():
            print("hello from the job")
            return None

        code, _, _, out = run_call(tmp_path, chatty)
        assert code == 0 and "hello from the job" in out

    def test_an_exception_comes_back_as_itself_with_the_traceback(self, tmp_path):
        def fail(x):
            raise KeyError(f"missing {x}")

        code, meta, data, out = run_call(tmp_path, fail, "lr")
        assert code == 1
        assert meta["ok"] is False and meta["type"] == "KeyError" and "in fail" in meta["traceback"]
        assert "KeyError: 'missing lr'" in out  # the log shows the traceback
        with pytest.raises(KeyError, match="missing lr") as err:
            load_result(meta, data, 7)
        if sys.version_info >= (3, 11):
            assert "Traceback in job 7:" in err.value.__notes__[0] and "in fail" in err.value.__notes__[0]
        else:
            assert "in fail" in err.value.__cause__.traceback_text

    def test_an_exception_that_cannot_be_rebuilt_is_a_remote_error(self, tmp_path):
        def fail():
            raise Unbuildable(1, 2)

        code, meta, data, _ = run_call(tmp_path, fail)
        assert code == 1 and data is None and meta["size"] == 0
        with pytest.raises(RemoteError) as err:
            load_result(meta, data or b"", 3)
        assert err.value.type_name == "test_pycall.Unbuildable"
        assert "Unbuildable: 1/2" in err.value.traceback_text

    def test_a_result_over_result_max_is_not_kept(self, tmp_path):
        code, meta, data, out = run_call(tmp_path, bytes, 5000, result_max=1000)
        assert code == 1 and data is None
        assert meta["ok"] is False and meta["traceback"] is None
        assert "pickles to more than result_max (1000 bytes)" in meta["error"]
        assert "result_max" in out
        with pytest.raises(JobError, match="result_max"):
            load_result(meta, b"", 4)

    def test_an_exception_over_result_max_is_not_kept_and_its_traceback_is_cut(self, tmp_path):
        def fail(size):
            raise ValueError(b"x" * size)

        code, meta, data, out = run_call(tmp_path, fail, 5_000_000, result_max=1 << 20)
        assert code == 1 and data is None and meta["size"] == 0
        assert meta["ok"] is False and meta["type"] == "ValueError"
        assert "pickles to more than result_max (1.0 MiB)" in meta["error"]
        text = meta["traceback"]
        assert len(text) <= 64 * 1024 + 100 and "characters cut ..." in text
        assert text.startswith("Traceback (most recent call last):") and "in fail" in text
        assert (tmp_path / "job" / "result.json").stat().st_size < 100_000
        assert len(out) < 100_000, "the log gets the cut traceback too"
        with pytest.raises(RemoteError) as err:
            load_result(meta, b"", 5)
        assert err.value.type_name == "ValueError" and err.value.traceback_text == text

    def test_an_exception_under_result_max_is_kept_whole(self, tmp_path):
        def fail(size):
            raise ValueError("y" * size)

        code, meta, data, _ = run_call(tmp_path, fail, 100, result_max=1 << 20)
        assert code == 1 and data is not None and meta["size"] == len(data) and meta["error"] is None
        assert "characters cut" not in meta["traceback"]
        with pytest.raises(ValueError, match="y" * 100):
            load_result(meta, data, 6)

    def test_a_result_that_does_not_pickle(self, tmp_path):
        code, meta, _, _ = run_call(tmp_path, threading.Lock)
        assert code == 1 and "cannot be pickled" in meta["error"]

    def test_a_module_beside_the_notebook_is_found(self, tmp_path, monkeypatch):
        notebook = tmp_path / "notebook"
        notebook.mkdir()
        (notebook / "helpers_beside.py").write_text("def triple(x):\n    return 3 * x\n")
        monkeypatch.syspath_prepend(str(notebook))
        import helpers_beside

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        code, meta, data, out = run_call(tmp_path, helpers_beside.triple, 4, cwd=elsewhere)
        assert code == 0, out
        assert load_result(meta, data) == 12

    def test_the_runners_own_directory_shadows_nothing(self, tmp_path):
        def first_path():
            import sys

            return sys.path

        code, meta, data, _ = run_call(tmp_path, first_path)
        runner_dir = os.path.dirname(pycall._RUNNER)
        assert code == 0 and runner_dir not in load_result(meta, data)

    def test_a_call_pickled_by_another_python_version_is_refused(self, tmp_path):
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        payload = pickle.loads(pack_call(add, (1, 2)))
        (job_dir / "call.pkl").write_bytes(pickle.dumps({**payload, "python": "3.9"}))
        done = subprocess.run(["/bin/sh", "-c", runner_command(sys.executable, job_dir, 1000)], capture_output=True,
                              text=True, timeout=300)
        meta = json.loads((job_dir / "result.json").read_text())
        assert done.returncode == 1 and "pickled by Python 3.9" in meta["error"]


def test_a_remote_error_pickles_with_its_attributes():
    err = RemoteError("job 3 raised X", type_name="pkg.X", traceback_text="Traceback ...", job_id=3)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.type_name, again.traceback_text, again.job_id) == ("job 3 raised X", "pkg.X", "Traceback ...", 3)
    assert isinstance(again, JobError)
