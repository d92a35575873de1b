"""Queues, dependencies, sweeps and GPUs on a real ``jobber serve`` (mTLS over loopback).

Queues are per certificate: one tenant's queue never admits another's jobs, and an
``after`` id of another tenant reads exactly as an id never used. A waiting job is
admitted by the finisher of the job before it on the server's host, with no client
request in between (the test reads the job directories, not the server). A job that
waits counts as running for the server's ``max_running_jobs`` (docs/server.md). What any
session does alike (a queue's order and settings, ``after``, sweeps) is in tests/contract/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import jobber
from jobber import JobError, LimitError, Limits
from jobber._backends.local import gpus
from serve_for_notebooks import Api


@pytest.fixture
def other(pki, server):
    cert, key = pki.client()
    with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10) as remote:
        yield remote


def _on_disk(server, session, job_id: int) -> dict:
    """The job's status.json on the server's host, read without asking the server."""
    try:
        return json.loads((Path(server.jobs_dir) / session.hash() / str(job_id) / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _until(check, timeout: float = 30.0, pause: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(pause)
    return result


class TestQueues:
    def test_the_finisher_on_the_server_admits_the_next_job(self, server, session):
        """Nothing asks the server meanwhile: the job that ends starts the one that waits."""
        session.set_queue("solo", parallel=1)
        first, second = session.new_job("sleep 1", queue="solo"), session.new_job("echo next", queue="solo")
        first.start()
        second.start()
        assert _on_disk(server, session, second.id).get("waiting") is True
        ended = _until(lambda: _on_disk(server, session, second.id).get("state") == "exited", timeout=30)
        assert ended, _on_disk(server, session, second.id)
        assert second.status().started_at >= first.status().ended_at
        assert b"".join(second.follow()) == b"next\n"

    def test_a_tenants_queue_is_its_own(self, session, other):
        session.set_queue("shared-name", parallel=1)
        blocker = session.new_job("sleep 30", queue="shared-name")
        blocker.start()
        try:
            waiting = session.new_job("true", queue="shared-name")
            waiting.start()
            assert waiting.status().state == "pending"
            assert other.queues() == {}, "another tenant sees nothing of A's queues"
            theirs = other.new_job("true", queue="shared-name")  # B's queue of that name: no limits
            theirs.start()
            assert theirs.wait(30).state == "exited"
            assert waiting.status().state == "pending", "B's job never took A's place, nor A's job B's"
            other.set_queue("shared-name", parallel=5)
            assert session.queues()["shared-name"]["parallel"] == 1
            assert session.queues()["shared-name"]["running"] == 1
            assert other.queues()["shared-name"] == {"parallel": 5, "memory": None, "cpus": None, "gpus": None,
                                                     "running": 0, "waiting": 0}
        finally:
            blocker.stop(grace=0)
        assert waiting.wait(30).state == "exited"

    def test_the_job_json_holds_queue_and_after(self, api):
        first = api("POST", "/v1/jobs", {"command": "true", "start": False}).json()
        assert (first["queue"], first["after"]) == (None, [])
        reply = api("POST", "/v1/jobs", {"command": "true", "queue": "q", "after": [first["id"], [first["id"], "any"]],
                                         "start": False})
        assert reply.status == 201, reply.body
        assert (reply.json()["queue"], reply.json()["after"]) == ("q", [[first["id"], "ok"], [first["id"], "any"]])

    @pytest.mark.parametrize(("body", "message"), [
        ({"parallel": -1}, "parallel: -1 is not a valid value"),
        ({"parallel": "2"}, "parallel: \"2\" is not a valid value"),
        ({"cpus": 1e300}, "cpus: 1e+300 is not a valid value"),
        ({"memory": "lots"}, "memory"),
        ({"priority": 3}, "unknown field(s) 'priority'"),
    ])
    def test_bad_settings_are_refused(self, api, body, message):
        reply = api("PUT", "/v1/queues/q", body)
        assert reply.status == 400, reply.body
        assert message in reply.json()["error"]

    def test_a_bad_queue_name_is_refused(self, api):
        assert api("PUT", "/v1/queues/a.b%20c", {}).status == 400
        reply = api("POST", "/v1/jobs", {"command": "true", "queue": "no/slash"})
        assert reply.status == 400
        assert "is not a queue name" in reply.json()["error"]


class TestAfter:
    def test_another_tenants_id_is_refused_as_an_unknown_one(self, pki, server, session):
        mine = [session.new_job("true") for _ in range(3)]
        stranger = Api(server.url, *pki.client(), pki.server_ca)
        theirs = stranger("POST", "/v1/jobs", {"command": "true", "after": [mine[-1].id], "start": False})
        unknown = stranger("POST", "/v1/jobs", {"command": "true", "after": [999], "start": False})
        assert (theirs.status, unknown.status) == (400, 400)
        assert theirs.json() == {"error": f"after: there is no job {mine[-1].id} (see `jobber ls`)", "type": "JobError"}
        assert unknown.json() == {"error": "after: there is no job 999 (see `jobber ls`)", "type": "JobError"}
        assert stranger("GET", "/v1/jobs").json() == {"jobs": []}, "nothing was made"

    @pytest.mark.parametrize("after", ["12", [True], [[1, "maybe"]], [0], {"id": 1}])
    def test_malformed_after_is_refused(self, api, after):
        reply = api("POST", "/v1/jobs", {"command": "true", "after": after})
        assert reply.status == 400, reply.body
        assert "is not a job id" in reply.json()["error"]


class TestGpus:
    def test_gpus_travel_in_the_limits_and_the_servers_host_answers(self, session):
        if gpus.discover():
            pytest.skip("this host has GPUs: the refusal below is for a host without any")
        with pytest.raises(LimitError, match="this host has no GPUs"):
            session.new_job("true", Limits(gpus=1))
        assert session.get_jobs() == []

    def test_too_many_gpus_are_refused(self, api):
        reply = api("POST", "/v1/jobs", {"command": "true", "limits": {"gpus": "1"}})
        assert reply.status == 400
        assert "limits.gpus" in reply.json()["error"]


CAPPED_ARGS = ["--max-running-jobs", "2"]
"""``capped`` (tests/conftest.py): a server that runs at most 2 jobs per certificate at once."""


class TestQuotas:
    def test_a_waiting_job_counts_as_running(self, capped, pki):
        cert, key = pki.client()
        with jobber.connect(capped.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10) as remote:
            remote.set_queue("q", parallel=1)
            running, waiting = remote.new_job("sleep 30", queue="q"), remote.new_job("true", queue="q")
            running.start()
            waiting.start()
            try:
                assert waiting.status().state == "pending"
                with pytest.raises(JobError, match="max_running_jobs 2"):
                    remote.new_job("true", queue="q").start()
            finally:
                running.stop(grace=0)
            assert waiting.wait(30).state == "exited"
            again = remote.new_job("true", queue="q")
            again.start()
            assert again.wait(30).state == "exited"
