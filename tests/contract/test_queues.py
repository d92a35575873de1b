"""Queues and dependencies through any session. Slurm's partitions are its queues: a
``queue=`` job is refused there, and those cases assert the refusal; ``after`` becomes
Slurm's ``--dependency``.

Moved here from tests/test_server_queues.py (remote) and tests/test_queues.py (local).
"""

from __future__ import annotations

import pytest

from jobber import JobError


def _refused_on_slurm(session, expect) -> bool:
    """On Slurm: assert that a queued job is refused (and nothing made); True then."""
    if not expect.slurm:
        return False
    with pytest.raises(JobError, match=expect.refused_on_slurm("queue")):
        session.new_job("true", queue="one")
    assert session.get_jobs() == []
    return True


class TestQueues:
    def test_parallel_one_runs_three_jobs_one_at_a_time(self, session, expect):
        settings = session.set_queue("one", parallel=1)
        assert {k: settings[k] for k in ("parallel", "memory", "cpus", "gpus")} == {
            "parallel": 1, "memory": None, "cpus": None, "gpus": None}
        assert session.queues()["one"] == {"parallel": 1, "memory": None, "cpus": None, "gpus": None,
                                           "running": 0, "waiting": 0}
        if _refused_on_slurm(session, expect):
            return
        jobs = [session.new_job("sleep 0.5", queue="one") for _ in range(3)]
        for job in jobs:
            job.start()
        assert [job.status().state for job in jobs[1:]] == ["pending", "pending"]
        assert jobs[2].status().note == "queue `one`: 1 of 1 running"
        assert session.queues()["one"]["waiting"] == 2
        statuses = [job.wait(60) for job in jobs]
        assert [s.state for s in statuses] == ["exited"] * 3
        spans = [(s.started_at, s.ended_at) for s in statuses]
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), spans

    def test_more_parallel_admits_waiting_jobs_at_once(self, session, expect):
        session.set_queue("q", parallel=1)
        if _refused_on_slurm(session, expect):
            return
        jobs = [session.new_job("sleep 30", queue="q") for _ in range(3)]
        for job in jobs:
            job.start()
        try:
            assert [j.status().state for j in jobs] == ["running", "pending", "pending"]
            session.set_queue("q", parallel=3)
            assert session.queues()["q"]["running"] == 3
            assert [j.status().state for j in jobs] == ["running", "running", "running"]
        finally:
            for job in jobs:
                job.stop(grace=0)

    def test_waiting_jobs_say_why_and_queue_settings_persist(self, session, expect, reopen):
        session.set_queue("gpu", parallel=1)
        if _refused_on_slurm(session, expect):
            return
        first = session.new_job("sleep 30", queue="gpu")
        second = session.new_job("true", queue="gpu")
        first.start()
        second.start()
        status = second.status()
        assert (status.state, status.ended) == ("pending", False)
        assert status.note == "queue `gpu`: 1 of 1 running"
        other = reopen()  # as another process sees them
        assert other.queues()["gpu"] == {"parallel": 1, "memory": None, "cpus": None, "gpus": None,
                                         "running": 1, "waiting": 1}
        first.stop(grace=0)
        assert second.wait(30).state == "exited"

    def test_set_queue_answers_what_queues_says(self, session, kind, request):
        if kind != "remote":
            request.applymarker(pytest.mark.xfail(strict=True, reason="found by this suite: a Certificate's set_queue "
                                                  "returns the settings only, the remote one adds running and waiting"))
        assert session.set_queue("one", parallel=1) == session.queues()["one"]

    def test_a_bad_queue_setting_is_refused(self, session):
        with pytest.raises(JobError, match="parallel"):
            session.set_queue("q", parallel=-1)
        assert "q" not in session.queues()


class TestAfter:
    def test_a_job_runs_after_another(self, session, expect):
        first = session.new_job("sleep 0.5")
        first.start()
        second = session.new_job("echo after", after=first)
        second.start()
        if not expect.slurm:  # Slurm says why in its own words ("reason: Dependency")
            assert second.status().note == f"after job {first.id}"
        assert second.wait(expect.wait_s).state == "exited"
        assert second.status().started_at >= first.status().ended_at

    def test_a_failed_dependency_fails_the_job_unrun(self, session, expect):
        if expect.slurm:
            pytest.skip("Slurm keeps a job whose afterok dependency failed pending (DependencyNeverSatisfied), and "
                        "jobber refuses it when it already knows: tests/test_slurm.py covers both")
        first = session.new_job("exit 1")
        first.start()
        never, anyway = session.new_job("true", after=[first.id]), session.new_job("true", after=[(first.id, "any")])
        never.start()
        anyway.start()
        assert never.wait(30).state == "failed" and never.status().started_at is None
        assert anyway.wait(30).state == "exited"

    def test_an_unknown_job_is_refused_and_nothing_is_made(self, session):
        with pytest.raises(JobError, match="after: there is no job 999"):
            session.new_job("true", after=[999])
        assert session.get_jobs() == []
