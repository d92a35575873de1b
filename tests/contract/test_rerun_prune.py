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


class TestPruneSelection:
    """``prune(label=..., ids=...)``: only the jobs chosen, running ones kept and said so."""

    def test_by_label_and_by_ids_keeping_what_runs(self, session, expect, gate):
        first, other, second = (session.new_job("true", label=label) for label in ("a", "b", "a"))
        for job in (first, other, second):
            ran(job, expect.wait_s)
        running = session.new_job(f"while [ ! -e {gate} ]; do sleep 0.05; done", label="a")
        running.start()
        fresh = session.new_job("true", label="a")
        everyone = [first.id, other.id, second.id, running.id, fresh.id]

        pruned = session.prune(label="a", dry_run=True)
        assert pruned == [first.id, second.id] and isinstance(pruned, list)
        assert list(pruned.kept) == [running.id, fresh.id]
        assert pruned.kept[running.id] == "running" or pruned.kept[running.id].startswith("pending")
        assert pruned.kept[fresh.id].startswith("never started, created ")
        assert session.prune(ids=f"{first.id}-{other.id}", dry_run=True) == [first.id, other.id]
        assert session.prune(ids=[other.id, second.id], dry_run=True) == [other.id, second.id]
        assert session.prune(ids=f"{first.id} {second.id}", dry_run=True) == [first.id, second.id]
        assert session.prune(ids=range(first.id, first.id + 1), dry_run=True) == [first.id]
        assert session.prune(label="nobody", dry_run=True) == [] and [job.id for job in session.get_jobs()] == everyone

        assert session.prune(label="a", ids=f"{other.id}-{second.id}") == [second.id]
        pruned = session.prune(label="a", older_than=0.000001)  # a never-started job as old as asked goes too
        assert pruned == [first.id, fresh.id] and list(pruned.kept) == [running.id]
        assert [job.id for job in session.get_jobs()] == [other.id, running.id]
        gate.touch()
        assert running.wait(expect.wait_s).ended

    @pytest.mark.parametrize(("arguments", "message"), [
        ({"ids": "40-12"}, "ids: 40-12 runs backwards: write the lower id first, e.g. 12-40"),
        ({"ids": "all"}, "ids: 'all' is not a job id or a range of them"),
        ({"ids": [3, 2.5]}, "ids: 2.5 is not a job id"),
        ({"label": "no label!"}, "label 'no label!' is not a label"),
    ])
    def test_a_malformed_selection_is_refused(self, session, expect, arguments, message):
        job = session.new_job("true")
        ran(job, expect.wait_s)
        with pytest.raises(JobError, match=message.replace("(", r"\(")):
            session.prune(**arguments)
        assert session.get_jobs() == [job]
