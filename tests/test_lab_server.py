"""The Jobs panel's server extension (jobber_lab) in a real Jupyter server.

Two ``jupyter server`` subprocesses on loopback share one jobs directory: A runs with
tenant A's certificate, B with tenant B's (the demo pool's client.pem and client2.pem).
Jobs are real jobs of this host; requests go through the Jupyter server's own token and
XSRF checks; the sockets are real WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import threading
import time

import pytest
import requests
import tornado.httpserver

import jobber
from jobber import Certificate, Limits
from jobber._backends.local.isolation import choose
from lab_server import LabServer, close, receive, receive_until
from polling import wait_for

MESSAGE_KEYS = {"message"}


@pytest.fixture(scope="module")
def lab(demo, tmp_path_factory):
    """Servers A and B (tenants A and B), one jobs directory."""
    jobs = tmp_path_factory.mktemp("lab") / "jobs"
    servers = {"a": LabServer(demo["client"], demo["root"], jobs), "b": LabServer(demo["client2"], demo["root"], jobs)}
    try:
        for server in servers.values():
            server.wait_ready()
        yield {**servers, "jobs": jobs}
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def tenant_a(lab, demo, monkeypatch) -> Certificate:
    """Tenant A's certificate, its jobs in the servers' jobs directory."""
    monkeypatch.setenv("JOBBER_JOBS_DIR", str(lab["jobs"]))
    monkeypatch.setenv("JOBBER_ROOT", str(demo["root"]))
    return Certificate.from_file(demo["client"])


def run(cert: Certificate, command: str, **options):
    job = cert.new_job(command, **options)
    job.start()
    return job


def run_async(coroutine):
    return asyncio.run(coroutine)


def error(response: requests.Response, status: int) -> str:
    """The sentence of an error answer, after checking its status."""
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["message"]
    assert isinstance(message, str) and len(message) > 10
    return message


class TestListing:
    def test_the_identity_is_the_servers(self, lab, tenant_a):
        described = lab["a"].call("GET", "/identity").json()
        assert described["configured"] is True and described["problem"] is None
        assert described["hash"] == tenant_a.hash() and described["source"] == "JOBBER_CERT"
        assert described["jobs_dir"] == str(lab["jobs"] / tenant_a.hash())

    def test_jobs_newest_first_with_counts(self, lab, tenant_a):
        done = run(tenant_a, "exit 0", label="prep")
        done.wait()
        sleeping = run(tenant_a, "sleep 300", label="train", notify=True, limits=Limits(memory="256M"))
        try:
            listed = lab["a"].call("GET", "/jobs").json()
            ids = [row["id"] for row in listed["jobs"]]
            assert ids == sorted(ids, reverse=True) and ids[:2] == [sleeping.id, done.id]
            newest, older = listed["jobs"][:2]
            assert (newest["state"], newest["label"], newest["notify"], newest["kind"]) == ("running", "train", True, "command")
            assert newest["memory_limit"] == 256 << 20 and newest["ended"] is None and newest["started"]
            assert (older["state"], older["state_text"], older["notify"]) == ("exited", "exited (code 0)", False)
            assert listed["counts"]["running"] == sum(row["state"] == "running" for row in listed["jobs"]) >= 1
            assert lab["a"].call("GET", f"/jobs/{done.id}").json() == older
        finally:
            sleeping.stop()


class TestIdentityIsolation:
    def test_another_identity_lists_none_and_refuses_each_id(self, lab, tenant_a):
        job = run(tenant_a, "sleep 300")
        try:
            assert job.id not in [row["id"] for row in lab["b"].call("GET", "/jobs").json()["jobs"]]
            for method, path in (("GET", f"/jobs/{job.id}"), ("POST", f"/jobs/{job.id}/stop"),
                                 ("POST", f"/jobs/{job.id}/rerun"), ("DELETE", f"/jobs/{job.id}")):
                assert error(lab["b"].call(method, path), 404) == f"no job {job.id} for this identity"
            assert lab["b"].call("POST", "/jobs:stop", {"ids": [job.id]}).json() == {"stopped": []}

            async def view():
                with pytest.raises(Exception, match="404"):
                    await lab["b"].socket(f"/jobs/{job.id}/view")

            run_async(view())
            assert job.status().state == "running"  # nothing B asked touched it
        finally:
            job.stop()


class TestCredentials:
    def test_requests_without_the_token_are_refused(self, lab, tenant_a):
        job = run(tenant_a, "sleep 300")
        try:
            assert lab["a"].call("GET", "/jobs", auth=False).status_code == 403
            assert lab["a"].call("POST", f"/jobs/{job.id}/stop", auth=False).status_code == 403
            wrong = requests.post(f"{lab['a'].url}/jobber/api/jobs/{job.id}/stop", headers={"Authorization": "token nope"},
                                  timeout=30)
            assert wrong.status_code == 403
            assert job.status().state == "running"
        finally:
            job.stop()

    def test_a_cookie_session_needs_the_xsrf_token(self, lab, tenant_a):
        job = run(tenant_a, "sleep 300")
        try:
            browser = requests.Session()  # as a browser: the token once, then the login cookie
            assert browser.get(f"{lab['a'].url}/lab?token={lab['a'].token}", timeout=30).status_code == 200
            assert "_xsrf" in browser.cookies
            assert browser.get(f"{lab['a'].url}/jobber/api/jobs", timeout=30).status_code == 200
            forged = browser.post(f"{lab['a'].url}/jobber/api/jobs:stop", json={"ids": [job.id]}, timeout=30)
            assert forged.status_code == 403 and "_xsrf" in forged.json()["message"]
            assert job.status().state == "running"
            allowed = browser.post(f"{lab['a'].url}/jobber/api/jobs:stop", json={"ids": [job.id]},
                                   headers={"X-XSRFToken": browser.cookies["_xsrf"]}, timeout=30)
            assert allowed.json() == {"stopped": [job.id]} and job.status().state == "stopped"
        finally:
            job.stop()


class TestEvents:
    def test_snapshot_then_changes_then_the_end(self, lab, tenant_a):
        async def scenario():
            ws = await lab["a"].socket("/events")
            try:
                snapshot = await receive(ws)
                assert snapshot["type"] == "snapshot" and set(snapshot["counts"]) >= {"running", "pending"}
                job = run(tenant_a, "sleep 0.5; exit 3", label="train", notify=True)
                seen_running, _ = await receive_until(ws, lambda m: m["type"] == "job" and m["job"]["id"] == job.id
                                                      and m["job"]["state"] == "running")
                assert seen_running["counts"]["running"] >= 1
                ended, seen = await receive_until(ws, lambda m: m["type"] == "ended" and m["job"]["id"] == job.id)
                assert ended["message"].startswith(f"job {job.id} `train` failed (code 3) after ")
                assert ended["notify"] is True and ended["job"]["state"] == "failed"
                quick = run(tenant_a, "true")
                other, seen = await receive_until(ws, lambda m: m["type"] == "ended" and m["job"]["id"] == quick.id)
                assert other["message"].startswith(f"job {quick.id} exited (code 0) after ") and other["notify"] is False
                tenant_a.get_job(quick.id).remove()
                removed, _ = await receive_until(ws, lambda m: m["type"] == "removed" and m["id"] == quick.id)
                assert removed["counts"]["running"] >= 0
                return job, seen
            finally:
                await close(ws)

        job, seen = run_async(scenario())
        ends = [m for m in seen if m["type"] == "ended" and m["job"]["id"] == job.id]
        assert ends == [], "the end of a job is told once"

    @pytest.mark.skipif(choose()[0].NAME == "none", reason="no cgroup confines jobs on this host: no OOM kill to see")
    def test_an_oom_kill_is_told_with_its_limit(self, lab, tenant_a):
        async def scenario():
            ws = await lab["a"].socket("/events")
            try:
                await receive(ws)
                job = run(tenant_a, "python3 -c 'b = bytearray(400 << 20); import time; time.sleep(5)'",
                          limits=Limits(memory="64M"), label="hog")
                ended, _ = await receive_until(ws, lambda m: m["type"] == "ended" and m["job"]["id"] == job.id)
                return job, ended
            finally:
                await close(ws)

        job, ended = run_async(scenario())
        assert ended["message"].startswith(f"job {job.id} `hog` killed: out of memory at 64 MiB after ")
        assert ended["job"]["state"] == "oom-killed" and ended["job"]["state_text"] == "killed: out of memory at 64 MiB"

    @pytest.mark.skipif(choose()[0].NAME == "none", reason="no cgroup measures a job's memory on this host")
    def test_a_running_jobs_memory_comes_from_its_usage_samples(self, lab, tenant_a):
        job = run(tenant_a, "python3 -c 'b = bytearray(40 << 20); b[::4096] = b\"x\" * len(b[::4096]); "
                  "import time; time.sleep(60)'", limits=Limits(memory="512M"))

        async def scenario():
            ws = await lab["a"].socket("/events")
            try:
                await receive(ws)
                message, _ = await receive_until(ws, lambda m: m["type"] == "job" and m["job"]["id"] == job.id
                                                 and (m["job"]["memory_now"] or 0) >= 40 << 20)
                return message["job"]
            finally:
                await close(ws)

        try:
            row = run_async(scenario())
        finally:
            job.stop()
        assert row["state"] == "running" and row["memory_peak"] >= row["memory_now"] and row["elapsed_s"] > 0

    def test_one_watcher_for_every_socket_and_none_once_they_closed(self, lab, tenant_a):
        pid = lab["a"].process.pid

        async def scenario():
            for _ in range(2):  # twice: a feed started again sends a whole snapshot
                before = _inotify_instances(pid)
                sockets = [await lab["a"].socket("/events") for _ in range(3)]
                for ws in sockets:
                    assert (await receive(ws))["type"] == "snapshot"
                assert _inotify_instances(pid) == before + 1  # one for the three
                for ws in sockets:
                    await close(ws)
                await until(lambda before=before: _inotify_instances(pid) == before, "the feed's inotify closed")

        run_async(scenario())


async def until(predicate, what: str, timeout: float = 15.0) -> None:
    """Poll ``predicate`` without blocking the event loop (the sockets' frames go on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _inotify_instances(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


class TestJobView:
    def test_state_then_log_frames_then_stop_kills_the_tree(self, lab, tenant_a, tmp_path):
        pids = tmp_path / "pids"
        script = (f"sleep 300 & echo $! >> {pids}; setsid sleep 300 & echo $! >> {pids}; "
                  "for i in 1 2 3; do echo line $i; done; wait")
        job = run(tenant_a, script)

        async def scenario():
            ws = await lab["a"].socket(f"/jobs/{job.id}/view")
            try:
                first = await receive(ws)
                assert first["type"] == "state"
                state = first["state"]
                assert state["job_id"] == job.id and state["max_lines"] == 1000 and state["following"] is True
                assert {"status_html", "charts_html", "log_snapshot", "log_frame", "view_key", "ended"} <= set(state)
                text = state["log_snapshot"]
                if "line 3" not in text:
                    message, _ = await receive_until(ws, lambda m: m["type"] == "custom" and "line 3" in m["content"]["lines"])
                    assert message["content"]["kind"] == "log" and message["content"]["frame"] > state["log_frame"]
                await until(lambda: pids.exists() and len(pids.read_text().split()) == 2, "the job's pids")
                await ws.write_message('{"type": "custom", "content": {"event": "stop"}}')
                stopping, _ = await receive_until(ws, lambda m: m["type"] == "state" and m["state"].get("stopping") is True)
                ended, _ = await receive_until(ws, lambda m: m["type"] == "state" and m["state"].get("ended") is True)
                assert ended["state"]["state"] == "stopped" and "stopped" in ended["state"]["status_html"]
            finally:
                await close(ws)

        run_async(scenario())
        assert job.status().state == "stopped"
        for pid in map(int, pids.read_text().split()):
            assert wait_for(lambda pid=pid: not _alive(pid), what=f"process {pid} of the tree gone")

    def test_an_ended_job_shows_its_whole_log_and_stops_following(self, lab, tenant_a):
        job = run(tenant_a, "echo done")
        job.wait()

        async def scenario():
            ws = await lab["a"].socket(f"/jobs/{job.id}/view")
            try:
                first = await receive(ws)
                ended, seen = await receive_until(ws, lambda m: m["type"] == "state" and m["state"].get("following") is False)
                return first, seen
            finally:
                await close(ws)

        first, seen = run_async(scenario())
        log = first["state"]["log_snapshot"] + "".join(line for m in seen if m["type"] == "custom" for line in m["content"]["lines"])
        assert first["state"]["job_id"] == job.id and "done" in log
        assert "exited (code 0)" in ([first["state"]] + [m["state"] for m in seen if m["type"] == "state"
                                                          and "status_html" in m["state"]])[-1]["status_html"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


class TestActions:
    def test_stop_rerun_remove(self, lab, tenant_a):
        job = run(tenant_a, "sleep 300", label="again")
        assert f"job {job.id}" in error(lab["a"].call("DELETE", f"/jobs/{job.id}"), 409)
        assert job.status().state == "running"
        row = lab["a"].call("POST", f"/jobs/{job.id}/stop").json()
        assert row["id"] == job.id and row["state"] == "stopped"
        new = lab["a"].call("POST", f"/jobs/{job.id}/rerun").json()
        assert new["id"] > job.id and new["label"] == "again" and new["state"] in ("running", "pending", "created")
        stopped = lab["a"].call("POST", "/jobs:stop", {"label": "again"}).json()
        assert stopped == {"stopped": [new["id"]]}
        assert lab["a"].call("DELETE", f"/jobs/{job.id}").status_code == 204
        assert error(lab["a"].call("GET", f"/jobs/{job.id}"), 404) == f"no job {job.id} for this identity"


class TestBadInput:
    @pytest.mark.parametrize(("method", "path", "body", "status"), [
        ("GET", "/jobs/999999", None, 404),
        ("GET", "/jobs/abc", None, 400),
        ("GET", "/jobs/007", None, 400),
        ("GET", "/jobs/99999999999999999999999", None, 400),
        ("POST", "/jobs/abc/stop", None, 400),
        ("DELETE", "/jobs/-1", None, 400),
        ("POST", "/jobs:stop", b"{not json", 400),
        ("POST", "/jobs:stop", b"[1, 2]", 400),
        ("POST", "/jobs:stop", {"ids": "1"}, 400),
        ("POST", "/jobs:stop", {"ids": [True]}, 400),
        ("POST", "/jobs:stop", {}, 400),
        ("PUT", "/identity", b"\xff\xfe", 400),
        ("PUT", "/identity", {"certPath": 12}, 400),
        ("PUT", "/identity", {"certPath": "/etc/shadow"}, 400),
        ("PUT", "/identity", {"certPath": "../../etc/passwd"}, 400),
        ("PUT", "/identity", {"certPath": "/"}, 400),
        ("PUT", "/identity", {"certPath": "/nonexistent/client.pem"}, 400),
        ("PUT", "/identity", {"certPath": "/dev/zero"}, 400),
        ("PUT", "/identity", {"certPath": "x" * 5000}, 400),
    ])
    def test_a_sentence_and_a_4xx(self, lab, tenant_a, method, path, body, status):
        raw = body if isinstance(body, bytes) else None
        response = lab["a"].call(method, path, None if raw is not None else body, raw=raw)
        message = error(response, status)
        assert "Traceback" not in message and "root:" not in message
        assert lab["a"].call("GET", "/identity").json()["hash"] == tenant_a.hash()  # unchanged


class TestIdentitySetting:
    def test_the_setting_wins_over_jobber_cert_and_the_feed_follows(self, lab, tenant_a, demo):
        other = Certificate.from_file(demo["client2"])
        other.new_job("true", label="tenant-b-job")  # (ids are per identity: labels tell them apart)
        run(tenant_a, "true", label="tenant-a-job")

        async def scenario():
            ws = await lab["a"].socket("/events")
            try:
                first = await receive(ws)
                described = lab["a"].call("PUT", "/identity", {"certPath": str(demo["client2"]), "server": ""}).json()
                switched, _ = await receive_until(ws, lambda m: m["type"] == "snapshot")
                back = lab["a"].call("PUT", "/identity", {"certPath": "", "server": ""}).json()
                again, _ = await receive_until(ws, lambda m: m["type"] == "snapshot")
                return first, described, switched, back, again
            finally:
                await close(ws)
                lab["a"].call("PUT", "/identity", {"certPath": "", "server": ""})

        first, described, switched, back, again = run_async(scenario())
        assert (described["hash"], described["source"]) == (other.hash(), "setting")
        assert (back["hash"], back["source"]) == (tenant_a.hash(), "JOBBER_CERT")
        labels = [{row["label"] for row in snapshot["jobs"]} for snapshot in (first, switched, again)]
        assert "tenant-a-job" in labels[0] and "tenant-b-job" not in labels[0]
        assert labels[1] == {"tenant-b-job"}
        assert labels[2] == labels[0]


    def test_a_job_view_closes_when_the_identity_changes(self, lab, tenant_a, demo):
        job = run(tenant_a, "sleep 300")

        async def scenario():
            ws = await lab["a"].socket(f"/jobs/{job.id}/view")
            try:
                assert (await receive(ws))["type"] == "state"
                lab["a"].call("PUT", "/identity", {"certPath": str(demo["client2"]), "server": ""})
                deadline = time.monotonic() + 30
                while await asyncio.wait_for(ws.read_message(), 30) is not None:
                    assert time.monotonic() < deadline, "the view stayed open"
                with contextlib.suppress(Exception):  # a Stop from the old view reaches nothing
                    await ws.write_message('{"type": "custom", "content": {"event": "stop"}}')
                return ws.close_code
            finally:
                ws.close()
                lab["a"].call("PUT", "/identity", {"certPath": "", "server": ""})

        try:
            assert run_async(scenario()) == 4000
            assert job.status().state == "running"
        finally:
            job.stop()


class TestRemoteIdentity:
    def test_a_jobber_servers_jobs_listed_fed_and_stopped(self, pki, server, tenant, tmp_path):
        cert, key = tenant
        remote = {"JOBBER_SERVER": server.url, "JOBBER_KEY": str(key), "JOBBER_CA": str(pki.server_ca)}
        lab = LabServer(cert, pki.root, tmp_path / "jobs", remote).wait_ready()
        try:
            with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca)) as session:
                described = lab.call("GET", "/identity").json()
                assert (described["source"], described["server"], described["jobs_dir"]) == ("remote", server.url, None)
                job = session.new_job("sleep 300", label="far", notify=True)
                job.start()

                async def scenario():
                    ws = await lab.socket("/events")
                    try:
                        snapshot = await receive(ws)
                        assert [row["label"] for row in snapshot["jobs"] if row["id"] == job.id] == ["far"]
                        stopped = lab.call("POST", f"/jobs/{job.id}/stop").json()
                        ended, _ = await receive_until(ws, lambda m: m["type"] == "ended" and m["job"]["id"] == job.id)
                        return stopped, ended
                    finally:
                        await close(ws)

                stopped, ended = run_async(scenario())
                assert stopped["state"] == "stopped" and job.status().state == "stopped"
                assert ended["message"].startswith(f"job {job.id} `far` stopped") and ended["notify"] is True
                assert error(lab.call("GET", "/jobs/999999"), 404) == "no job 999999 for this identity"
        finally:
            lab.stop()


class TestTheEventLoopIsNeverBlocked:
    def test_a_job_whose_files_block_their_reader_stalls_no_request(self, lab, tenant_a):
        # A FIFO where a job's files should be blocks whoever opens it: read on the
        # server's event loop, it would stall every request (and every notebook's kernel
        # messages) for as long; read in the feed's pool, only the feed waits.
        stuck = lab["jobs"] / tenant_a.hash() / "999000"
        stuck.mkdir(parents=True)
        fifos = [stuck / "spec.json", stuck / "status.json"]
        for fifo in fifos:
            os.mkfifo(fifo)
        released = threading.Event()

        def release() -> None:  # a writer that opens and closes: the reader reads an end, not JSON
            while not released.is_set():
                for fifo in fifos:
                    with contextlib.suppress(OSError):
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                time.sleep(0.05)

        async def scenario():
            ws = await lab["a"].socket("/events")
            try:
                answered = await asyncio.to_thread(lab["a"].call, "GET", "/identity")
                assert answered.status_code == 200
                threading.Thread(target=release, daemon=True).start()
                snapshot = await receive(ws, 60)
                assert snapshot["type"] == "snapshot" and 999000 not in [row["id"] for row in snapshot["jobs"]]
            finally:
                await close(ws)

        try:
            run_async(scenario())
        finally:
            shutil.rmtree(stuck)
            released.set()


class TestErrorWords:
    def test_an_identity_body_that_is_not_json_shows_an_identity(self, lab, tenant_a):
        message = error(lab["a"].call("PUT", "/identity", raw=b"xx"), 400)
        assert '"certPath"' in message and '"ids"' not in message

    def test_zero_is_no_job_id(self, lab, tenant_a):
        assert "positive whole numbers" in error(lab["a"].call("GET", "/jobs/0"), 400)

    def test_the_pools_ca_certificate_is_called_so(self, lab, tenant_a, demo):
        message = error(lab["a"].call("PUT", "/identity", {"certPath": str(demo["pool_ca"]), "server": ""}), 400)
        assert "is the CA certificate" in message and "client certificate" in message
        assert lab["a"].call("GET", "/identity").json()["hash"] == tenant_a.hash()


class TestHostileJobFiles:
    def test_jobs_whose_files_are_not_jobbers_are_left_out_and_nothing_fails(self, lab, tenant_a):
        good = run(tenant_a, "true", label="good")
        good.wait()
        spec = json.loads((good.path / "spec.json").read_text())
        mine = lab["jobs"] / tenant_a.hash()
        planted = {999001: {"status.json": "not json"}, 999002: {"spec.json": json.dumps({**spec, "label": "\ud800"})},
                   999003: {"spec.json": json.dumps({**spec, "command": 5, "env": "x", "limits": [1]})},
                   999004: {"spec.json": "[1, 2]", "status.json": "{}"}}
        for job_id, files in planted.items():
            (mine / str(job_id)).mkdir()
            for name, text in files.items():
                (mine / str(job_id) / name).write_text(text, errors="surrogatepass")

        async def snapshot():
            ws = await lab["a"].socket("/events")
            try:
                return await receive(ws, 60)
            finally:
                await close(ws)

        try:
            listed = lab["a"].call("GET", "/jobs")
            assert listed.status_code == 200, listed.text
            first = run_async(snapshot())
            for rows in (listed.json()["jobs"], first["jobs"]):
                ids = [row["id"] for row in rows]
                assert good.id in ids and not {999001, 999003, 999004} & set(ids)
            for job_id in planted:
                assert lab["a"].call("GET", f"/jobs/{job_id}").status_code in (200, 404, 409)

            async def views():
                for job_id in (999001, 999003, 999004):
                    with pytest.raises(Exception, match="409|404"):
                        await lab["a"].socket(f"/jobs/{job_id}/view")
                if lab["a"].call("GET", "/jobs/999002").status_code == 200:  # a lone surrogate in the label
                    ws = await lab["a"].socket("/jobs/999002/view")
                    try:
                        assert (await receive(ws))["type"] == "state"
                    finally:
                        await close(ws)

            run_async(views())
        finally:
            for job_id in planted:
                shutil.rmtree(mine / str(job_id))


class TestAClientThatNeverReads:
    def test_is_disconnected_rather_than_buffered_without_bound(self):
        # The handlers' own sending (BoundedSend) in a tornado server on loopback; the client
        # does the WebSocket handshake, then never reads (a frozen tab).
        from tornado import web, websocket
        from tornado.testing import bind_unused_port

        from jobber_lab._handlers import BoundedSend

        seen = {"peak": 0, "sent": 0, "closed": False}
        message = "x" * 65536

        class Flood(BoundedSend, websocket.WebSocketHandler):
            max_unsent = 1 << 20

            def open(self):
                asyncio.get_running_loop().call_soon(self.flood)

            def flood(self):
                while not self.ws_connection.is_closing() and seen["sent"] < 256 << 20:
                    self.send_text(message)
                    seen["sent"] += len(message)
                    seen["peak"] = max(seen["peak"], self._unsent)

            def on_close(self):
                seen["closed"] = True

        def client(port):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert sock.recv(12) == b"HTTP/1.1 101"
            return sock  # and never read again

        async def scenario():
            listener, port = bind_unused_port()
            server = tornado.httpserver.HTTPServer(web.Application([("/flood", Flood)]))
            server.add_sockets([listener])
            sock = await asyncio.to_thread(client, port)
            try:
                await until(lambda: seen["closed"], "the server gave up on the client", timeout=60)
            finally:
                sock.close()
                server.stop()

        run_async(scenario())
        assert seen["sent"] < 256 << 20, "the server went on buffering"
        assert seen["peak"] <= Flood.max_unsent + len(message)


def test_the_server_logged_no_error(lab):
    # Last: every test above ran against these servers.
    for name in ("a", "b"):
        log = lab[name].log()
        assert "Traceback" not in log and " 500 " not in log, log
