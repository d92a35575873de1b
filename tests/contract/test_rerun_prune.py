"""Re-runs and prunes through any session.

Moved here from tests/test_server_lifecycle.py (remote) and tests/test_storage.py (local).
"""

from __future__ import annotations

import pytest

import jobber
from jobber import JobError, LimitError, Limits

from .conftest import ran


class TestRerun:
    def test_rerun_copies_changes_and_records_the_original(self, session, expect):
        retries = {} if expect.slurm else {"retries": 1}  # Slurm refuses retries
        original = session.new_job('echo "x=$X"', Limits(memory="64M"), env={"X": "1"}, label="base", timeout=60,
                                   **retries)
        again = original.rerun(limits=Limits(memory="128M"), label="bigger", timeout=None)
        assert again.id != original.id and again.rerun_of == original.id
        assert (again.command, again.limits, again.label) == ('echo "x=$X"', Limits(memory="128M"), "bigger")
        assert again.status().state == "created" and again.status().timeout is None
        again.start()
        assert again.wait(expect.wait_s).state == "exited"
        assert jobber.last_lines(again, 1) == b"x=1\n"  # the environment came along
        assert again.env == original.env == {"X": "1"}
        kept = session.get_job(original.id)
        assert (kept.limits, kept.label, kept.rerun_of) == (Limits(memory="64M"), "base", None)
        if not expect.slurm:  # a Slurm job's limit is Slurm's --time, not a status field
            assert kept.status().timeout == 60.0
        assert kept.status().state == "created"
        assert again.backend == kept.backend == expect.backend

    def test_rerun_of_a_rerun_and_a_new_command(self, session):
        original = session.new_job("echo one")
        second = original.rerun(command="echo two")
        third = second.rerun()
        assert (second.command, third.command, third.rerun_of) == ("echo two", "echo two", second.id)

    def test_bad_overrides_are_refused_before_anything_is_made(self, session):
        original = session.new_job("true")
        for overrides, error, match in [({"timeout": "soon"}, JobError, "not a duration"),
                                        ({"log_max": "lots"}, LimitError, "not a size"),
                                        ({"command": ""}, JobError, "empty")]:
            with pytest.raises(error, match=match):
                original.rerun(**overrides)
        assert [job.id for job in session.get_jobs()] == [original.id]

    def test_a_rerun_of_an_ended_job_runs_again(self, session, expect):
        original = session.new_job("echo again")
        ran(original, expect.wait_s)
        again = original.rerun()
        assert ran(again, expect.wait_s).state == "exited"
        assert jobber.last_lines(again, 1) == b"again\n"


class TestPrune:
    def test_each_filter(self, session, expect, gate):
        done = [session.new_job(command) for command in ("true", "exit 3", "true")]
        for job in done:
            ran(job, expect.wait_s)
        done = [job.id for job in done]
        running = session.new_job(f"while [ ! -e {gate} ]; do sleep 0.05; done")
        running.start()
        waiting = session.new_job("true")
        everyone = done + [running.id, waiting.id]

        def ids():
            return [job.id for job in session.get_jobs()]

        assert session.prune(dry_run=True) == done
        assert session.prune(older_than="1d", dry_run=True) == []
        assert session.prune(states="failed", dry_run=True) == [done[1]]
        assert session.prune(states=["exited", "stopped"], keep_last=1, dry_run=True) == [done[0]]
        assert ids() == everyone  # dry runs remove nothing
        assert session.prune(states=["failed"]) == [done[1]]
        assert session.prune(keep_last=1) == [done[0]]
        assert session.prune() == [done[2]]
        assert ids() == [running.id, waiting.id]  # never a running or a created job
        gate.touch()
        assert running.wait(expect.wait_s).state == "exited"
        assert session.prune(older_than=0.000001) == [running.id, waiting.id]  # never started: as old as asked

    @pytest.mark.parametrize(("arguments", "message"), [
        ({"states": ["running"]}, "states ['running'] are not final states"),
        ({"states": "created"}, "states ['created'] are not final states"),
        ({"keep_last": -1}, "keep_last must be a whole number >= 0"),
        ({"older_than": "soon"}, "older_than: 'soon' is not a duration"),
    ])
    def test_bad_arguments_are_refused(self, session, expect, arguments, message):
        job = session.new_job("true")
        ran(job, expect.wait_s)
        with pytest.raises(JobError, match=message.replace("[", r"\[").replace("]", r"\]")):
            session.prune(**arguments)
        assert session.get_jobs() == [job]
