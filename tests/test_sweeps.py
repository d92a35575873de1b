"""``jobber._jobs.sweeps`` directly: the expansion of a template (a pure function), the
split of ``sweep()``'s keywords into job options and parameters, a sweep made whole or not
at all, ``parallel=`` and ``Sweep``'s table, stop and wait. The jobs are real ones of a
store on this host; what a sweep does through each kind of session is in
tests/contract/test_follow_sweep.py.
"""

from __future__ import annotations

import pytest

from jobber import JobError, Limits
from jobber._jobs.sweeps import Sweep, expand, sweep


class Recording:
    """A session that makes real jobs in ``store`` and records each ``new_job`` call."""

    def __init__(self, store, fail_at: int | None = None) -> None:
        self.store = store
        self.calls: list[tuple[str, object, dict]] = []
        self.fail_at = fail_at

    def new_job(self, command, limits=None, **options):
        self.calls.append((command, limits, options))
        if len(self.calls) == self.fail_at:
            raise JobError(f"refused job {self.fail_at}")
        return self.store.new_job(command, limits, **options)


class TestExpand:
    def test_the_last_parameter_changes_fastest(self):
        assert expand("run {a} {b}", {"a": [1, 2], "b": ["x", "y"]}) == [
            ({"a": 1, "b": "x"}, "run 1 x"), ({"a": 1, "b": "y"}, "run 1 y"),
            ({"a": 2, "b": "x"}, "run 2 x"), ({"a": 2, "b": "y"}, "run 2 y")]

    def test_values_are_quoted_and_other_braces_kept(self):
        [(_, command)] = expand("echo {x} ${HOME} '{print $1}' {y}", {"x": ["a b"], "y": ["$(id)"]})
        assert command == "echo 'a b' ${HOME} '{print $1}' '$(id)'"

    def test_a_placeholder_may_appear_twice_and_iterables_are_lists(self):
        assert expand("{n}+{n}", {"n": range(2)}) == [({"n": 0}, "0+0"), ({"n": 1}, "1+1")]

    @pytest.mark.parametrize(("template", "params", "message"), [
        ("", {"x": [1]}, "the sweep's command template is empty"),
        ("   ", {"x": [1]}, "the sweep's command template is empty"),
        ("echo {x}", {}, "a sweep needs parameters"),
        ("echo {x}", {"x": "abc"}, r"sweep parameter x: give a list of values, e.g. x=\[0.1, 0.01\], not 'abc'"),
        ("echo {x}", {"x": 3}, "sweep parameter x: give a list of values"),
        ("echo {x}", {"x": []}, "sweep parameter x has no values"),
        ("echo {x}", {"x": [1], "y": [2]}, r"the template does not use \{y\}: every parameter must appear in it"),
        ("echo {x}", {"x": range(101), "y": range(100)}, "the template does not use"),
        ("echo {x} {y}", {"x": range(101), "y": range(100)}, "this sweep makes 10,100 jobs; at most 10,000 at once"),
    ])
    def test_bad_sweeps_are_refused_saying_why(self, template, params, message):
        with pytest.raises(JobError, match=message):
            expand(template, params)

    def test_ten_thousand_jobs_are_allowed(self):
        assert len(expand("echo {x} {y}", {"x": range(100), "y": range(100)})) == 10_000

    def test_a_placeholder_without_a_value_stays_as_written(self):
        assert expand("echo {x} {other}", {"x": [1]}) == [({"x": 1}, "echo 1 {other}")]


class TestSweep:
    def test_job_options_apply_to_every_job_and_the_rest_are_parameters(self, store):
        session = Recording(store)
        made = sweep(session, "echo {lr}", limits=Limits(memory="64M"), lr=[0.1, 0.01], env={"A": "1"},
                     timeout="1h", label="train", start=False)
        assert [call[0] for call in session.calls] == ["echo 0.1", "echo 0.01"]
        assert {call[1] for call in session.calls} == {Limits(memory="64M")}
        assert [call[2] for call in session.calls] == [
            {"env": {"A": "1", "SWEEP_LR": "0.1"}, "timeout": "1h", "label": "train-1"},
            {"env": {"A": "1", "SWEEP_LR": "0.01"}, "timeout": "1h", "label": "train-2"}]
        assert isinstance(made, Sweep) and made.params == [{"lr": 0.1}, {"lr": 0.01}]
        assert made.template == "echo {lr}"
        assert [job.status().state for job in made] == ["created", "created"]

    def test_the_default_label_is_sweep(self, store):
        made = sweep(store, "echo {n}", n=[1, 2], start=False)
        assert [job.label for job in made] == ["sweep-1", "sweep-2"]

    def test_a_refused_job_removes_the_ones_made(self, store):
        session = Recording(store, fail_at=3)
        with pytest.raises(JobError, match="refused job 3"):
            sweep(session, "echo {n}", n=[1, 2, 3, 4])
        assert len(session.calls) == 3
        assert store.get_jobs() == []

    def test_started_jobs_run_with_their_values(self, store):
        made = sweep(store, 'echo {n} "$SWEEP_N"', n=["a b", 2])
        assert [status.state for status in made.wait(30)] == ["exited", "exited"]
        assert [job.log_path.read_bytes() for job in made] == [b"a b a b\n", b"2 2\n"]

    @pytest.mark.parametrize(("options", "message"), [
        ({}, "parallel= is for Slurm sweeps \\(backend=\"slurm\"\\), not 'local' ones"),
        ({"backend": "slurm", "start": False}, "parallel= caps the Slurm array the sweep submits: it needs start=True"),
        ({"backend": "slurm", "parallel_value": 0}, "parallel=0: give how many of the sweep's jobs may run at once"),
        ({"backend": "slurm", "parallel_value": True}, "parallel=True: give how many"),
    ])
    def test_parallel_is_for_slurm_arrays_only(self, store, options, message):
        options = dict(options)
        parallel = options.pop("parallel_value", 2)
        with pytest.raises(JobError, match=message):
            sweep(store, "echo {n}", n=[1, 2], parallel=parallel, **options)
        assert store.get_jobs() == []

    def test_parallel_follows_jobber_backend(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_BACKEND", "slurm")
        with pytest.raises(JobError, match="parallel= caps the Slurm array"):
            sweep(store, "echo {n}", n=[1, 2], parallel=2, start=False)


class TestSweepObject:
    def test_table_has_a_row_per_job(self, store):
        made = sweep(store, "echo {x}; exit {code}", x=["hi"], code=[0, 3])
        made.wait(30)
        rows = made.table()
        rows = rows.reset_index().to_dict("records") if hasattr(rows, "reset_index") else rows
        assert [(r["job"], r["x"], r["code"], r["state"], r["last_line"]) for r in rows] == [
            (made[0].id, "hi", 0, "exited", "hi"), (made[1].id, "hi", 3, "failed", "hi")]
        assert rows[1]["result"] == "failed (code 3)"
        assert all(r["elapsed"] is not None for r in rows)

    def test_table_of_jobs_not_started(self, store):
        rows = sweep(store, "echo {x}", x=[1], start=False).table()
        rows = rows.reset_index().to_dict("records") if hasattr(rows, "reset_index") else rows
        assert [(r["state"], r["last_line"]) for r in rows] == [("created", "")]

    def test_stop_takes_the_waiting_jobs_first_and_leaves_created_and_ended_ones(self, store):
        store.set_queue("one", parallel=1)
        ended = store.new_job("true")
        ended.start()
        ended.wait(30)
        running, waiting = store.new_job("sleep 60", queue="one"), store.new_job("sleep 60", queue="one")
        created = store.new_job("true")
        running.start()
        waiting.start()
        assert waiting.status().state == "pending"
        made = Sweep([ended, running, waiting, created], [{}] * 4, "x")
        statuses = made.stop(grace=0)
        assert [s.state for s in statuses] == ["exited", "stopped", "stopped", "created"]
        assert waiting.status().started_at is None  # stopped while waiting: it never ran

    def test_wait_gives_every_status_in_order(self, store):
        made = sweep(store, "exit {code}", code=[1, 0])
        assert [(s.state, s.exit_code) for s in made.wait(30)] == [("failed", 1), ("exited", 0)]
