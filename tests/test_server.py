"""The jobber server over a real TLS 1.3 connection on loopback: the API, its errors, logs
and follows, the job user, restarts, and the ``serve`` entry point.

Each module runs one server subprocess (``python -m jobber serve``) with its own jobs
directory; each test talks to it as a fresh identity, so tests never see each other's
jobs. At teardown every job is stopped, no cgroup may be left, and the server's log must
hold no "bug:" line (every 5xx is one).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl

import pytest

from jobber._errors import JobberError
from jobber._server.app import make_app, public_message, resolve_job_user, serve
from jobber._server.openapi import openapi_document
from polling import poll
from serve_for_notebooks import Api, ServerProcess

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="running jobs as another user needs root")


def wait_ended(api: Api, job_id: int) -> dict:
    reply = api("GET", f"/v1/jobs/{job_id}?wait=30")
    assert reply.status == 200, reply.body
    assert reply.json()["status"]["state"] not in ("created", "running"), reply.json()
    return reply.json()


def start(api: Api, command: str, **fields) -> dict:
    reply = api("POST", "/v1/jobs", {"command": command, **fields})
    assert reply.status == 201, reply.body
    return reply.json()


class TestJobs:
    def test_create_starts_the_job_by_default(self, api):
        job = start(api, "echo hello")
        assert job["command"] == "echo hello"
        assert job["status"]["state"] in ("running", "exited")
        assert wait_ended(api, job["id"])["status"]["state"] == "exited"
        assert api("GET", f"/v1/jobs/{job['id']}/log").body == b"hello\n"

    def test_created_job_starts_once(self, api):
        job = start(api, "true", start=False)
        assert job["status"]["state"] == "created"
        first = api("POST", f"/v1/jobs/{job['id']}/start")
        assert first.status == 200
        assert first.json()["status"]["state"] in ("running", "exited")
        again = api("POST", f"/v1/jobs/{job['id']}/start")
        assert again.status == 409
        assert again.json()["type"] == "JobError"
        assert "already started" in again.json()["error"]

    def test_list_shows_own_jobs_in_id_order(self, api):
        ids = [start(api, f"echo {n}", start=False)["id"] for n in range(3)]
        listed = api("GET", "/v1/jobs").json()["jobs"]
        assert [job["id"] for job in listed] == ids
        assert [job["command"] for job in listed] == ["echo 0", "echo 1", "echo 2"]

    def test_limits_are_parsed_and_kept(self, api):
        job = start(api, "true", limits={"cpu": 0.5, "memory": "64M", "pids": 20, "io_write_bps": "1M"}, start=False)
        assert job["limits"] == {"cpu": 0.5, "memory": 64 << 20, "pids": 20, "io_read_bps": None,
                                 "io_write_bps": 1 << 20, "require_isolation": False}

    def test_stop_ends_a_running_job(self, api):
        job = start(api, "sleep 60")
        reply = api("POST", f"/v1/jobs/{job['id']}/stop", {"grace": 1})
        assert reply.status == 200
        assert reply.json()["status"]["state"] == "stopped"

    def test_stop_of_a_job_never_started_is_a_conflict(self, api):
        job = start(api, "true", start=False)
        reply = api("POST", f"/v1/jobs/{job['id']}/stop")
        assert reply.status == 409
        assert "never started" in reply.json()["error"]

    def test_wait_returns_the_status_once_ended(self, api):
        job = start(api, "exit 3")
        status = wait_ended(api, job["id"])["status"]
        assert (status["state"], status["exit_code"]) == ("failed", 3)

    def test_wait_returns_early_status_after_its_timeout(self, api):
        job = start(api, "true", start=False)
        assert api("GET", f"/v1/jobs/{job['id']}?wait=0.1").json()["status"]["state"] == "created"

    def test_identity_is_the_certificate_hash(self, pki, server):
        from jobber import Certificate

        cert, key = pki.client("carol")
        identity = Api(server.url, cert, key, pki.server_ca)("GET", "/v1/identity").json()
        assert identity == {"hash": Certificate.from_pem(cert.read_bytes(), pki.root).hash(), "subject": "CN=carol"}


class TestLog:
    def test_read_with_offset_and_length(self, api):
        job = start(api, "printf 0123456789")
        wait_ended(api, job["id"])
        reply = api("GET", f"/v1/jobs/{job['id']}/log?offset=2&length=5")
        assert (reply.body, reply.headers["X-Jobber-Offset"]) == (b"23456", "2")
        assert reply.headers["Content-Type"] == "application/octet-stream"

    def test_tail_reads_from_the_end(self, api):
        job = start(api, "printf 0123456789")
        wait_ended(api, job["id"])
        reply = api("GET", f"/v1/jobs/{job['id']}/log?tail=3")
        assert (reply.body, reply.headers["X-Jobber-Offset"]) == (b"789", "7")

    def test_reading_past_the_end_is_empty(self, api):
        job = start(api, "printf abc")
        wait_ended(api, job["id"])
        assert api("GET", f"/v1/jobs/{job['id']}/log?offset=100").body == b""

    def test_log_of_a_created_job_is_empty(self, api):
        job = start(api, "true", start=False)
        assert api("GET", f"/v1/jobs/{job['id']}/log").body == b""

    def test_follow_streams_output_as_it_is_written(self, api, gate):
        job = start(api, f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second")
        conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1")
        try:
            assert response.status == 200
            assert response.headers["X-Jobber-Offset"] == "0"
            # The job blocks until the gate opens, so this chunk can only come from a live stream.
            assert response.read1(1024) == b"first\n"
            gate.touch()
            assert response.read() == b"second\n"  # and the stream ends with the job
        finally:
            conn.close()

    def test_follow_from_the_tail(self, api):
        job = start(api, "printf 0123456789")
        wait_ended(api, job["id"])
        conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1&tail=4")
        try:
            assert (response.read(), response.headers["X-Jobber-Offset"]) == (b"6789", "6")
        finally:
            conn.close()

    def test_follow_with_length_ends_after_that_many_bytes(self, api):
        job = start(api, "printf 0123456789; sleep 60")
        conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1&offset=1&length=4")
        try:
            assert response.read() == b"1234"
        finally:
            conn.close()
        api("POST", f"/v1/jobs/{job['id']}/stop", {"grace": 0})

    def test_follow_delivers_a_large_log_whole(self, api):
        job = start(api, "head -c 3000000 /dev/urandom | od -An -v -tx1")
        wait_ended(api, job["id"])
        conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1")
        try:
            streamed = response.read()
        finally:
            conn.close()
        size = len(streamed)
        assert size > 8_000_000
        whole = b"".join(api("GET", f"/v1/jobs/{job['id']}/log?offset={offset}&length=1048576").body
                         for offset in range(0, size, 1 << 20))
        assert streamed == whole


BAD_REQUESTS = [
    pytest.param("POST", "/v1/jobs", b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param("POST", "/v1/jobs", b"[1, 2]", 400, "JSON object", id="not-an-object"),
    pytest.param("POST", "/v1/jobs", b"", 400, "body is empty", id="empty-body"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "colour": 1}', 400, "unknown field(s) 'colour'", id="unknown-field"),
    pytest.param("POST", "/v1/jobs", b'{"limits": {}}', 400, "missing field(s) command", id="missing-command"),
    pytest.param("POST", "/v1/jobs", b'{"command": "  "}', 400, "non-empty", id="blank-command"),
    pytest.param("POST", "/v1/jobs", b'{"command": "a\\u0000b"}', 400, "NUL", id="nul-in-command"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"memory": "12Q"}}', 400, "not a size", id="bad-size"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"memory": "9' + b"9" * 400 + b'G"}}', 400, "8 EiB", id="huge-size"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"cpu": true}}', 400, "limits.cpu", id="bool-cpu"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"cpu": 5.5e307}}', 400, "more CPUs than any machine", id="huge-cpu"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"cpu": "1e3"}}', 400, "not a number of CPUs", id="cpu-exponent"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"tpus": 1}}', 400, "unknown limit", id="unknown-limit"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": "lots"}', 400, "limits must be an object", id="limits-not-object"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "start": "yes"}', 400, "start must be", id="start-not-bool"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"cpu": NaN}}', 400, "not valid JSON", id="nan"),
    pytest.param("POST", "/v1/jobs", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON", id="deep-nesting"),
    pytest.param("POST", "/v1/jobs", b'{"command": "' + b"x" * (1 << 20) + b'"}', 413, "over 1048576 bytes", id="too-large"),
    pytest.param("GET", "/v1/jobs/1/log?offset=-1", None, 400, "tail=N", id="negative-offset"),
    pytest.param("GET", "/v1/jobs/1/log?offset=x", None, 400, "not a whole number", id="offset-not-int"),
    pytest.param("GET", "/v1/jobs/1/log?length=0", None, 400, "out of range", id="zero-length"),
    pytest.param("GET", "/v1/jobs/1/log?offset=1&tail=1", None, 400, "not both", id="offset-and-tail"),
    pytest.param("GET", "/v1/jobs/1/log?follow=maybe", None, 400, "use 1 or 0", id="bad-follow"),
    pytest.param("GET", "/v1/jobs/1/log?offset=1&offset=2", None, 400, "given 2 times", id="repeated-parameter"),
    pytest.param("GET", "/v1/jobs?colour=red", None, 400, "unknown query parameter", id="unknown-parameter"),
    pytest.param("GET", "/v1/jobs/1?wait=-1", None, 400, "seconds from 0", id="negative-wait"),
    pytest.param("GET", "/v1/jobs/abc", None, 400, "not a job id", id="non-integer-id"),
    pytest.param("GET", "/v1/jobs/%C2%B2", None, 400, "not a job id", id="unicode-digit-id"),
    pytest.param("GET", "/v1/jobs/0", None, 404, "no job 0", id="zero-id"),
    pytest.param("GET", "/v1/jobs/" + "9" * 30, None, 404, "no job", id="huge-id"),
    pytest.param("GET", "/v2/jobs", None, 404, "no such endpoint", id="unknown-route"),
    pytest.param("DELETE", "/v1/jobs", None, 405, "use GET, POST", id="wrong-method"),
    pytest.param("POST", "/v1/jobs/1/stop", b'{"grace": -1}', 404, "no job 1", id="stop-unknown-job"),
]


class TestErrors:
    @pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
    def test_bad_requests_get_a_json_error(self, api, method, path, body, status, message):
        reply = api(method, path, raw=body)
        assert reply.status == status, reply.body[:300]
        assert reply.headers["Content-Type"].startswith("application/json")
        error = reply.json()["error"]
        assert message in error
        assert "Traceback" not in error and "/tmp/" not in error and "jobber/" not in error

    def test_bad_stop_bodies(self, api):
        job = start(api, "true", start=False)
        for body, message in ((b'{"grace": -1}', "grace must be"), (b'{"grace": "soon"}', "grace must be"),
                              (b'{"force": true}', "unknown field(s) 'force'")):
            reply = api("POST", f"/v1/jobs/{job['id']}/stop", raw=body)
            assert (reply.status, message in reply.json()["error"]) == (400, True), reply.body

    def test_a_405_names_the_allowed_methods(self, api):
        assert api("PUT", "/v1/jobs/1/stop").headers["Allow"] == "POST"

    def test_start_failures_say_why_without_server_paths(self):
        assert public_message("cannot write /sys/fs/cgroup/memory/jobber/ab/3/memory.limit_in_bytes: EINVAL") == (
            "cannot write <path>: EINVAL")


class TestJobUser:
    @ROOT_ONLY
    def test_jobs_run_as_a_uid_of_the_tenant_in_its_home_by_default(self, api):
        job = start(api, "id -u; id -G; pwd; echo $HOME")
        wait_ended(api, job["id"])
        uid, groups, pwd, home = api("GET", f"/v1/jobs/{job['id']}/log").body.decode().splitlines()
        from jobber._server.tenant_uids import default_uid_range

        low, high = default_uid_range()  # found at start: outside every account and subuid range
        assert low <= int(uid) <= high and groups == uid  # gid the same number, no other group
        assert pwd == home and home.endswith(f"/tenants/{uid}/home"), (pwd, home)

    @ROOT_ONLY
    def test_single_tenant_jobs_run_as_nobody_in_slash(self, pki, tmp_path):
        with ServerProcess(pki.server_cert, pki.server_key, pki.root, tmp_path / "jobs", single_tenant=True) as proc:
            api = Api(proc.url, *pki.client(), pki.server_ca)
            job = start(api, "id -un; pwd")
            wait_ended(api, job["id"])
            assert api("GET", f"/v1/jobs/{job['id']}/log").body == b"nobody\n/\n"

    @ROOT_ONLY
    def test_job_user_root_when_the_operator_asks(self, pki, tmp_path):
        with ServerProcess(pki.server_cert, pki.server_key, pki.root, tmp_path / "jobs", job_user="root") as proc:
            cert, key = pki.client()
            api = Api(proc.url, cert, key, pki.server_ca)
            job = start(api, "id -u")
            wait_ended(api, job["id"])
            assert api("GET", f"/v1/jobs/{job['id']}/log").body == b"0\n"

    def test_unknown_job_user_is_refused(self):
        with pytest.raises(JobberError, match="no such user"):
            resolve_job_user("no-such-user-here")

    @pytest.mark.skipif(os.geteuid() == 0, reason="checks the server's own user when not root")
    def test_without_root_jobs_run_as_the_server_user(self):
        import pwd

        assert resolve_job_user(None) == (None, pwd.getpwuid(os.geteuid()).pw_name)
        with pytest.raises(JobberError, match="needs the server to run as root"):
            resolve_job_user("root")

    @ROOT_ONLY
    def test_default_job_user(self):
        assert resolve_job_user(None) == ("nobody", "nobody")
        assert resolve_job_user("root") == (None, "root")


class TestRestart:
    def test_a_new_server_sees_running_jobs_and_follows_resume(self, pki, tmp_path, gate):
        jobs = tmp_path / "jobs"
        cert, key = pki.client()
        with ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs) as first:
            api = Api(first.url, cert, key, pki.server_ca)
            job = start(api, f"echo before; while [ ! -e {gate} ]; do sleep 0.02; done; echo after")
            conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1")
            received = response.read1(1024)
            assert received == b"before\n"
            first.stop()
            with pytest.raises(http.client.IncompleteRead):  # cut: no proper end of the chunked stream
                response.read()
            conn.close()
        with ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs) as second:
            api = Api(second.url, cert, key, pki.server_ca)
            assert api("GET", f"/v1/jobs/{job['id']}").json()["status"]["state"] == "running"
            assert [j["id"] for j in api("GET", "/v1/jobs").json()["jobs"]] == [job["id"]]
            conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1&offset={len(received)}")
            gate.touch()
            assert response.read() == b"after\n"
            conn.close()
            assert wait_ended(api, job["id"])["status"]["state"] == "exited"


def server_fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


class TestFollowers:
    def test_a_follower_that_disconnects_is_freed_at_once(self, api, server):
        job = start(api, "sleep 60")
        baseline = server_fds(server)
        streams = [api.stream(f"/v1/jobs/{job['id']}/log?follow=1") for _ in range(20)]
        assert all(response.status == 200 for _conn, response in streams)
        assert poll(lambda: server_fds(server) >= baseline + 20)  # a socket and a log each
        for conn, _response in streams:
            conn.close()
        assert poll(lambda: server_fds(server) <= baseline), (server_fds(server), baseline)
        api("POST", f"/v1/jobs/{job['id']}/stop", {"grace": 0})

    def test_a_stuck_follower_does_not_block_the_others(self, api, server, pki):
        job = start(api, "head -c 20000000 /dev/zero | tr '\\0' x; echo end")
        # A client that asks for the stream and never reads it: its buffers fill up.
        stuck = socket.create_connection(("127.0.0.1", server.port))
        stuck = api.context.wrap_socket(stuck, server_hostname="127.0.0.1")
        stuck.sendall(f"GET /v1/jobs/{job['id']}/log?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            conn, response = api.stream(f"/v1/jobs/{job['id']}/log?follow=1")
            size = 0
            while chunk := response.read1(1 << 20):
                size += len(chunk)
            conn.close()
            assert size == 20_000_004
            assert api("GET", f"/v1/jobs/{job['id']}").status == 200
        finally:
            stuck.close()


class TestServe:
    def test_empty_pool_is_refused_with_advice(self, pki, tmp_path):
        (tmp_path / "pool").mkdir()
        with pytest.raises(JobberError, match="holds no certificate.*init-demo"):
            serve("127.0.0.1", 0, str(pki.server_cert), str(pki.server_key), root=tmp_path)

    def test_a_key_that_does_not_match_is_refused(self, pki, tmp_path):
        other_cert, other_key = pki.client()
        with pytest.raises(JobberError, match="cannot use"):
            serve("127.0.0.1", 0, str(pki.server_cert), str(other_key), root=pki.root)

    def test_a_port_in_use_is_refused(self, pki, server):
        with pytest.raises(JobberError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            serve("127.0.0.1", server.port, str(pki.server_cert), str(pki.server_key), root=pki.root)

    def test_bad_log_level(self, pki):
        with pytest.raises(JobberError, match="--log-level"):
            serve("127.0.0.1", 0, str(pki.server_cert), str(pki.server_key), root=pki.root, log_level="chatty")

    def test_sigterm_stops_the_server_cleanly(self, pki, tmp_path):
        proc = ServerProcess(pki.server_cert, pki.server_key, pki.root, tmp_path / "jobs").start()
        assert proc.stop(signal.SIGTERM) == 0
        assert proc.stop(signal.SIGINT) == 0  # already stopped: the same code

    def test_one_line_per_request_names_the_caller(self, pki, server):
        cert, key = pki.client("dave")
        Api(server.url, cert, key, pki.server_ca)("GET", "/v1/jobs")
        assert poll(lambda: 'CN=dave "GET /v1/jobs" 200' in server.log())


    def test_log_lines_cannot_be_forged(self, pki, server):
        cert, key = pki.client("mallory\nFAKE")
        Api(server.url, cert, key, pki.server_ca)("GET", "/v1/nope%0aFAKE%20line")
        assert poll(lambda: '"GET /v1/nope%0aFAKE%20line" 404' in server.log())
        assert "CN=mallory?FAKE" in server.log()
        assert not any(line.startswith("FAKE") for line in server.log().splitlines())


class TestOpenApi:
    def test_the_document_is_served(self, api):
        served = api("GET", "/v1/openapi.json").json()
        assert served["openapi"].startswith("3.")
        assert served == json.loads(json.dumps(openapi_document(served["info"]["version"])))

    def test_every_route_is_documented_and_every_documented_path_exists(self):
        app = make_app(single_tenant=os.geteuid() != 0)
        routes = {(r.method, r.resource.canonical.replace("{job_id}", "{job_id}")) for r in app.router.routes()}
        documented = {(method.upper(), path) for path, ops in openapi_document("x")["paths"].items() for method in ops}
        assert routes == documented

    def test_tls_is_1_3_only(self, pki, server):
        cert, key = pki.client()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(pki.server_ca))
        context.load_cert_chain(str(cert), str(key))
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == "TLSv1.3"
