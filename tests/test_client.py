"""The remote client against a real server on loopback: ``RemoteSession`` and ``RemoteJob``
behave like ``Certificate`` and ``Job`` (same methods, same exceptions), network and TLS
failures become ``JobberError`` naming the server and the cause, and the CLI works through
``--server`` unchanged. What a remote session does exactly as a local one (make, run, tail,
follow, stop, wait) is asserted once for every kind of session in tests/contract/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import jobber
from conftest import _stop_everything
from jobber import Certificate, CertificateError, Job, JobberError, JobError, JobNotFound, LimitError
from jobber._backends.remote.backend import RemoteBackend
from polling import poll
from serve_for_notebooks import ServerProcess


@pytest.fixture
def identity(tenant):
    """``tenant`` (tests/conftest.py), whom ``session`` connects as: the name these tests use."""
    return tenant


class TestRemoteSession:
    def test_connect_knows_the_identity(self, session, identity, pki):
        assert session.hash() == Certificate.from_pem(identity[0].read_bytes(), pki.root).hash()
        assert session.subject.startswith("CN=user")
        assert session.bytes() == identity[0].read_bytes()
        assert session.url in repr(session)

    @pytest.mark.parametrize("job_id", ["abc", -1, 0, True, 1.5])
    def test_ids_that_are_not_ids_are_not_found(self, session, job_id):
        with pytest.raises(JobNotFound):
            session.get_job(job_id)

    def test_generate_job_id_is_not_offered(self, session):
        with pytest.raises(JobError, match="not supported remotely"):
            session.generate_job_id()


class TestRemoteJob:
    def test_bad_env_and_cwd_are_refused_before_the_server_is_asked(self, session):
        with pytest.raises(JobError, match="not a variable name"):
            session.new_job("true", env={"1X": "v"})
        with pytest.raises(JobError, match="chosen by its operator"):
            session.new_job("true", cwd="/tmp")
        assert session.get_jobs() == []

    def test_user_and_cwd_are_the_operators_choice(self, session):
        with pytest.raises(JobError, match="operator"):
            session.new_job("true").start(user="root")

    def test_tail_fills_buffers_larger_than_one_request(self, session):
        job = session.new_job("head -c 3000000 /dev/zero | tr '\\0' x; printf END")
        job.start()
        job.wait(30)
        buf = bytearray(4 << 20)
        assert job.tail(buf) == 3_000_003
        assert bytes(buf[2_999_998:3_000_003]) == b"xxEND"
        assert job.tail(buf, -(3 << 20)) == 3_000_003

    def test_closing_a_heartbeat_follow_stops_its_reader(self, session):
        job = session.new_job("sleep 30")
        job.start()
        chunks = job.follow(heartbeat=0.05)
        assert next(chunks) == b""
        chunks.close()
        deadline = time.monotonic() + 5
        while any(t.name == f"jobber-follow-{job.id}" for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(t.name == f"jobber-follow-{job.id}" for t in threading.enumerate())
        job.stop(grace=0)

    def test_slurm_options_are_refused_remotely(self, session):
        with pytest.raises(JobError, match="cannot be used remotely"):
            session.new_job("true", backend="slurm", partition="debug")

    def test_follow_of_an_unknown_job_raises_at_once(self, session):
        job = session.new_job("true")
        other = Job(RemoteBackend(session, {"id": job.id + 1000, "command": "", "limits": {}}))
        with pytest.raises(JobNotFound):
            next(other.follow())

    def test_closing_a_follow_closes_its_connection(self, session, server):
        job = session.new_job("echo hi; sleep 60")
        job.start()
        chunks = job.follow()
        assert next(chunks) == b"hi\n"
        connections = _server_sockets(server)
        chunks.close()
        assert poll(lambda: _server_sockets(server) < connections)
        job.stop(grace=0)


class Restartable:
    """A jobber server on one port that a test stops and starts again (same jobs, same pool)."""

    def __init__(self, pki, jobs) -> None:
        self.pki, self.jobs = pki, jobs
        self.servers = [ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs).start()]

    def session(self):
        cert, key = self.pki.client()
        return jobber.connect(self.servers[0].url, cert=str(cert), key=str(key), ca=str(self.pki.server_ca), timeout=20)

    def restart(self) -> None:
        first = self.servers[0]
        first.stop()
        self.servers.append(ServerProcess(self.pki.server_cert, self.pki.server_key, self.pki.root, self.jobs,
                                          port=first.port).start())

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        _stop_everything(self.jobs)


@pytest.fixture
def restartable(pki, tmp_path):
    server = Restartable(pki, tmp_path / "jobs")
    yield server
    server.close()


class TestFollowAcrossRestart:
    def test_follow_resumes_when_the_server_comes_back(self, restartable, gate):
        job = restartable.session().new_job(f"echo one; while [ ! -e {gate} ]; do sleep 0.02; done; echo two")
        job.start()
        chunks = job.follow()
        assert next(chunks) == b"one\n"
        restartable.restart()
        gate.touch()
        assert b"".join(chunks) == b"two\n"  # nothing lost, nothing twice

    def test_follow_of_a_retried_job_from_its_first_byte_resumes_where_it_was(self, restartable, gate):
        # follow(0) reads attempt 1, the marker, attempt 2: after a restart mid-attempt 2
        # it goes on from where it was in that whole stream, not from attempt 2's offset.
        shared = tempfile.mkdtemp(dir="/var/tmp", prefix="jobber-test-")
        os.chmod(shared, 0o777)  # the tenant's uid makes the flag
        flag = os.path.join(shared, "second")
        try:
            job = restartable.session().new_job(
                f"if [ -e {flag} ]; then echo second; while [ ! -e {gate} ]; do sleep 0.02; done; echo tail2; "
                f"else touch {flag}; echo first; exit 1; fi", retries=1)
            job.start()
            poll(lambda: job.status().attempt == 2 and job.status().state == "running", 30)
            chunks = job.follow(0)
            seen = b""
            while not seen.endswith(b"second\n"):
                seen += next(chunks)
            assert seen.startswith(b"first\n") and b"attempt 2 starts in " in seen, seen
            restartable.restart()
            gate.touch()
            assert b"".join(chunks) == b"tail2\n"  # nothing lost, nothing twice
        finally:
            for name in os.listdir(shared):
                os.unlink(os.path.join(shared, name))
            os.rmdir(shared)


def _server_sockets(server: ServerProcess) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        try:
            count += os.readlink(f"/proc/{server.pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass  # closed between the listing and the read
    return count


class TestNetworkErrors:
    def test_connection_refused(self, pki, identity):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        with pytest.raises(JobberError, match=f"cannot connect to the jobber server at {url}: connection refused"):
            jobber.connect(url, cert=str(identity[0]), key=str(identity[1]), ca=str(pki.server_ca))

    def test_timeout(self, pki, identity):
        with socket.socket() as silent:  # accepts TCP connections, never says a word
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"https://127.0.0.1:{silent.getsockname()[1]}"
            with pytest.raises(JobberError, match=f"{url} did not answer within 0.3 s"):
                jobber.connect(url, cert=str(identity[0]), key=str(identity[1]), ca=str(pki.server_ca), timeout=0.3)

    def test_not_tls(self, pki, identity):
        with socket.socket() as plain:
            plain.bind(("127.0.0.1", 0))
            plain.listen()
            url = f"https://127.0.0.1:{plain.getsockname()[1]}"

            def answer_in_plain_http() -> None:
                conn, _ = plain.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

            thread = threading.Thread(target=answer_in_plain_http)
            thread.start()
            with pytest.raises(JobberError, match="does not speak TLS"):
                jobber.connect(url, cert=str(identity[0]), key=str(identity[1]), ca=str(pki.server_ca))
            thread.join()

    def test_server_certificate_not_trusted(self, pki, server, identity):
        with pytest.raises(JobberError, match="cannot verify the certificate of the jobber server.*pass ca="):
            jobber.connect(server.url, cert=str(identity[0]), key=str(identity[1]), ca=str(pki.root / "pool" / "00.pem"))

    def test_client_certificate_refused(self, pki, server, tmp_path):
        from certfactory import CertFactory

        factory = CertFactory(tmp_path)
        cert, key = factory.leaf("mallory", issuer=factory.ca("Other CA")).write(tmp_path)
        with pytest.raises(JobberError, match=f"the jobber server at {server.url} does not accept this certificate "
                                              ".*: neither the certificate nor its issuer is in the server's pool"):
            jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca))

    def test_unreadable_certificate(self, pki, server, tmp_path):
        with pytest.raises(CertificateError, match="no such file") as caught:
            jobber.connect(server.url, cert=str(tmp_path / "nope.pem"), key=str(tmp_path / "nope.key"))
        assert caught.value.path == str(tmp_path / "nope.pem")

    def test_key_of_another_certificate(self, pki, server):
        cert, _ = pki.client()
        _, key = pki.client()
        with pytest.raises(CertificateError, match="cannot use the client certificate"):
            jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca))

    @pytest.mark.parametrize("url", ["http://127.0.0.1:8443", "127.0.0.1:8443", "https://"])
    def test_only_https_urls(self, url, identity):
        with pytest.raises(JobberError, match="not an https URL"):
            jobber.connect(url, cert=str(identity[0]), key=str(identity[1]))


class TestServerErrorsMapBack:
    @pytest.mark.parametrize(("status", "kind", "expected"), [
        (404, "JobNotFound", JobNotFound),
        (404, None, JobNotFound),
        (400, "LimitError", LimitError),
        (400, "JobError", JobError),
        (400, "JobberError", JobberError),
        (403, "CertificateError", CertificateError),
        (409, "JobError", JobError),
        (413, "JobberError", JobError),
        (500, "JobberError", JobberError),
    ])
    def test_classes(self, session, status, kind, expected):
        body = f'{{"error": "what went wrong", "type": "{kind}"}}' if kind else '{"error": "what went wrong"}'
        error = session.transport.api_error(status, body.encode(), 7)
        assert type(error) is expected
        assert "what went wrong" in str(error)

    def test_a_server_limit_error_is_a_limit_error(self, session):
        with pytest.raises(LimitError, match="not a size"):
            session.transport.json("POST", "/v1/jobs", {"command": "true", "limits": {"memory": "12Q"}})

    def test_a_body_that_is_not_json(self, session):
        error = session.transport.api_error(502, b"<html>bad gateway</html>", None)
        assert type(error) is JobberError and "502" in str(error)


class TestCli:
    """The CLI takes a RemoteSession where it takes a Certificate: nothing else changes."""

    def run(self, server, pki, identity, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobber", "--server", server.url, "--cert", str(identity[0]),
             "--key", str(identity[1]), "--ca", str(pki.server_ca), *args],
            capture_output=True, text=True, timeout=60)

    def test_run_follow_ls_logs(self, server, pki, identity):
        ran = self.run(server, pki, identity, "run", "--follow", "--", "echo remote hello; exit 5")
        assert (ran.returncode, ran.stdout) == (5, "remote hello\n"), ran.stderr
        listed = self.run(server, pki, identity, "ls")
        assert "failed (code 5)" in listed.stdout and "remote" in listed.stdout
        assert self.run(server, pki, identity, "logs", "1").stdout == "remote hello\n"

    def test_errors_are_one_line(self, server, pki, identity):
        missing = self.run(server, pki, identity, "status", "99")
        assert missing.returncode == 1
        assert missing.stderr.strip() == "jobber: error: no job 99 for this certificate (GET /v1/jobs lists yours)"
