"""The two supervisors write the same status.json: the C launcher's hand-written JSON
and the Python supervisor's ``json.dumps`` stay consistent.

The compiled launcher (``launcher.c``) writes the "running" status itself, with a
``snprintf`` format; ``supervisor.py --launch`` writes it with ``json.dumps``; the outcome
is always written by the Python half (``supervisor.py --finish``). Real jobs run under
each; their files must parse, hold the same keys with the same JSON types, and hold only
keys that ``JobStatus`` or the local backend reads. The sources are compared too, so a key
added on one side only fails here even before a job runs.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from jobber import JobError, JobStatus
from jobber._backends.local import backend as local_backend
from jobber._backends.local import launcher_build as _launcher
from jobber._backends.local.supervisor import process_start_time
from polling import wait_for

LOCAL = Path(local_backend.__file__).parent
LAUNCHER_C = LOCAL / "launcher.c"
SUPERVISOR_PY = LOCAL / "supervisor.py"

# What readers of status.json understand: JobStatus's fields, plus what the local backend
# reads to tell a live supervisor from a dead one; "error" becomes JobStatus.note.
STATUS_FIELDS = set(JobStatus.__dataclass_fields__) - {"limits"}
RUNNING_KEYS = {"state", "pid", "started_at", "supervisor_pid", "supervisor_start"}
UNDERSTOOD_RUNNING = STATUS_FIELDS | {"supervisor_pid", "supervisor_start"}
UNDERSTOOD_FINAL = STATUS_FIELDS | {"error"}

# Characters that need escaping in JSON (and a non-ASCII one) for paths and variables.
AWKWARD = 'q"uote b\\ack\nnew é'


def use_launcher(monkeypatch: pytest.MonkeyPatch, kind: str) -> list[str]:
    """Make the next job use this supervisor; the command prefix it will run."""
    if kind == "python":
        monkeypatch.setenv("JOBBER_LAUNCHER", "python")
    else:
        monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    _launcher.reset()
    prefix = _launcher.launcher_command("JOB_DIR")
    is_python = prefix[0] == sys.executable and "--launch" in prefix
    if kind == "compiled" and is_python:
        pytest.skip("no compiled launcher on this host (no C compiler): only the Python supervisor runs")
    assert is_python == (kind == "python"), prefix
    return prefix


@pytest.fixture(autouse=True)
def forget_the_launcher():
    yield
    _launcher.reset()


def load_strict(raw: bytes) -> dict:
    """status.json as JSON: UTF-8, no NaN/Infinity, no lone surrogates, an object."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    data = json.loads(raw.decode("utf-8"), parse_constant=refuse)
    assert isinstance(data, dict), raw

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for text in strings(data):
        text.encode("utf-8")  # a lone surrogate (undecodable bytes passed through) fails here
    return data


def shape(data: dict) -> dict[str, str]:
    """Each key's JSON type (int and float told apart, as Python readers see them)."""
    return {key: type(value).__name__ for key, value in data.items()}


def log_of(job) -> bytes:
    buf = bytearray(65536)
    return bytes(buf[: job.tail(buf)])


def status_file(job) -> bytes:
    return (Path(job.path) / "status.json").read_bytes()


def run_to_running(store, monkeypatch, kind: str, command: str = "sleep 30", **new_job):
    """Start ``command`` under this supervisor; the job and its running status.json."""
    prefix = use_launcher(monkeypatch, kind)
    job = store.new_job(command, **new_job)
    job.start()
    raw = wait_for(lambda: (r := status_file(job)) and load_strict(r)["state"] == "running" and r,
                   10, "the running status")
    running = load_strict(raw)
    # The resident half that wrote it is the one chosen: the C binary, or supervisor.py.
    with open(f"/proc/{running['supervisor_pid']}/cmdline", "rb") as f:
        argv = [part.decode() for part in f.read().split(b"\0") if part]
    if kind == "compiled":
        assert argv[0] == prefix[0], argv
    else:
        assert "--launch" in argv and str(SUPERVISOR_PY) in argv, argv
    return job, running


class TestTheRunningStatus:
    def test_both_launchers_write_the_same_keys_with_the_same_types(self, store, monkeypatch):
        seen = {}
        for kind in ("compiled", "python"):
            job, running = run_to_running(store, monkeypatch, kind)
            try:
                assert set(running) == RUNNING_KEYS, (kind, running)
                assert set(running) <= UNDERSTOOD_RUNNING, (kind, running)
                seen[kind] = shape(running)
                # The values mean what the readers take them to mean.
                assert running["state"] == "running"
                assert running["pid"] == job.status().pid == int((Path(job.path) / "pid").read_text())
                assert job.status().state == "running", (kind, job.status())
                assert running["supervisor_start"] == process_start_time(running["supervisor_pid"]), (
                    f"{kind}: supervisor_start is not the start time the backend's liveness check reads"
                )
                assert abs(running["started_at"] - job.status().started_at.timestamp()) < 1e-6
            finally:
                job.stop(grace=5)
        assert seen["compiled"] == seen["python"], seen

    def test_both_launchers_end_a_stopped_job_with_the_same_keys_and_types(self, store, monkeypatch):
        finals = {}
        for kind in ("compiled", "python"):
            job, _running = run_to_running(store, monkeypatch, kind)
            status = job.stop(grace=5)
            assert status.state == "stopped", (kind, status)
            finals[kind] = load_strict(status_file(job))
            assert set(finals[kind]) <= UNDERSTOOD_FINAL, (kind, finals[kind])
        assert shape(finals["compiled"]) == shape(finals["python"]), finals
        assert finals["compiled"]["state"] == finals["python"]["state"] == "stopped"

    def test_both_launchers_end_an_exited_job_with_the_same_keys_and_types(self, store, monkeypatch):
        finals = {}
        for kind in ("compiled", "python"):
            use_launcher(monkeypatch, kind)
            job = store.new_job("exit 3")
            job.start()
            assert job.wait(60).exit_code == 3
            finals[kind] = load_strict(status_file(job))
            assert set(finals[kind]) <= UNDERSTOOD_FINAL, (kind, finals[kind])
        assert shape(finals["compiled"]) == shape(finals["python"]), finals

    def test_both_launchers_record_a_failed_start_the_same_way(self, store, monkeypatch, tmp_path):
        """The job's working directory vanishes before it is entered: the child's error
        (which holds the path, awkward characters and all) goes into status.json."""
        finals = {}
        for kind in ("compiled", "python"):
            use_launcher(monkeypatch, kind)
            vanishing = tmp_path / f"{kind} {AWKWARD}"
            vanishing.mkdir()
            job = store.new_job("echo never", cwd=str(vanishing))
            real = local_backend.run_context

            def context_then_rmdir(*args, real=real, vanishing=vanishing, **kwargs):
                context = real(*args, **kwargs)
                vanishing.rmdir()
                return context

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(local_backend, "run_context", context_then_rmdir)
                with pytest.raises(JobError, match=f"job {job.id} did not start"):
                    job.start()
            finals[kind] = load_strict(status_file(job))
            assert set(finals[kind]) <= UNDERSTOOD_FINAL, (kind, finals[kind])
            assert finals[kind]["state"] == "failed"
            # The C child writes the path as it is; Python's OSError shows its repr.
            error = finals[kind]["error"]
            assert str(vanishing) in error or repr(str(vanishing)) in error, (kind, error)
            assert job.status().note == error
        assert shape(finals["compiled"]) == shape(finals["python"]), finals

    def test_awkward_characters_in_cwd_and_env_reach_the_job_and_keep_the_json_valid(
            self, store, monkeypatch, tmp_path):
        seen = {}
        for kind in ("compiled", "python"):
            cwd = tmp_path / f"{kind} {AWKWARD}"
            cwd.mkdir()
            job, running = run_to_running(
                store, monkeypatch, kind, """printf '%s\\0' "$(pwd -P)" "$AWKWARD"; exec sleep 30""",
                env={"AWKWARD": AWKWARD}, cwd=str(cwd))
            try:
                assert set(running) == RUNNING_KEYS, (kind, running)
                seen[kind] = shape(running)
                expected = f"{cwd}\0{AWKWARD}\0".encode()
                wait_for(lambda job=job, expected=expected: log_of(job) == expected, 10,
                         f"{kind}: the job's pwd and $AWKWARD in its log")
                spec = load_strict((Path(job.path) / "spec.json").read_bytes())
                assert spec["cwd"] == str(cwd) and spec["env"]["AWKWARD"] == AWKWARD
            finally:
                status = job.stop(grace=5)
            assert status.state == "stopped"
            load_strict(status_file(job))
        assert seen["compiled"] == seen["python"], seen


# --- the sources -------------------------------------------------------------------------

def _c_format_of_running_status() -> str:
    """The C launcher's status.json format: adjacent string literals joined, unescaped."""
    source = LAUNCHER_C.read_text()
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    literal = r'"(?:[^"\\\n]|\\.)*"'
    formats = []
    for run in re.finditer(rf"{literal}(?:\s*{literal})*", source):
        parts = re.findall(literal, run.group(0))
        text = "".join(p[1:-1] for p in parts)
        text = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), text)
        if '"state": "running"' in text:
            formats.append(text)
    assert len(formats) == 1, f"expected one running-status format in {LAUNCHER_C}, found {formats}"
    return formats[0]


def _python_running_status_keys() -> set[str]:
    """The keys of the dict literal supervisor.py writes with "state": "running"."""
    tree = ast.parse(SUPERVISOR_PY.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            pairs = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
            state = pairs.get("state")
            if isinstance(state, ast.Constant) and state.value == "running":
                assert len(pairs) == len(node.keys), "the running status dict has a non-literal key"
                found.append(set(pairs))
    assert len(found) == 1, f"expected one running-status dict in {SUPERVISOR_PY}, found {found}"
    return found[0]


class TestTheSources:
    def test_the_c_format_and_the_python_dict_name_the_same_keys(self):
        c_keys = set(re.findall(r'"(\w+)":', _c_format_of_running_status()))
        py_keys = _python_running_status_keys()
        assert c_keys == py_keys, f"launcher.c writes {sorted(c_keys)}, supervisor.py {sorted(py_keys)}"
        assert c_keys == RUNNING_KEYS
        assert c_keys <= UNDERSTOOD_RUNNING

    def test_the_c_format_is_json_once_filled_in(self):
        fmt = _c_format_of_running_status()
        conversions = re.findall(r"%[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|z|j|t)?[diouxXfeEgGsc%]", fmt)
        assert conversions, fmt
        # Every value the C side fills in is a bare number: none sits inside quotes, so
        # the C launcher writes no string of the job's (cwd, env, command) into JSON.
        values = dict(re.findall(r'"(\w+)":\s*("(?:[^"\\]|\\.)*"|[^,}]+)', fmt))
        assert set(values) == RUNNING_KEYS, values
        for key, value in values.items():
            if value.startswith('"'):
                assert "%" not in value, f"launcher.c writes a string into status.json: {key}: {value}"
            else:
                assert value.strip() in conversions, f"launcher.c writes {key}: {value}"
        filled = fmt
        for conversion in conversions:
            filled = filled.replace(conversion, "1.5" if conversion == "%s" else "7", 1)
        assert shape(load_strict(filled.encode())) == {
            "state": "str", "pid": "int", "started_at": "float", "supervisor_pid": "int", "supervisor_start": "int"}

    def test_the_c_launcher_writes_no_other_json(self):
        """Besides the running status it writes only the plain-text pid file; the
        outcome, with the error text that may hold the cwd, is written by Python."""
        source = re.sub(r"/\*.*?\*/", "", LAUNCHER_C.read_text(), flags=re.DOTALL)
        written = re.findall(r'write_file\(\s*job_dir\s*,\s*"([^"]+)"', source)
        assert sorted(written) == ["pid", "status.json"], written
        assert source.count("write_file(") == len(written) + 1  # the calls, and the definition
        assert '"--failed"' in source  # a failed exec's message goes to supervisor.py as an argument
