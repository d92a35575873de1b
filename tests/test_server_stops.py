"""A stop over the API: the library's stop plan (``jobber._backends.stopping``), driven on
the server's event loop (``jobber._server.stops``).

What a plain stop answers is in test_server.py, and that a grace period holds no thread
(under load) in test_server_limits.py. Here: the SIGKILL after the grace, a job stopped
between two attempts, a client that hangs up during the grace, and a server that stops
during one.
"""

from __future__ import annotations

import signal
import threading

import pytest

from jobber._jobs.store import JobStore
from polling import wait_for
from serve_for_notebooks import Api, ServerProcess

# Ignores SIGTERM (and so does the sleep it starts): only the SIGKILL after the grace ends it.
STUBBORN = "trap '' TERM; sleep 300"


@pytest.fixture
def api(pki, server) -> Api:
    return Api(server.url, *pki.client(), pki.server_ca)


def status(api: Api, job_id: int) -> dict:
    return api("GET", f"/v1/jobs/{job_id}").json()["status"]


def running(api: Api, command: str, **fields) -> int:
    """A started job, once it runs; its id."""
    reply = api("POST", "/v1/jobs", {"command": command, **fields})
    assert reply.status == 201, reply.body
    job_id = reply.json()["id"]
    wait_for(lambda: status(api, job_id)["state"] == "running", 60, "the job to run")
    return job_id


class TestStop:
    def test_a_job_that_ignores_sigterm_is_killed_after_its_grace(self, api):
        job_id = running(api, STUBBORN)
        reply = api("POST", f"/v1/jobs/{job_id}/stop", {"grace": 1}, timeout=120)
        assert reply.status == 200, reply.body
        assert (reply.json()["status"]["state"], reply.json()["status"]["signal"]) == ("stopped", signal.SIGKILL)

    def test_a_job_between_two_attempts_is_stopped_there(self, api):
        reply = api("POST", "/v1/jobs", {"command": "exit 3", "retries": 4})
        job_id = reply.json()["id"]
        wait_for(lambda: status(api, job_id)["state"] == "pending", 60, "a backoff between two attempts")
        reply = api("POST", f"/v1/jobs/{job_id}/stop", {"grace": 1}, timeout=120)
        assert reply.status == 200, reply.body
        assert reply.json()["status"]["state"] == "stopped"
        attempts = [a["state"] for a in api("GET", f"/v1/jobs/{job_id}?attempts=1").json()["attempts"]]
        assert attempts[-1] == "stopped" and set(attempts[:-1]) == {"failed"}, attempts

    def test_a_client_that_hangs_up_does_not_stop_the_stop(self, api):
        job_id = running(api, STUBBORN)
        with pytest.raises(TimeoutError):  # the answer comes after the grace, 3 s from now
            api("POST", f"/v1/jobs/{job_id}/stop", {"grace": 3}, timeout=0.5)
        stopped = wait_for(lambda: (s := status(api, job_id))["state"] != "running" and s, 60, "the SIGKILL")
        assert (stopped["state"], stopped["signal"]) == ("stopped", signal.SIGKILL)


def test_a_server_that_stops_during_a_grace_finishes_the_stop_first(pki, tmp_path):
    jobs = tmp_path / "jobs"
    server = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs).start()
    store = job_id = None
    try:
        api = Api(server.url, *pki.client(), pki.server_ca)
        store = JobStore(api("GET", "/v1/identity").json()["hash"], jobs)
        job_id = running(api, STUBBORN)
        asked = threading.Thread(target=lambda: _ignore_errors(api, "POST", f"/v1/jobs/{job_id}/stop", {"grace": 3}))
        asked.start()
        wait_for(lambda: (store.path / str(job_id) / "stop-requested").exists(), 60, "the stop to begin")
        assert server.stop(signal.SIGTERM, timeout=120) == 0  # after the stop's thread ended
        asked.join(60)
        final = store.get_job(job_id).status()
        assert (final.state, final.signal) == ("stopped", signal.SIGKILL)
    finally:
        server.stop()
        if job_id is not None and store is not None:
            store.get_job(job_id).stop(grace=0)


def _ignore_errors(api: Api, *args) -> None:
    try:
        api(*args, timeout=60)
    except OSError:
        pass  # the server went away during the stop: the job's state tells what happened
