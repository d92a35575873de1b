"""What one client may take of the server, tested for real over loopback.

- Connections: a flood of idle TCP connections is held under ``--max-connections`` (at
  little memory), refused past the caps (per peer address and in all) without a log line
  each, and an authenticated request still answers; a TLS client trickling its headers,
  a client that never starts or never finishes its handshake, and an idle kept-alive
  connection are each closed by their deadline. A burst of 3,000 connections against a
  cap of 500 never makes the server hold more than the cap and one accept batch.
- Descriptors: a server started as ``prlimit --nofile=1024:1024 jobber serve`` fits its
  caps (384 connections, 48 per address), says what its jobs get, starts them (their
  limit lowered to what it may give), and answers a tenant while 1,500 idle sockets
  from one other address are open.
- Quotas per certificate: jobs running, jobs kept and requests in flight, each answered
  429 with a JSON body naming the cap; the Python client raises JobError for it.
- Fairness: while tenant B's 64 stops wait out their grace (jobs that ignore SIGTERM) and
  B's 64 long listings wait their turns, tenant A's calls and A's stop of its own job are
  done: before any of B's stops ends, and before B's listings sent ahead of A's calls are.
- Listing is paginated; inputs that cannot work (lone surrogates, NULs, huge offsets,
  ids that are not numbers) get 400 before anything is made, and nothing is left stuck.

The flood sends from other loopback addresses (127.0.0.2, ...) than the authenticated
client (127.0.0.1): Linux routes all of 127/8 to the loopback device.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import resource
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

import jobber
from jobber import JobError
from jobber._backends.remote import session as remote_session
from jobber._jobs.status import JobStatus
from jobber._jobs.store import JobStore
from jobber._server.connection_limits import ConnectionLimits, fit_limits
from jobber._server.log_limits import LogRateLimit
from jobber._server.quotas import FairPool
from polling import poll
from serve_for_notebooks import Api, Reply, ServerProcess, shared_state_dir

FLOOD = 1000
PER_PEER = (FLOOD + 200) // 2  # the most one address may hold of the flooded server's FLOOD + 200
# Beyond --max-connections: the sockets of one accept batch (32) that made room, closed in
# the event loop's next turn, and a few of the server's own.
BURST_SLACK = 32 + 10
LIVENESS_S = 60.0  # a hang guard: "closed by its deadline" means before this, never a tighter bound


def _nofile(need: int) -> None:
    """Raise this process's descriptor limit to what the test needs, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _server(pki, tmp_path_factory, *args: str) -> ServerProcess:
    jobs = tmp_path_factory.mktemp("limits") / "jobs"
    return ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs, args=list(args)).start()


def _fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def _rss_mib(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _connect_from(address: str, server: ServerProcess) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def _readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()  # not select(): the flood's descriptors are above 1024
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _closed_by_server(sock: socket.socket, within: float = LIVENESS_S) -> bool:
    """Did the server close this (silent) connection within ``within`` seconds?"""
    deadline = time.monotonic() + within
    while True:
        if _readable(sock, deadline - time.monotonic()):
            try:
                if sock.recv(4096) == b"":
                    return True
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:  # reset, or TLS cut short: closed
                return True
        if time.monotonic() >= deadline:
            return False


def _closed_now(sock: socket.socket) -> bool:
    return _closed_by_server(sock, 0)


def _client_hello() -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _tls(api: Api, server: ServerProcess) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return api.context.wrap_socket(raw, server_hostname="127.0.0.1")


def _connection_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if "jobber.server: connections" in line]


@pytest.fixture(scope="module")
def flooded(pki, tmp_path_factory):
    """A server whose caps a test reaches with a thousand idle connections."""
    _nofile(4 * FLOOD + 512)
    server = _server(pki, tmp_path_factory, "--max-connections", str(FLOOD + 200),
                     "--max-connections-per-peer", str(PER_PEER), "--handshake-timeout", "120")
    yield server
    server.stop()
    assert "Traceback" not in server.log() and "bug:" not in server.log(), server.log()[-3000:]


@pytest.fixture(scope="module")
def strict(pki, tmp_path_factory):
    """A server with deadlines of a few seconds."""
    server = _server(pki, tmp_path_factory, "--handshake-timeout", "2", "--header-timeout", "2",
                     "--keepalive-timeout", "4")
    yield server
    server.stop()
    assert "Traceback" not in server.log() and "bug:" not in server.log(), server.log()[-3000:]


CAPPED_ARGS = ["--max-running-jobs", "2", "--max-jobs", "4", "--max-requests-in-flight", "3"]
"""``capped`` (tests/conftest.py): a server with small caps per certificate."""


class TestConnectionFlood:
    def test_idle_connections_are_held_under_the_caps_and_refused_over_them(self, flooded, pki):
        api = Api(flooded.url, *pki.client("flooded-alice"), pki.server_ca)
        assert api("GET", "/v1/identity").status == 200
        assert poll(lambda: _fds(flooded) <= 10)  # that request's connection is gone
        fds, rss = _fds(flooded), _rss_mib(flooded)
        # The first PER_PEER (and oldest) from one address, the rest from another.
        idle = [_connect_from("127.0.0.2" if n < PER_PEER else "127.0.0.4", flooded) for n in range(FLOOD)]
        try:
            assert poll(lambda: _fds(flooded) >= fds + FLOOD - 2), (_fds(flooded), fds)  # every one held
            assert not any(_closed_now(sock) for sock in idle)
            assert _rss_mib(flooded) - rss < 100, (rss, _rss_mib(flooded))
            # Served while it holds every idle connection: not by dropping some to make room.
            assert api("GET", "/v1/identity", timeout=LIVENESS_S).status == 200
            assert not any(_closed_now(sock) for sock in idle)

            # Past the per-peer cap: refused (closed) at once; other addresses still get in.
            extra = [_connect_from("127.0.0.2", flooded) for _ in range(50)]
            assert all(_closed_by_server(sock) for sock in extra)
            for sock in extra:
                sock.close()
            # Past the total cap: the oldest of those that never spoke make room, once they
            # are a second old (younger ones may be real clients in their handshake).
            time.sleep(1.5)
            others = [_connect_from("127.0.0.3", flooded) for _ in range(400)]
            assert poll(lambda: sum(_closed_now(sock) for sock in idle[:300]) >= 150)
            # Never over the cap, but for the sockets of one accept batch being closed.
            assert _fds(flooded) <= fds + FLOOD + 200 + BURST_SLACK, (_fds(flooded), fds)
            assert api("GET", "/v1/identity", timeout=LIVENESS_S).status == 200
            for sock in others:
                sock.close()
        finally:
            for sock in idle:
                sock.close()
        assert poll(lambda: _fds(flooded) <= fds + 5), (_fds(flooded), fds)
        # A few summary lines, not a line (nor a traceback) per connection.
        lines = _connection_lines(flooded)
        assert 1 <= len(lines) <= 6, lines
        assert any("refused over --max-connections-per-peer" in line for line in lines), lines
        assert "Traceback" not in flooded.log()


class FdSampler(threading.Thread):
    """The most descriptors the server held while this ran (read every few milliseconds)."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.done = server, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, _fds(self.server))
            except OSError:
                pass
            self.done.wait(0.002)

    def __enter__(self) -> FdSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


BURST_CAP = 500


class TestDescriptorsUnderABurst:
    def test_a_burst_of_connections_never_holds_more_than_the_cap_and_a_few(self, pki, tmp_path_factory):
        """3,000 connections at once against a cap of 500: admitted or closed as they are
        accepted, never a kernel queue's worth (1,024) taken first and judged later."""
        burst = 3000
        _nofile(burst + 1024)
        server = _server(pki, tmp_path_factory, "--max-connections", str(BURST_CAP), "--handshake-timeout", "120")
        try:
            api = Api(server.url, *pki.client("burst"), pki.server_ca)
            assert api("GET", "/v1/identity").status == 200
            assert poll(lambda: _fds(server) <= 10)
            fds = _fds(server)
            socks = []
            with FdSampler(server) as sampler:
                try:
                    for n in range(burst):  # 50 from each address: under the cap per peer (62)
                        sock = socket.socket()
                        sock.setblocking(False)
                        sock.bind((f"127.0.1.{1 + n // 50}", 0))
                        sock.connect_ex(("127.0.0.1", server.port))
                        socks.append(sock)
                    assert poll(lambda: _fds(server) >= fds + BURST_CAP - 5), (_fds(server), fds)
                    time.sleep(2.5)  # the queue's and the retried SYNs' turn (no timing is asserted)
                    held = _fds(server)
                finally:
                    for sock in socks:
                        sock.close()
            assert sampler.peak <= fds + BURST_CAP + BURST_SLACK, (sampler.peak, fds)
            assert fds + BURST_CAP - 5 <= held <= fds + BURST_CAP + BURST_SLACK, (held, fds)
            assert poll(lambda: _fds(server) <= fds + 5), (_fds(server), fds)
            assert api("GET", "/v1/identity").status == 200
        finally:
            server.stop()
        assert "Traceback" not in server.log(), server.log()[-3000:]


class TestDeadlines:
    @pytest.fixture
    def api(self, strict, pki):
        return Api(strict.url, *pki.client(), pki.server_ca)

    def test_a_client_that_never_speaks_is_closed(self, strict):
        with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
            assert _closed_by_server(sock)
        assert poll(lambda: any("sending nothing for --handshake-timeout" in line for line in _connection_lines(strict)))

    def test_a_handshake_left_unfinished_is_closed(self, strict):
        with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
            sock.sendall(_client_hello())  # and never the rest of the handshake
            sock.settimeout(LIVENESS_S)
            deadline = time.monotonic() + LIVENESS_S
            while time.monotonic() < deadline:
                try:
                    if sock.recv(65536) == b"":  # the server's hello first, then the end
                        break
                except (ConnectionResetError, OSError):
                    break
            else:
                pytest.fail("the server kept a handshake open past its deadline")
        assert poll(lambda: any("TLS handshake unfinished" in line for line in _connection_lines(strict)))

    def test_headers_trickled_a_byte_at_a_time_are_cut(self, strict, api):
        tls = _tls(api, strict)
        try:
            tls.sendall(b"GET /v1/identity HTTP/1.1\r\nHost: x\r\n")
            closed = False
            deadline = time.monotonic() + LIVENESS_S
            while time.monotonic() < deadline and not closed:
                try:
                    tls.sendall(b"X")  # one byte of a header line every half second
                except (OSError, ssl.SSLError):
                    closed = True
                    break
                closed = _closed_by_server(tls, 0.5)
            assert closed, "a client trickling its headers was never closed"
        finally:
            tls.close()
        assert poll(lambda: any("headers unfinished after --header-timeout" in line for line in _connection_lines(strict)))
        assert api("GET", "/v1/identity").status == 200

    def test_an_idle_kept_alive_connection_is_closed(self, strict, api):
        conn = api.connection()
        conn.request("GET", "/v1/identity")
        response = conn.getresponse()
        assert response.status == 200 and not response.will_close
        response.read()
        try:
            assert _closed_by_server(conn.sock)
        finally:
            conn.close()

    def test_a_request_in_time_on_a_kept_alive_connection_works(self, api):
        conn = api.connection()
        try:
            for _ in range(3):
                conn.request("GET", "/v1/identity")
                response = conn.getresponse()
                assert response.status == 200
                response.read()
                time.sleep(0.5)
        finally:
            conn.close()


def _quota(reply, quota: str, limit: int) -> dict:
    assert reply.status == 429, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert (body["quota"], body["limit"], body["type"]) == (quota, limit, "JobError"), body
    assert str(limit) in body["error"] and quota in body["error"], body
    return body


class TestQuotas:
    def test_running_jobs(self, capped, pki):
        api = Api(capped.url, *pki.client("runner"), pki.server_ca)
        ids = [api("POST", "/v1/jobs", {"command": "sleep 60"}).json()["id"] for _ in range(2)]
        _quota(api("POST", "/v1/jobs", {"command": "sleep 60"}), "max_running_jobs", 2)
        assert [job["id"] for job in api("GET", "/v1/jobs").json()["jobs"]] == ids  # nothing was made
        created = api("POST", "/v1/jobs", {"command": "echo later", "start": False}).json()["id"]
        _quota(api("POST", f"/v1/jobs/{created}/start"), "max_running_jobs", 2)
        assert api("POST", f"/v1/jobs/{ids[0]}/stop", {"grace": 0}).json()["status"]["state"] == "stopped"
        assert api("POST", f"/v1/jobs/{created}/start").status == 200  # room again
        api("POST", f"/v1/jobs/{ids[1]}/stop", {"grace": 0})

    def test_jobs_kept(self, capped, pki):
        api = Api(capped.url, *pki.client("keeper"), pki.server_ca)
        ids = [api("POST", "/v1/jobs", {"command": "true", "start": False}).json()["id"] for _ in range(4)]
        _quota(api("POST", "/v1/jobs", {"command": "true", "start": False}), "max_jobs", 4)
        removed = api("DELETE", f"/v1/jobs/{ids[0]}")
        assert (removed.status, removed.json()) == (200, {"id": ids[0], "removed": True})
        assert api("GET", f"/v1/jobs/{ids[0]}").status == 404
        assert api("POST", "/v1/jobs", {"command": "true", "start": False}).status == 201

    def test_requests_in_flight(self, capped, pki, gate):
        api = Api(capped.url, *pki.client("waiter"), pki.server_ca)
        job = api("POST", "/v1/jobs", {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}).json()["id"]
        def hold():  # a wait, in flight until the gate opens (again if this one was the 4th)
            while (reply := api("GET", f"/v1/jobs/{job}?wait=60", timeout=90)).status == 429:
                time.sleep(0.05)
            return reply

        with ThreadPoolExecutor(3) as pool:
            waits = [pool.submit(hold) for _ in range(3)]
            refused = poll(lambda: (reply := api("GET", f"/v1/jobs/{job}")).status == 429 and reply, timeout=60)
            assert refused, "the fourth request in flight was not refused"
            assert refused.headers["Retry-After"] == "1"
            _quota(refused, "max_requests_in_flight", 3)
            # Another certificate is not held back by this one's cap.
            other = Api(capped.url, *pki.client("bystander"), pki.server_ca)
            assert other("GET", "/v1/jobs").status == 200
            gate.touch()  # the job ends, and so do the three waits
            assert [wait.result().json()["status"]["state"] for wait in waits] == ["exited"] * 3
        assert api("GET", f"/v1/jobs/{job}").status == 200  # room again

    def test_the_client_raises_job_error_naming_the_cap(self, capped, pki):
        cert, key = pki.client("client-capped")
        with jobber.connect(capped.url, cert=str(cert), key=str(key), ca=str(pki.server_ca)) as session:
            running = [session.new_job("sleep 60") for _ in range(2)]
            for job in running:
                job.start()
            with pytest.raises(JobError, match=r"max_running_jobs 2"):
                session.new_job("sleep 60").start()
            for job in running:
                job.stop(grace=0)


def _owner(cert: Path) -> str:
    """The directory name a certificate's jobs live under: its SHA-256 (``Identity.hash``)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def _connected(api: Api) -> http.client.HTTPSConnection:
    """A connection whose TLS handshake is done, so that sending a request is one write."""
    conn = api.connection(timeout=120)
    conn.connect()
    return conn


def _send(conn: http.client.HTTPSConnection, method: str, path: str, body: object = None) -> None:
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})


def _answer(conn: http.client.HTTPSConnection) -> Reply:
    try:
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def _ignores_term(status: JobStatus) -> bool:
    """The job's main process runs and ignores SIGTERM (its ``SigIgn`` mask in /proc)."""
    try:
        lines = Path(f"/proc/{status.pid}/status").read_text().splitlines()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in lines if line.startswith("SigIgn:"))
    return status.state == "running" and bool(mask & (1 << (signal.SIGTERM - 1)))


class TestFairness:
    """Tenant A is answered while tenant B's work waits: told by what has happened, not by durations.

    B's stops wait out a grace period far longer than the test (their jobs ignore SIGTERM), and
    B's listings queue in B's turns of the worker threads. A's calls and A's stop must be done
    while every one of B's stopped jobs still runs (the stops still wait) and some of B's
    listings, sent before A asked, are still unanswered: a server that took the worker threads
    first come, first served would answer A only after all of them.
    """

    LOAD = 64  # B's listings, and B's stops, at once
    MORE = 150  # jobs B keeps besides those it stops: its listings are long
    GRACE = 120  # B's stops: longer than the test; ended by stops with no grace once A is checked

    def test_a_tenant_under_load_does_not_hold_up_another(self, pki, server):
        a = Api(server.url, *pki.client("fair-a"), pki.server_ca)
        b_cert, b_key = pki.client("fair-b")
        b = Api(server.url, b_cert, b_key, pki.server_ca)
        mine = a("POST", "/v1/jobs", {"command": "sleep 300"}).json()["id"]
        # B: jobs that ignore SIGTERM, so each stop waits out its whole grace; and more to list.
        with ThreadPoolExecutor(16) as pool:
            stubborn = list(pool.map(lambda _: b("POST", "/v1/jobs", {"command": "trap '' TERM; exec sleep 300"}).json()["id"],
                                     range(self.LOAD)))
            list(pool.map(lambda _: b("POST", "/v1/jobs", {"command": "true", "start": False}), range(self.MORE)))
        store = JobStore(_owner(b_cert), root=server.jobs_dir)  # B's jobs read from disk, not asked of the server

        def stubborn_running() -> bool:
            return all(_ignores_term(store.get_job(job).status()) for job in stubborn)

        assert poll(stubborn_running, timeout=60), "B's jobs did not get to ignore SIGTERM"
        with ThreadPoolExecutor(2 * self.LOAD) as pool:
            try:
                conns = list(pool.map(lambda _: _connected(b), stubborn))
                for conn, job in zip(conns, stubborn):
                    _send(conn, "POST", f"/v1/jobs/{job}/stop", {"grace": self.GRACE})
                stops = [pool.submit(_answer, conn) for conn in conns]
                # Every stop has begun (recorded on disk just before its SIGTERM) and waits out the grace.
                assert poll(lambda: all((store.path / str(job) / "stop-requested").exists() for job in stubborn),
                            timeout=60), "B's stops did not begin"
                conns = list(pool.map(lambda _: _connected(b), range(self.LOAD)))
                for conn in conns:  # all at once: they wait in B's turns of the worker threads
                    _send(conn, "GET", "/v1/jobs?limit=1000")
                listings = [pool.submit(_answer, conn) for conn in conns]
                # A's calls, and a stop of its own job (which ends on SIGTERM), while B's work waits.
                for _ in range(5):
                    assert a("GET", f"/v1/jobs/{mine}").json()["status"]["state"] == "running"
                assert a("POST", f"/v1/jobs/{mine}/stop", {"grace": 5}).json()["status"]["state"] == "stopped"
                assert a("GET", f"/v1/jobs/{mine}").json()["status"]["state"] == "stopped"
                # Now, after A's last answer: B's listings sent before A asked are not all
                # answered, and not one of B's stops has ended or let its job end.
                listed = [listing.done() for listing in listings]
                assert not any(stop.done() for stop in stops) and stubborn_running(), "a stop of B's ended before A's"
                assert not all(listed), "A was answered only after every listing B had sent before it"
                assert all(len(listing.result().json()["jobs"]) == self.LOAD + self.MORE for listing in listings)
                ended = pool.map(lambda job: b("POST", f"/v1/jobs/{job}/stop", {"grace": 0}, timeout=120), stubborn)
                assert all(reply.json()["status"]["state"] == "stopped" for reply in ended)
                assert all(stop.result().json()["status"]["state"] == "stopped" for stop in stops)
            finally:
                for job in stubborn:  # a failure above leaves nothing running for two minutes
                    with contextlib.suppress(JobError):
                        store.get_job(job).stop(grace=0)
        with ThreadPoolExecutor(16) as pool:  # ended, all of them: the clean-up need not look at each
            assert all(reply.status == 200 for reply in pool.map(
                lambda job: b("DELETE", f"/v1/jobs/{job['id']}"), b("GET", "/v1/jobs?limit=1000").json()["jobs"]))
        assert a("DELETE", f"/v1/jobs/{mine}").status == 200


class TestPagination:
    def test_pages_follow_one_another(self, pki, server):
        api = Api(server.url, *pki.client("pager"), pki.server_ca)
        ids = [api("POST", "/v1/jobs", {"command": f"echo {n}", "start": False}).json()["id"] for n in range(7)]
        first = api("GET", "/v1/jobs?limit=3").json()
        assert ([job["id"] for job in first["jobs"]], first["next_after"]) == (ids[:3], ids[2])
        second = api("GET", f"/v1/jobs?limit=3&after={first['next_after']}").json()
        assert ([job["id"] for job in second["jobs"]], second["next_after"]) == (ids[3:6], ids[5])
        last = api("GET", f"/v1/jobs?limit=3&after={second['next_after']}").json()
        assert last == {"jobs": last["jobs"]} and [job["id"] for job in last["jobs"]] == ids[6:]
        assert [job["id"] for job in api("GET", "/v1/jobs").json()["jobs"]] == ids  # default: 100 a page
        for query, message in (("limit=0", "out of range"), ("limit=1001", "out of range"), ("after=-1", "out of range"),
                               ("after=x", "not a whole number")):
            reply = api("GET", f"/v1/jobs?{query}")
            assert (reply.status, message in reply.json()["error"]) == (400, True), reply.body

    def test_the_client_follows_the_pages(self, pki, server, monkeypatch):
        monkeypatch.setattr(remote_session, "_PAGE", 2)
        cert, key = pki.client("client-pager")
        with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca)) as session:
            made = [session.new_job(f"echo {n}").id for n in range(5)]
            assert [job.id for job in session.get_jobs()] == made


HUGE = str((1 << 63) - 1)
BAD_INPUTS = [
    pytest.param("POST", "/v1/jobs", b'{"command": "echo \\ud800"}', "lone surrogate", id="surrogate-in-command"),
    pytest.param("POST", "/v1/jobs", b'{"command": "echo \\udc80 \\ud83d"}', "lone surrogate", id="low-surrogate"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "env": {"A": "\\ud800"}}', "lone surrogate", id="surrogate-in-env"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "env": {"\\ud800": "1"}}', "lone surrogate", id="surrogate-env-name"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"memory": "1\\udfffG"}}', "lone surrogate",
                 id="surrogate-in-limit"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "\\ud800": 1}', "lone surrogate", id="surrogate-field-name"),
    pytest.param("POST", "/v1/jobs", b'{"command": "echo \\u0000"}', "NUL", id="nul-in-command"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "env": {"A": "x\\u0000"}}', "NUL", id="nul-in-env"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "start": false, "limits": {"pids": 1e400}}', "", id="inf-pids"),
    pytest.param("POST", "/v1/jobs", b'{"command": "true", "limits": {"pids": ' + b"9" * 400 + b'}}', "", id="huge-pids"),
    pytest.param("GET", f"/v1/jobs/{{id}}/log?offset={HUGE}", None, "out of range", id="huge-offset"),
    pytest.param("GET", "/v1/jobs/{id}/log?offset=99999999999999999999", None, "not a whole number", id="huger-offset"),
    pytest.param("GET", f"/v1/jobs/{{id}}/log?tail={HUGE}", None, "out of range", id="huge-tail"),
    pytest.param("GET", f"/v1/jobs/{{id}}/log?length={HUGE}", None, "out of range", id="huge-length"),
    pytest.param("GET", f"/v1/jobs/{{id}}/log?follow=1&offset={HUGE}", None, "out of range", id="huge-follow-offset"),
    pytest.param("GET", "/v1/jobs/{id}/log?offset=1e3", None, "not a whole number", id="float-offset"),
    pytest.param("GET", "/v1/jobs/1.5", None, "not a job id", id="float-id"),
    pytest.param("GET", "/v1/jobs/-1", None, "not a job id", id="negative-id"),
    pytest.param("GET", "/v1/jobs/%ED%A0%80", None, "not a job id", id="surrogate-id"),
    pytest.param("POST", "/v1/jobs/0x1/stop", b"{}", "not a job id", id="hex-id"),
    pytest.param("GET", "/v1/jobs?after=%00", None, "not a whole number", id="nul-after"),
]


class TestBadInputs:
    @pytest.mark.parametrize(("method", "path", "body", "message"), BAD_INPUTS)
    def test_refused_with_400_before_anything_is_made(self, pki, server, method, path, body, message):
        api = Api(server.url, *pki.client(), pki.server_ca)
        job = api("POST", "/v1/jobs", {"command": "printf 0123456789"}).json()["id"]
        assert api("GET", f"/v1/jobs/{job}?wait=30").json()["status"]["state"] == "exited"
        reply = api(method, path.replace("{id}", str(job)), raw=body)
        assert reply.status == 400, reply.body
        error = reply.json()
        assert message in error["error"], error
        assert [j["id"] for j in api("GET", "/v1/jobs").json()["jobs"]] == [job]  # nothing new
        # And the job that was there is untouched: readable, removable.
        assert api("GET", f"/v1/jobs/{job}/log?offset=2&length=3").body == b"234"
        assert api("DELETE", f"/v1/jobs/{job}").status == 200

    def test_a_job_that_did_not_start_can_be_started_stopped_and_removed(self, pki, server):
        api = Api(server.url, *pki.client(), pki.server_ca)
        job = api("POST", "/v1/jobs", {"command": "sleep 60", "start": False}).json()["id"]
        assert api("POST", f"/v1/jobs/{job}/stop").status == 409  # never started
        assert api("DELETE", f"/v1/jobs/{job}").status == 200
        job = api("POST", "/v1/jobs", {"command": "sleep 60", "start": False}).json()["id"]
        assert api("POST", f"/v1/jobs/{job}/start").status == 200
        refused = api("DELETE", f"/v1/jobs/{job}")
        assert (refused.status, "stop it first" in refused.json()["error"]) == (409, True)
        assert api("POST", f"/v1/jobs/{job}/stop", {"grace": 1}).json()["status"]["state"] == "stopped"
        assert api("DELETE", f"/v1/jobs/{job}").status == 200

    def test_the_openapi_document_bounds_what_is_refused(self, pki, server):
        document = Api(server.url, *pki.client(), pki.server_ca)("GET", "/v1/openapi.json").json()
        parameters = {p["name"]: p["schema"] for p in document["paths"]["/v1/jobs/{job_id}/log"]["get"]["parameters"]}
        assert parameters["offset"]["maximum"] == parameters["tail"]["maximum"] == (1 << 53) - 1
        assert "429" in document["paths"]["/v1/jobs"]["post"]["responses"]
        assert json.dumps(document)  # serialisable as served


class TestFairPool:
    """The worker threads' turns, in process: deterministic, with events instead of time."""

    def test_another_tenant_runs_while_one_tenant_fills_its_turns_and_queue(self):
        pool = FairPool(threads=4, per_tenant=2)
        release = threading.Event()

        async def scenario() -> None:
            hogs = [asyncio.ensure_future(pool.run("b", release.wait, 30)) for _ in range(50)]
            await asyncio.sleep(0.1)
            assert pool.queued("b") == 48  # two run, the rest wait for b's turn
            assert await asyncio.wait_for(pool.run("a", lambda: "a's answer"), 10) == "a's answer"
            release.set()
            assert all(await asyncio.wait_for(asyncio.gather(*hogs), 30))

        try:
            asyncio.run(scenario())
        finally:
            release.set()
            pool.close()

    def test_a_call_that_must_run_runs_when_its_caller_is_gone(self):
        pool = FairPool(threads=2, per_tenant=1)
        release, ran, wrong = threading.Event(), threading.Event(), threading.Event()

        async def scenario() -> None:
            blocker = asyncio.ensure_future(pool.run("b", release.wait, 30))
            dropped = asyncio.ensure_future(pool.run("b", wrong.set))
            kept = asyncio.ensure_future(pool.run("b", ran.set, must_run=True))
            await asyncio.sleep(0.1)
            dropped.cancel()  # its caller gives up while it waits for its turn: it is not made
            kept.cancel()  # this one is made all the same
            release.set()
            await blocker
            assert await asyncio.get_running_loop().run_in_executor(None, ran.wait, 10)
            assert not wrong.is_set()

        try:
            asyncio.run(scenario())
        finally:
            release.set()
            pool.close()


class TestLogRateLimit:
    def test_a_flood_of_one_kind_is_cut_and_counted(self, caplog):
        limit = LogRateLimit(burst=5, period=0.2)
        records = [logging.LogRecord("jobber.server", logging.INFO, __file__, 1, "refused a TLS client %s: %s",
                                     (f"10.0.0.{n}", "UNKNOWN_CA"), None) for n in range(50)]
        assert sum(limit.filter(record) for record in records) == 5
        other = logging.LogRecord("jobber.server", logging.WARNING, __file__, 1, "%s", ("a pool warning",), None)
        assert limit.filter(other)
        time.sleep(0.25)
        with caplog.at_level(logging.WARNING, logger="jobber.server"):
            assert limit.filter(records[0])
        assert "45 more like 'refused a TLS client %s: %s'" in caplog.text


_SANDBOXED_JOB = """
import hashlib, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000))
from jobber._backends.context import Sandbox
from jobber._jobs.store import JobStore
job = JobStore(hashlib.sha256(os.urandom(16)).hexdigest()).new_job("echo $(ulimit -Sn) $(ulimit -Hn)")
job._backend.start(user=None, cwd=None, sandbox=Sandbox())
status = job.wait(60)
buf = bytearray(4096)
print(status.state, bytes(buf[: job.tail(buf)]).decode().strip())
"""


class TestDescriptors:
    @pytest.mark.parametrize("launcher", ["compiled", "python"])
    def test_a_jobs_limit_never_exceeds_what_its_starter_may_give(self, launcher, jobs_dir):
        env = {**os.environ, "JOBBER_JOBS_DIR": str(jobs_dir)}
        if launcher == "python":
            env["JOBBER_LAUNCHER"] = "python"
        else:
            env.pop("JOBBER_LAUNCHER", None)
        out = subprocess.run([sys.executable, "-c", _SANDBOXED_JOB], capture_output=True, text=True, env=env,
                             timeout=120)
        assert (out.stdout, out.stderr) == ("exited 1000 1000\n", ""), out

    def test_caps_are_lowered_to_fit_the_descriptor_limit(self):
        fitted = fit_limits(ConnectionLimits(max_connections=4096, max_per_peer=512), 1024)
        assert (fitted.max_connections, fitted.max_per_peer) == (384, 48)  # 2 a connection, 256 kept; 1/8 each
        fitted = fit_limits(ConnectionLimits(max_connections=4096, max_per_peer=2048), 1024)
        assert (fitted.max_connections, fitted.max_per_peer) == (384, 192)  # never over half
        assert fit_limits(ConnectionLimits(), 1 << 20) == ConnectionLimits()

    def test_the_cap_per_peer_scales_with_the_total_and_is_never_over_half(self):
        assert ConnectionLimits().max_per_peer == 512
        assert ConnectionLimits(max_connections=100).max_per_peer == 12
        assert ConnectionLimits(max_connections=1).max_per_peer == 1
        assert ConnectionLimits(max_connections=100, max_per_peer=50).max_per_peer == 50
        with pytest.raises(ValueError, match=r"--max-connections-per-peer 51 is more than half of --max-connections "
                                             r"100: .*give at most 50"):
            ConnectionLimits(max_connections=100, max_per_peer=51)

    def test_serve_refuses_a_cap_per_peer_over_half_the_total(self, pki, tmp_path):
        out = subprocess.run([sys.executable, "-m", "jobber", "serve", "--port", "0", "--cert", str(pki.server_cert),
                              "--key", str(pki.server_key), "--root", str(pki.root), "--max-connections", "100",
                              "--max-connections-per-peer", "80"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "JOBBER_JOBS_DIR": str(tmp_path / "jobs")})
        assert out.returncode == 1 and out.stderr.startswith("jobber: error: --max-connections-per-peer 80 is more"), out
        assert "Traceback" not in out.stderr

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        script = ("import resource; from jobber._server.connection_limits import raise_nofile_limit; "
                  "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
                  "now = raise_nofile_limit(); soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
                  "print(now == soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20))")
        assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True).stdout.strip() == "True"


_UNDER_HARD_NOFILE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
from jobber.cli import main
sys.exit(main(sys.argv[2:]))
"""
LOW_NOFILE = 1024
IDLE_FROM_ONE_ADDRESS = 1500


@pytest.fixture(scope="module")
def low_limit(pki, tmp_path_factory):
    """A server started as ``prlimit --nofile=1024:1024 jobber serve ...`` would be."""
    jobs = tmp_path_factory.mktemp("low-limit") / "jobs"
    log = jobs.parent / "server.log"
    tenancy = ["--state-dir", str(shared_state_dir())] if os.geteuid() == 0 else ["--single-tenant"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _UNDER_HARD_NOFILE, str(LOW_NOFILE), "serve", "--host", "127.0.0.1", "--port", "0",
             "--cert", str(pki.server_cert), "--key", str(pki.server_key), "--root", str(pki.root), *tenancy],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env={**os.environ, "JOBBER_JOBS_DIR": str(jobs)})
    try:
        assert poll(lambda: "listening on" in log.read_text() or proc.poll() is not None, timeout=30), log.read_text()
        url = re.search(r"listening on (https://\S+?)/? ", log.read_text())
        assert url, log.read_text()
        yield SimpleNamespace(url=url.group(1), port=int(url.group(1).rsplit(":", 1)[1]), pid=proc.pid,
                              log=log.read_text)
    finally:
        proc.terminate()
        proc.wait(15)
    assert "Traceback" not in log.read_text() and "bug:" not in log.read_text(), log.read_text()[-3000:]


class TestUnderALowDescriptorLimit:
    """``prlimit --nofile=1024:1024 jobber serve``: the caps fit, jobs start, tenants get in."""

    def test_the_server_says_what_it_holds_and_what_jobs_get(self, low_limit):
        text = low_limit.log()
        assert "--max-connections 4096 is lowered to that, and --max-connections-per-peer 512 to 48" in text, text
        assert "limits: 384 connections (48 per peer address)" in text, text
        assert ("jobs get ulimit -n 1024 (hard 1024), below the default 1024 (hard 4096): this server's hard "
                "limit is 1024") in text, text
        soft = next(line for line in Path(f"/proc/{low_limit.pid}/limits").read_text().splitlines()
                    if line.startswith("Max open files")).split()[3:5]
        assert soft == ["1024", "1024"], soft  # the soft limit was raised to the hard one

    def test_jobs_run_and_a_tenant_is_answered_while_one_address_holds_1500_idle_sockets(self, low_limit, pki):
        _nofile(IDLE_FROM_ONE_ADDRESS + 512)
        api = Api(low_limit.url, *pki.client("low-limit-tenant"), pki.server_ca)
        assert api("GET", "/v1/identity").status == 200
        assert poll(lambda: _fds(low_limit) <= 10)
        fds = _fds(low_limit)
        idle = []
        try:
            for _ in range(IDLE_FROM_ONE_ADDRESS):
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind(("127.0.0.2", 0))
                sock.connect_ex(("127.0.0.1", low_limit.port))
                idle.append(sock)
            # 48 of them are held; every other one is closed by the server.
            assert poll(lambda: sum(_closed_now(sock) for sock in idle) >= IDLE_FROM_ONE_ADDRESS - 48, timeout=60)
            assert _fds(low_limit) <= fds + 48 + 32, (_fds(low_limit), fds)
            # The tenant, from 127.0.0.1, over TLS: answered, and its jobs start and run.
            assert api("GET", "/v1/identity", timeout=LIVENESS_S).status == 200
            job = api("POST", "/v1/jobs", {"command": "echo $(ulimit -Sn) $(ulimit -Hn)"})
            assert job.status == 201, job.body
            job_id = job.json()["id"]
            status = api("GET", f"/v1/jobs/{job_id}?wait=60", timeout=90).json()["status"]
            assert status["state"] == "exited", status
            assert api("GET", f"/v1/jobs/{job_id}/log").body == b"1024 1024\n"
            assert api("DELETE", f"/v1/jobs/{job_id}").status == 200
        finally:
            for sock in idle:
                sock.close()
        assert poll(lambda: _fds(low_limit) <= fds + 5), (_fds(low_limit), fds)
        assert any("refused over --max-connections-per-peer (48)" in line for line in _connection_lines(low_limit))
