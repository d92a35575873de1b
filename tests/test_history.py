"""Earlier runs of a label (``jobber._jobs.history``) and ``Limits(memory="auto")``.

The runs are real jobs that allocate known amounts under a memory limit; the numbers
checked are the peaks their own statuses report.
"""

from __future__ import annotations

import inspect
import re

import pytest

from jobber import LimitError, Limits
from jobber._jobs import history
from jobber._jobs.store import JobStore

MIB = 1 << 20


def allocate(mib: int) -> str:
    return f"python3 -c 'b = b\"x\" * ({mib} << 20)'"


def run(store, command: str, **options):
    job = store.new_job(command, Limits(memory="200M"), **options)
    job.start()
    status = job.wait(60)
    assert status.state == "exited", status
    return job, status


@pytest.fixture
def three_runs(store):
    """Three runs labelled `x` that allocate 30, 40 and 50 MiB; their final statuses."""
    return [run(store, allocate(mib), label="x")[1] for mib in (30, 40, 50)]


class TestLastRuns:
    def test_describes_the_peaks_and_cores_of_the_last_three_runs(self, store, three_runs):
        found = history.last_runs(store, "x")
        peaks = [status.peak_memory_bytes for status in three_runs]
        assert found.runs == 3
        assert (found.peak_min, found.peak_max) == (min(peaks), max(peaks))
        assert 30 * MIB <= found.peak_min < found.peak_max
        assert found.peak_max >= 50 * MIB
        text = found.describe()
        match = re.fullmatch(r"last 3 runs of `x` \(jobs \d+, \d+, \d+\) peaked at ([\d.]+)-([\d.]+) MiB, ([\d.]+)(-[\d.]+)? cores", text)
        assert match, text
        assert float(match.group(1)) == pytest.approx(min(peaks) / MIB, abs=0.05)
        assert float(match.group(2)) == pytest.approx(max(peaks) / MIB, abs=0.05)
        cores = [status.cpu_seconds / status.elapsed for status in three_runs]
        assert float(match.group(3)) == pytest.approx(min(cores), abs=0.05)

    def test_newest_first_and_at_most_three(self, store, three_runs):
        newest, _ = run(store, allocate(10), label="x")
        found = history.last_runs(store, "x")
        assert found.runs == 3
        assert found.job_ids[0] == newest.id
        assert found.peak_min < 30 * MIB  # the 10 MiB run replaced the 30 MiB one

    def test_unlabelled_and_other_labels_are_not_counted(self, store, three_runs):
        run(store, allocate(90))
        run(store, allocate(90), label="y")
        found = history.last_runs(store, "x")
        assert found.runs == 3
        assert found.peak_max < 90 * MIB
        assert history.last_runs(store, "z") is None

    def test_a_running_job_is_not_counted(self, store):
        done, status = run(store, allocate(20), label="x")
        running = store.new_job("sleep 300", label="x")
        running.start()
        found = history.last_runs(store, "x")
        assert found.job_ids == (done.id,)
        assert found.peak_max == status.peak_memory_bytes
        assert found.describe().startswith(f"last run of `x` (job {done.id}) peaked at ")
        running.stop(grace=0)

    def test_before_leaves_a_job_and_its_successors_out(self, store, three_runs):
        jobs = store.get_jobs(label="x")
        found = history.last_runs(store, "x", before=jobs[-1].id)
        assert found.job_ids == (jobs[1].id, jobs[0].id)


def oom_run(store, label: str = "x"):
    """A run labelled ``label`` that the OOM killer ends at its 40 MiB limit."""
    job = store.new_job(allocate(200), Limits(memory="40M"), label=label)
    job.start()
    status = job.wait(60)
    assert status.state == "oom-killed", status
    return job, status


class TestOomKilledRuns:
    """An OOM kill is where the job was stopped, not its peak: a lower bound."""

    def test_an_oom_kill_is_not_counted_as_a_peak(self, store):
        done, status = run(store, allocate(20), label="x")
        killed, _ = oom_run(store)
        found = history.last_runs(store, "x")
        assert found.job_ids == (done.id,) and found.peak_max == status.peak_memory_bytes
        assert found.oom_job_ids == (killed.id,) and found.oom_bound == 40 * MIB
        assert found.describe().endswith(f"; job {killed.id} was OOM-killed at 40 MiB (a lower bound: it needed more)")
        # The killed run needed more than 40 MiB: auto does not go below that.
        assert found.suggest_memory() == history.tidy_size(int(40 * MIB * history.HEADROOM))

    def test_only_oom_kills_refuse_auto_and_say_they_are_a_lower_bound(self, store):
        killed, _ = oom_run(store)
        found = history.last_runs(store, "x")
        assert found.job_ids == () and found.describe() == (
            f"job {killed.id} (`x`) was OOM-killed at 40 MiB (a lower bound: it needed more)")
        with pytest.raises(LimitError, match=rf"needs an earlier run of `x` that was not OOM-killed: job {killed.id} was "
                                             r"killed at 40 MiB, a lower bound and not a peak; give a size above it, "
                                             r"e.g. --memory 80M"):
            history.resolve_auto(store, Limits(memory="auto"), "x")

    def test_describe_names_several_kills(self):
        found = history.RunHistory("t", (1,), 50 * MIB, 50 * MIB, oom_job_ids=(4, 3), oom_bound=100 * MIB)
        assert found.describe() == ("last run of `t` (job 1) peaked at 50 MiB; jobs 3, 4 were OOM-killed at up to "
                                    "100 MiB (a lower bound: it needed more)")
        assert found.suggest_memory() == 128 * MIB


class TestDescribe:
    def test_one_size_and_one_core_count_read_once(self):
        found = history.RunHistory("train", (3, 2, 1), int(3.41 * (1 << 30)), int(3.44 * (1 << 30)), 1.81, 1.84)
        assert found.describe() == "last 3 runs of `train` (jobs 1, 2, 3) peaked at 3.4 GiB, 1.8 cores"

    def test_ranges_across_units(self):
        found = history.RunHistory("train", (2, 1), 900 * MIB, int(1.2 * (1 << 30)), 0.5, 1.8)
        assert found.describe() == "last 2 runs of `train` (jobs 1, 2) peaked at 900 MiB-1.2 GiB, 0.5-1.8 cores"

    def test_without_cpu_times_no_cores(self):
        assert history.RunHistory("t", (1,), 50 * MIB, 50 * MIB).describe() == "last run of `t` (job 1) peaked at 50 MiB"


class TestTidySize:
    @pytest.mark.parametrize(("size", "tidy"), [
        (1, 16 * MIB), (16 * MIB, 16 * MIB), (16 * MIB + 1, 32 * MIB), (69 * MIB, 80 * MIB),
        ((1 << 30) + 1, (1 << 30) + 64 * MIB), (4 << 30, 4 << 30), ((4 << 30) + 1, (4 << 30) + 256 * MIB),
    ])
    def test_rounds_up_to_a_step(self, size, tidy):
        assert history.tidy_size(size) == tidy

    def test_suggestion_is_a_quarter_above_the_largest_peak(self):
        found = history.RunHistory("t", (2, 1), 30 * MIB, 64 * MIB)
        assert found.suggest_memory() == 80 * MIB


class TestResolveAuto:
    def test_picks_a_quarter_above_the_largest_peak(self, store, three_runs):
        resolved = history.resolve_auto(store, Limits(cpu=1, memory="auto", pids=50), "x")
        peak = max(status.peak_memory_bytes for status in three_runs)
        assert resolved.memory >= 1.25 * peak
        assert resolved.memory % (16 * MIB) == 0
        assert (resolved.cpu, resolved.pids) == (1.0, 50)
        assert Limits.from_dict(resolved.to_dict()) == resolved

    def test_other_limits_come_back_unchanged(self, store):
        limits = Limits(memory="1G")
        assert history.resolve_auto(store, limits, None) is limits
        assert history.resolve_auto(store, None, "x") is None

    def test_without_a_label_says_so(self, store):
        with pytest.raises(LimitError, match="--memory auto needs a label"):
            history.resolve_auto(store, Limits(memory="auto"), None)

    def test_without_an_earlier_run_says_what_to_do(self, store):
        run(store, allocate(10))  # unlabelled: no history for any label
        with pytest.raises(LimitError, match=r"needs an earlier run of a job with the same label \('x'\) that "
                                             r"reported its peak memory: run it once with a limit, or give a size"):
            history.resolve_auto(store, Limits(memory="auto"), "x")

    @pytest.mark.skipif("resolve_auto" not in inspect.getsource(JobStore),
                        reason="JobStore.new_job does not call history.resolve_auto yet")
    def test_new_job_stores_the_picked_size(self, store, three_runs):
        job = store.new_job("true", Limits(memory="auto"), label="x")
        assert job.limits.memory == history.last_runs(store, "x").suggest_memory()
        with pytest.raises(LimitError, match="needs a label"):
            store.new_job("true", Limits(memory="auto"))


class TestAutoLimit:
    def test_auto_is_recognised(self):
        assert Limits(memory=" Auto ").memory == "auto"
        assert Limits(memory="auto").describe() == "memory=auto"
        assert Limits(memory="auto").beyond_host() == []

    def test_auto_is_never_stored(self):
        with pytest.raises(LimitError, match="not a size yet"):
            Limits(memory="auto").to_dict()
        with pytest.raises(LimitError, match="not a size yet"):
            Limits.from_dict({"memory": "auto"})

    def test_other_words_are_still_not_sizes(self):
        with pytest.raises(LimitError, match="is not a size"):
            Limits(memory="automatic")
