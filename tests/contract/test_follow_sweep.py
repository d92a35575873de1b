"""Following a job's log, and sweeps, through any session.

Moved here from tests/test_client.py and tests/test_server_queues.py (remote) and
tests/test_jobs.py (local). On Slurm a sweep is one job array.
"""

from __future__ import annotations

import pytest

from jobber import JobError


class TestFollow:
    def test_follow_streams_as_the_job_writes(self, session, expect, gate):
        job = session.new_job(f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second")
        job.start()
        chunks = job.follow()
        assert next(chunks) == b"first\n"  # the job is blocked on the gate: a live stream
        gate.touch()
        assert b"".join(chunks) == b"second\n"
        assert job.status().state == "exited"

    def test_follow_from_the_end(self, session, expect):
        job = session.new_job("printf 0123456789")
        job.start()
        job.wait(expect.wait_s)
        assert b"".join(job.follow(-3)) == b"789"
        assert b"".join(job.follow(8)) == b"89"
        assert b"".join(job.follow()) == b"0123456789"

    def test_follow_with_heartbeat_yields_while_the_job_is_silent(self, session, gate):
        job = session.new_job(f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second")
        job.start()
        chunks = job.follow(heartbeat=0.1)
        assert next(c for c in chunks if c) == b"first\n"  # a pending Slurm job beats first
        assert next(chunks) == b""  # nothing written: a heartbeat, not a block
        gate.touch()
        assert b"".join(chunks) == b"second\n"

    def test_follow_ends_with_a_stopped_job(self, session, expect):
        job = session.new_job("echo up; sleep 60")
        job.start()
        chunks = job.follow()
        assert next(chunks) == b"up\n"
        job.stop(grace=0)
        rest = b"".join(chunks)
        # A real Slurm's slurmstepd writes its own "*** JOB n ... CANCELLED ... ***" line.
        assert rest == b"" or (expect.real_cluster and b"CANCELLED" in rest), rest
        assert job.status().state == "stopped"


class TestSweep:
    def test_a_sweep_makes_and_starts_a_job_per_value(self, session, expect):
        sweep = session.sweep("echo {x}-$SWEEP_X", x=[1, 2, 3], label="sw")
        assert sweep.params == [{"x": 1}, {"x": 2}, {"x": 3}]
        assert [s.state for s in sweep.wait(expect.wait_s)] == ["exited"] * 3
        assert [b"".join(job.follow()) for job in sweep] == [b"1-1\n", b"2-2\n", b"3-3\n"]
        assert [job.label for job in sweep] == ["sw-1", "sw-2", "sw-3"]
        assert session.get_jobs(label="sw-2") == [sweep[1]]
        assert {job.backend for job in sweep} == {expect.backend}

    def test_a_sweep_through_a_queue(self, session, expect):
        session.set_queue("sw", parallel=2)
        if expect.slurm:
            with pytest.raises(JobError, match=expect.refused_on_slurm("queue")):
                session.sweep("echo {x}-$SWEEP_X", x=[1, 2, 3], queue="sw", label="remote-sweep")
            assert session.get_jobs() == []
            return
        sweep = session.sweep("echo {x}-$SWEEP_X", x=[1, 2, 3], queue="sw", label="remote-sweep")
        assert sweep.params == [{"x": 1}, {"x": 2}, {"x": 3}]
        assert [s.state for s in sweep.wait(60)] == ["exited"] * 3
        assert [b"".join(job.follow()) for job in sweep] == [b"1-1\n", b"2-2\n", b"3-3\n"]
        assert [job.label for job in sweep] == ["remote-sweep-1", "remote-sweep-2", "remote-sweep-3"]
        rows = sweep.table()
        assert [row["x"] for row in (rows.to_dict("records") if hasattr(rows, "to_dict") else rows)] == [1, 2, 3]

    def test_a_refused_job_makes_none(self, session):
        with pytest.raises(JobError, match="there is no job 999"):
            session.sweep("echo {x}", x=[1, 2], after=999)
        assert session.get_jobs() == []

    def test_a_sweep_can_be_stopped_whole(self, session, expect):
        sweep = session.sweep("sleep {s}", s=[60, 61])
        assert [status.state for status in sweep.stop(grace=0)] == ["stopped", "stopped"]
        assert [job.status().state for job in sweep] == ["stopped", "stopped"]
