"""jobber._jobs.selection: the job ids a clean-up names, and what a prune did and kept."""

from __future__ import annotations

import re

import pytest

from jobber import JobError
from jobber._jobs import store as store_module
from jobber._jobs.selection import MAX_SPANS, JobIds, Pruned, is_id_selection


class TestJobIds:
    @pytest.mark.parametrize(("given", "spans", "text"), [
        ("12-40", ((12, 40),), "12-40"),
        ("3,5,9", ((3, 3), (5, 5), (9, 9)), "3,5,9"),
        ("3 5 9", ((3, 3), (5, 5), (9, 9)), "3,5,9"),
        ([9, 3, 5], ((3, 3), (5, 5), (9, 9)), "3,5,9"),
        (range(12, 41), ((12, 40),), "12-40"),
        (range(5, 5), (), ""),
        (range(1, 10, 4), ((1, 1), (5, 5), (9, 9)), "1,5,9"),
        (7, ((7, 7),), "7"),
        (["1-3", 4, "6", "5"], ((1, 6),), "1-6"),  # adjacent and overlapping ranges merge
        ("10-20,15-30", ((10, 30),), "10-30"),
    ])
    def test_reads_ids_ranges_and_lists(self, given, spans, text):
        ids = JobIds.parse(given)
        assert ids.spans == spans and str(ids) == text
        assert JobIds.parse(str(ids)) == ids if spans else True

    def test_membership(self):
        ids = JobIds.parse("3,12-40")
        assert [n for n in (2, 3, 4, 11, 12, 40, 41) if n in ids] == [3, 12, 40]
        assert "12" not in ids and True not in ids  # only ints are ids

    @pytest.mark.parametrize(("given", "message"), [
        ("40-12", "ids: 40-12 runs backwards: write the lower id first, e.g. 12-40"),
        ("0", "ids: '0' is not a job id or a range of them"),
        ("3-", "ids: '3-' is not a job id or a range of them"),
        ("train", "ids: 'train' is not a job id or a range of them"),
        (" , ", "ids: ' , ' names no job"),
        (0, "ids: 0 is not a job id"),
        ([True], "ids: True is not a job id"),
        ({"a": 1}, "ids {'a': 1}: write job ids and ranges"),
        (b"12", "ids b'12': write job ids and ranges"),
    ])
    def test_anything_else_is_refused_with_the_form_to_use(self, given, message):
        with pytest.raises(JobError, match="^" + re.escape(message)):
            JobIds.parse(given)

    def test_too_many_separate_ranges_are_refused(self):
        JobIds.parse(list(range(1, 2 * MAX_SPANS, 2)))
        with pytest.raises(JobError, match=f"more than {MAX_SPANS} separate ids or ranges"):
            JobIds.parse(list(range(1, 2 * MAX_SPANS + 3, 2)))

    @pytest.mark.parametrize(("word", "is_ids"), [("12", True), ("12-40", True), ("3,5,9", True), ("train", False),
                                                  ("v1-2", False), ("", False), ("12-", False)])
    def test_words_that_name_jobs_by_number(self, word, is_ids):
        assert is_id_selection(word) is is_ids


class TestPruned:
    def test_is_the_list_of_ids_with_what_was_kept(self):
        pruned = Pruned([3, 5], {9: "running"})
        assert pruned == [3, 5] and pruned.kept == {9: "running"}
        assert pruned.describe(dry_run=True) == "would remove 2 jobs: 3, 5; kept 9 (running)"
        assert Pruned([4]).describe(dry_run=False) == "removed 1 job: 4"
        assert Pruned([], {9: "running"}).describe(dry_run=False) == "removed 0 jobs; kept 9 (running)"
        assert Pruned().describe(dry_run=False) == "nothing to prune"


class TestNeverStarted:
    def test_a_never_started_job_is_pruned_once_a_day_old_unless_told_sooner(self, store, jobs_dir, monkeypatch):
        job = store.new_job("true")
        pruned = store.prune(dry_run=True)
        assert pruned == [] and pruned.kept[job.id].startswith("never started, created ")
        assert store.prune(states=["exited"], older_than=0.000001, dry_run=True) == [], "states: ended jobs only"
        monkeypatch.setattr(store_module, "STALE_CREATED", 0.0)  # as if a day had passed
        assert store.prune(older_than="1h", dry_run=True) == [], "older_than is the threshold when given"
        assert store.prune() == [job.id]
        assert store.get_jobs() == []


class TestReviewFindings:
    def test_a_label_shaped_like_an_id_range_is_refused(self):
        from jobber import JobError
        from jobber._jobs.options import check_label

        for label in ("1-2", "12-40", "7"):
            with pytest.raises(JobError, match="nor a range such as 12-40"):
                check_label(label)
        assert check_label("lr-0.01") == "lr-0.01" and check_label("run-1") == "run-1"

    def test_hundreds_of_single_ids_merge_as_they_come(self):
        selected = JobIds.parse(list(range(1, 301)))
        assert str(selected) == "1-300" and 250 in selected

    def test_too_many_separate_ids_are_refused_not_cut(self):
        from jobber import JobError

        with pytest.raises(JobError, match="more than 200 separate"):
            JobIds.parse(list(range(1, 1000, 2)))

    def test_a_range_of_numbers_below_one_is_refused(self):
        from jobber import JobError

        with pytest.raises(JobError, match="not job ids"):
            JobIds.parse(range(-5, 3))
