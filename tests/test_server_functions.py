"""Function jobs on a real ``jobber serve`` (root, a uid per tenant) over mTLS on loopback.

The client pickles the call; the server stores its bytes and never unpickles them (a
payload whose unpickling creates a file proves it: the file appears only once the job,
as the tenant's uid, has run); the result comes back to its owner only (another tenant
gets 404, as for a job that never existed). Interpreters: ``python3`` is an allowed venv
of the host's Python with cloudpickle (``job_python``); a fake ``python3.9`` and a venv
without cloudpickle are refused before any job is made, saying why; a path the operator
did not allow is refused. A call over the cap is a 413 sentence; a result survives a
server restart.
"""

from __future__ import annotations

import http.client
import os
import pickle
import shutil
import stat
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import jobber
from jobber._backends.remote.session import MAX_CALL_BYTES as CLIENT_CALL_CAP
from jobber._server.api_limits import MAX_CALL_BYTES
from serve_for_notebooks import Api, ServerProcess, job_python

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a uid per tenant needs the server to run as root"),
    pytest.mark.skipif(job_python() is None, reason="the host's /usr/bin/python3 is not this Python's major.minor"),
]

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def add(a, b):
    return a + b


def square(x):
    return x * x


def fails():
    raise ValueError("the model diverged")


def big(n):
    return bytes(range(256)) * (n // 256)


def wait_for(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


@pytest.fixture(scope="module", autouse=True)
def by_value():
    """This module's functions travel by value, as a notebook's do (a job cannot import it)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class _Touch:
    """Unpickling it creates a file (``open(path, "w")``): proof of who unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def pythons():
    """A fake ``python3.9`` (it says it is 3.9, with cloudpickle) and a venv without cloudpickle."""
    base = Path(tempfile.mkdtemp(prefix="jobber-pythons-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    fake = base / "python3.9"
    fake.write_text("#!/bin/sh\necho '{\"version\": [3, 9], \"cloudpickle\": \"3.1.3\"}'\n")
    fake.chmod(0o755)
    bare = base / "bare"
    os.symlink("/usr/bin/python3", base / "python-bare")  # the host's, whatever it has
    import subprocess

    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    yield {"fake": fake, "bare": bare / "bin" / "python3"}
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def fn_server(pki, pythons, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("fn-server") / "jobs"
    proc = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs,
                         args=["--python", str(job_python()), "--python", str(pythons["fake"]),
                               "--python", str(pythons["bare"])]).start()
    yield proc
    proc.stop()
    assert "bug:" not in proc.log(), proc.log()[-3000:]


def _connect(pki, server, tenant):
    cert, key = tenant
    return jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=20)


@pytest.fixture
def alice(pki, fn_server):
    tenant = pki.client()
    with _connect(pki, fn_server, tenant) as session:
        session.api = Api(fn_server.url, *tenant, pki.server_ca)
        yield session


@pytest.fixture
def bob(pki, fn_server):
    tenant = pki.client()
    with _connect(pki, fn_server, tenant) as session:
        session.api = Api(fn_server.url, *tenant, pki.server_ca)
        yield session


def _multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {kind}\r\n\r\n"
                    .encode() + data + b"\r\n" for name, kind, data in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class TestRemoteExecutor:
    def test_submit_map_and_result_through_connect(self, alice):
        with alice.executor(limits=jobber.Limits(memory="256M")) as ex:
            future = ex.submit(add, 1, 2)
            assert future.result(timeout=60) == 3
            assert list(ex.map(square, [1, 2, 3], timeout=120)) == [1, 4, 9]
        job = future.job
        assert isinstance(job, jobber.Job) and job.status().state == "exited"
        assert alice.get_job(job.id).result() == 3  # again, from the server, as often as asked
        assert job.result_info()["ok"] is True and job.result_info()["type"] == "int"

    def test_an_exception_comes_back_as_itself_with_the_remote_traceback(self, alice):
        future = alice.executor().submit(fails)
        with pytest.raises(ValueError, match="the model diverged") as caught:
            future.result(timeout=60)
        assert "fails" in "\n".join(getattr(caught.value, "__notes__", []))
        assert future.job.status().state == "failed"

    def test_a_large_result_streams_back_whole(self, alice):
        size = 24 << 20
        assert alice.executor().submit(big, size).result(timeout=120) == bytes(range(256)) * (size // 256)

    def test_a_command_job_has_no_result(self, alice):
        job = alice.new_job("true")
        job.start()
        job.wait(30)
        with pytest.raises(jobber.JobError, match="command job"):
            job.result(timeout=30)
        assert job.result_info() is None
        reply = alice.api("GET", f"/v1/jobs/{job.id}/result")
        assert reply.status == 409 and "command job" in reply.json()["error"]

    def test_a_running_function_job_has_no_result_yet(self, alice, gate):
        future = alice.executor().submit(wait_for, str(gate))
        job = future.job
        reply = alice.api("GET", f"/v1/jobs/{job.id}/result")
        assert reply.status == 409 and "has not ended" in reply.json()["error"], reply.body
        gate.touch()
        assert future.result(timeout=60) == "done"

    def test_removing_the_job_removes_what_its_runner_left(self, alice, fn_server):
        token = uuid.uuid4().hex  # a call no other test's job made
        job = alice.executor().submit(str, token).job
        assert job.result(timeout=60) == token
        call = (fn_server.jobs_dir / alice.hash() / str(job.id) / "call.pkl").read_bytes()
        functions = [found for found in Path(_state_dir(fn_server)).glob(f"tenants/*/functions/{job.id}")
                     if (found / "call.pkl").read_bytes() == call]
        assert len(functions) == 1 and (functions[0] / "result.pkl").exists()
        job.remove()
        assert not functions[0].exists()


    def test_many_first_asks_at_once_get_the_same_result(self, alice):
        """The first asks copy the result into the job directory, concurrently: each whole."""
        from concurrent.futures import ThreadPoolExecutor

        from jobber._jobs.pycall import pack_call

        job = alice.new_function_job(pack_call(big, (8 << 20,)))
        job.start()
        assert job.wait(60).ended
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: alice.api("GET", f"/v1/jobs/{job.id}/result"), range(8)))
        assert {reply.status for reply in replies} == {200}
        assert {reply.json()["size"] for reply in replies} == {len(pickle.dumps(big(8 << 20)))}
        assert job.result(timeout=30) == big(8 << 20)

    def test_jobs_a_queue_admits_later_find_their_call(self, alice):
        """Admitted by the finisher of the job before (no request), each still has its call."""
        alice.set_queue("one-at-a-time", parallel=1)
        assert list(alice.executor(queue="one-at-a-time").map(add, [1, 2, 3], [1, 1, 1], timeout=180)) == [2, 3, 4]

    def test_a_rerun_runs_the_same_call_again(self, alice):
        job = alice.executor().submit(add, 20, 22).job
        assert job.result(timeout=60) == 42
        again = job.rerun()
        again.start()
        assert again.result(timeout=60) == 42 and again.id != job.id

    def test_pruning_removes_what_the_runners_left(self, alice, fn_server):
        token = uuid.uuid4().hex  # a call no other test's job made
        job = alice.executor().submit(str, token).job
        assert job.result(timeout=60) == token
        call = (fn_server.jobs_dir / alice.hash() / str(job.id) / "call.pkl").read_bytes()
        functions = [found for found in Path(_state_dir(fn_server)).glob(f"tenants/*/functions/{job.id}")
                     if (found / "call.pkl").read_bytes() == call]
        assert functions and job.id in alice.prune()
        assert not functions[0].exists()


def _state_dir(server: ServerProcess) -> Path:
    from serve_for_notebooks import shared_state_dir

    return server.state_dir or shared_state_dir()


class TestTheServerNeverUnpickles:
    def test_the_call_is_stored_as_sent_and_only_the_tenants_job_unpickles_it(self, bob, fn_server):
        marks = Path(tempfile.mkdtemp(prefix="jobber-unpickled-", dir="/var/tmp"))
        os.chmod(marks, 0o1777)  # the tenant's job may create the marker there
        marker = marks / "unpickled"
        try:
            payload = pickle.dumps(_Touch(str(marker)))
            job = bob.new_function_job(payload)
            call = fn_server.jobs_dir / bob.hash() / str(job.id) / "call.pkl"
            assert call.read_bytes() == payload  # stored as sent...
            assert not marker.exists()  # ...and not unpickled by the server
            job.start()
            job.wait(60)
            assert marker.exists(), "the job itself did not unpickle its call"
            owner = marker.stat().st_uid
            assert owner not in (0, os.geteuid()), f"unpickled as uid {owner}, not as the tenant's uid"
            with pytest.raises(AttributeError):  # the "call" was a file object, not (fn, args, kwargs)
                job.result(timeout=30)
        finally:
            shutil.rmtree(marks)

    def test_another_tenant_gets_404_for_a_result(self, alice, bob):
        job = alice.executor().submit(str, "secret").job
        assert job.result(timeout=60) == "secret"
        for path in (f"/v1/jobs/{job.id}/result", f"/v1/jobs/{job.id}/result/pickle"):
            theirs, never = bob.api("GET", path), bob.api("GET", path.replace(f"/{job.id}/", "/999999/"))
            assert theirs.status == never.status == 404
            assert theirs.json() == {**never.json(), "error": never.json()["error"].replace("999999", str(job.id)),
                                     "job_id": job.id}
        with pytest.raises(jobber.JobNotFound):
            bob.get_job(job.id)


class TestInterpreters:
    def test_a_version_mismatch_is_refused_before_the_job_exists(self, alice):
        before = len(alice.get_jobs())
        with pytest.raises(jobber.JobError, match=rf"Python 3\.9, but this client runs Python {HERE}"):
            alice.executor(python="python3.9").submit(abs, -1)
        assert len(alice.get_jobs()) == before

    def test_an_interpreter_without_cloudpickle_is_refused_with_the_fix(self, alice, pythons):
        with pytest.raises(jobber.JobError, match=r"cannot import cloudpickle.*-m pip install cloudpickle"):
            alice.executor(python=str(pythons["bare"])).submit(abs, -1)

    @pytest.mark.parametrize("python", ["/tmp/evil", "/usr/bin/../../var/tmp/python3", "../python3", "sh -c id",
                                        "python3; id"])
    def test_a_path_the_operator_did_not_allow_is_refused(self, alice, python):
        reply_like = pytest.raises(jobber.JobError, match="this server allows|not an interpreter's name")
        with reply_like:
            alice.executor(python=python).submit(abs, -1)

    def test_python_and_result_max_belong_to_function_jobs(self, alice):
        reply = alice.api("POST", "/v1/jobs", {"command": "true", "python": "python3"})
        assert reply.status == 400 and "function job" in reply.json()["error"]

    def test_the_client_must_say_its_version(self, alice):
        body, kind = _multipart([("job", "application/json", b'{"start": false}'),
                                 ("call", "application/octet-stream", b"x")])
        reply = alice.api("POST", "/v1/jobs", raw=body, headers={"Content-Type": kind})
        assert reply.status == 400 and "client_python" in reply.json()["error"]


class TestCallCap:
    def test_a_call_over_the_cap_is_a_413_sentence(self, alice):
        body, kind = _multipart([("job", "application/json", f'{{"client_python": "{HERE}"}}'.encode()),
                                 ("call", "application/octet-stream", b"\0" * (MAX_CALL_BYTES + 1))])
        reply = alice.api("POST", "/v1/jobs", raw=body, headers={"Content-Type": kind}, timeout=120)
        assert reply.status == 413
        assert "64 MiB" in reply.json()["error"] and "as a file" in reply.json()["error"]

    def test_the_client_refuses_it_before_sending(self, alice):
        assert CLIENT_CALL_CAP == MAX_CALL_BYTES
        with pytest.raises(jobber.JobError, match="over the 64 MiB"):
            alice.new_function_job(b"\0" * (MAX_CALL_BYTES + 1))

    def test_a_malformed_multipart_body_is_a_400(self, alice):
        body, kind = _multipart([("call", "application/octet-stream", b"x")])
        reply = alice.api("POST", "/v1/jobs", raw=body, headers={"Content-Type": kind})
        assert reply.status == 400 and "expected the part 'job'" in reply.json()["error"]
        reply = alice.api("POST", "/v1/jobs", raw=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
        assert reply.status == 400


def test_a_result_survives_a_server_restart(pki, tmp_path):
    jobs = tmp_path / "jobs"
    server = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs).start()
    tenant = pki.client()
    try:
        with _connect(pki, server, tenant) as session:
            job = session.executor().submit(divmod, 17, 5).job
            assert job.result(timeout=60) == (3, 2)
        server.stop()
        server = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs, port=server.port).start()
        with _connect(pki, server, tenant) as session:
            assert session.get_job(job.id).result(timeout=30) == (3, 2)
    finally:
        server.stop()
    assert stat.S_IMODE(os.stat(jobs / session.hash() / str(job.id)).st_mode) == 0o700  # still the server's alone


def _memory_peak(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_result_is_streamed_not_held(pki, tmp_path):
    """A 96 MiB result goes through the server (imported into the job directory, then sent)
    without the server ever holding it: its peak memory does not grow by the result's size."""
    server = ServerProcess(pki.server_cert, pki.server_key, pki.root, tmp_path / "jobs").start()
    try:
        with _connect(pki, server, pki.client()) as session:
            size = 96 << 20
            job = session.executor().submit(big, size).job
            job.wait(120)
            before = _memory_peak(server.proc.pid)
            assert len(job.result(timeout=60)) == size, server.log()[-3000:]
            assert _memory_peak(server.proc.pid) - before < size // 2
    finally:
        server.stop()
    assert "bug:" not in server.log(), server.log()[-3000:]


def test_an_http_client_sees_the_pickle_as_bytes(alice):
    """The pickle route streams the file as the job wrote it (Content-Length, octet-stream)."""
    job = alice.executor().submit(list, range(3)).job
    assert job.result(timeout=60) == [0, 1, 2]
    meta = alice.api("GET", f"/v1/jobs/{job.id}/result").json()
    assert meta["ok"] is True and meta["type"] == "list" and meta["id"] == job.id
    reply = alice.api("GET", f"/v1/jobs/{job.id}/result/pickle")
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/octet-stream"
    assert len(reply.body) == meta["size"] == int(reply.headers["Content-Length"])
    assert isinstance(reply.headers, http.client.HTTPMessage)


def test_a_single_tenant_server_running_jobs_as_another_user_refuses_function_jobs(pki, tmp_path):
    server = ServerProcess(pki.server_cert, pki.server_key, pki.root, tmp_path / "jobs", single_tenant=True).start()
    try:
        with _connect(pki, server, pki.client()) as session:
            with pytest.raises(jobber.JobError, match="cannot reach a function job's files"):
                session.executor().submit(add, 1, 2)
            assert session.get_jobs() == []
    finally:
        server.stop()


def test_a_large_result_is_unpickled_as_it_arrives(pki, fn_server, tmp_path):
    """The client holds a large result once (read from the socket into the result itself),
    not its bytes and then the result made from them: a client process's peak memory grows
    by little more than the result's size."""
    import subprocess
    import textwrap

    tenant = pki.client()
    size = 96 << 20
    with _connect(pki, fn_server, tenant) as session:
        job = session.executor().submit(big, size).job
        assert job.wait(120).state == "exited"
    cert, key = tenant
    code = textwrap.dedent(f"""
        import jobber
        def peak():
            return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        with jobber.connect({fn_server.url!r}, cert={str(cert)!r}, key={str(key)!r}, ca={str(pki.server_ca)!r}) as s:
            job = s.get_job({job.id})
            job.result_info()
            before = peak()
            value = job.result(timeout=120)
            print(len(value) == {size} and value[:256] == bytes(range(256)), peak() - before)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    whole, grown = done.stdout.split()
    assert whole == "True", done.stderr
    assert int(grown) < size * 1.4, f"the client's peak grew by {int(grown) >> 20} MiB for a {size >> 20} MiB result"
