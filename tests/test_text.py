"""Sizes, spans of time and "did you mean", as every part of jobber words them (jobber._text)."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import pytest

import jobber
from jobber import JobStatus, Limits
from jobber._text import did_you_mean, format_duration, format_elapsed, format_size


class TestFormatSize:
    @pytest.mark.parametrize(("size", "text"), [
        (None, "-"), (0, "0 B"), (12, "12 B"), (1023, "1023 B"), (512.0, "512 B"), (1024, "1 KiB"),
        (1536, "1.5 KiB"), (50 << 20, "50 MiB"), (1536 << 20, "1.5 GiB"), (1280 << 20, "1.2 GiB"),
        (150 << 20, "150 MiB"), (100 * (1 << 20) + 1, "100 MiB"),
        (3 << 40, "3 TiB"), (5000 << 40, "5000 TiB"),
    ])
    def test_whole_or_one_decimal_below_100(self, size, text):
        assert format_size(size) == text

    @pytest.mark.parametrize(("size", "text"), [
        (40 << 20, "40 MiB"), (1280 << 20, "1.25 GiB"), (100_000 << 10, "97.66 MiB"), (2 << 40, "2 TiB"), (512, "512 B"),
    ])
    def test_significant_digits_where_the_exact_size_matters(self, size, text):
        assert format_size(size, digits=4) == text

    def test_the_core_and_the_magics_word_sizes_alike(self):
        from jobber._limits import format_size as limits_format_size
        from jobber_magics._charts import format_size as charts_format_size

        assert limits_format_size is charts_format_size is jobber.format_size is format_size


class TestFormatElapsed:
    @pytest.mark.parametrize(("seconds", "text"), [
        (0, "0.0 s"), (0.44, "0.4 s"), (12.34, "12.3 s"), (59.94, "59.9 s"), (60, "1 min 00 s"),
        (185.9, "3 min 05 s"), (3599.9, "59 min 59 s"), (3600, "1 h 00 min"), (7265, "2 h 01 min"),
        (90061, "25 h 01 min"),
    ])
    def test_a_running_time(self, seconds, text):
        assert format_elapsed(seconds) == text

    @pytest.mark.parametrize(("seconds", "tenths_below", "text"), [
        (9.94, 10, "9.9 s"), (12.34, 10, "12 s"), (59.4, 10, "59 s"), (0.4, 0, "0 s"), (45.2, 0, "45 s"),
        (185, 0, "3 min 05 s"), (185, 10, "3 min 05 s"),
    ])
    def test_tenths_only_below_the_threshold(self, seconds, tenths_below, text):
        assert format_elapsed(seconds, tenths_below=tenths_below) == text

    def test_a_status_and_its_held_back_sentence_use_it(self):
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        status = JobStatus(state="exited", started_at=start, ended_at=start + timedelta(seconds=185.5),
                           cpu_throttled_seconds=125.0, limits=Limits(cpu=0.5))
        assert status.elapsed_text == "3 min 05 s"
        assert status.held_back() == "held back by its CPU limit (0.5 CPUs): throttled 2 min 05 s of 3 min 05 s"


class TestFormatDuration:
    @pytest.mark.parametrize(("seconds", "text"), [
        (0.5, "0.5 s"), (90, "90 s"), (119, "119 s"), (120, "2 min"), (1800, "30 min"), (5400, "90 min"),
        (7200, "2 h"), (9000, "2.5 h"), (172800, "2 d"), (194400, "2 d 6 h"),
    ])
    def test_a_time_limit_as_people_set_one(self, seconds, text):
        assert format_duration(seconds) == text

    def test_the_timed_out_sentence_uses_it(self):
        assert JobStatus(state="timed-out", timeout=5400).describe() == "timed out after 90 min"


class TestDidYouMean:
    @pytest.fixture
    def parser(self):
        parser = argparse.ArgumentParser(prog="run")
        parser.add_argument("--memory")
        parser.add_argument("--label")
        parser.add_argument("-n", "--lines")
        return parser

    def test_names_the_closest_long_option_of_each_mistyped_one(self, parser):
        assert did_you_mean(["--memroy", "1G", "--lable=x"], parser) == [
            "--memroy: did you mean --memory?", "--lable: did you mean --label?"]

    @pytest.mark.parametrize(("options", "typed", "suggested"), [
        (("--memory", "--label"), "--memroy", "--memory"),
        (("--memory", "--label"), "--lable", "--label"),
        (("--memory", "--label"), "--labels", "--label"),
        (("--retries", "--retry-on"), "--retires", "--retries"),
        (("--older-than", "--dry-run"), "--dryrun", "--dry-run"),
        (("--older-than", "--dry-run"), "--hlep", "--help"),
        # prune had no --label: "--label" was offered --help, 62% alike with the "--" counted.
        (("--older-than", "--state", "--keep-last", "--dry-run"), "--label", None),
        (("--older-than", "--all"), "--label", None),
        (("--older-than",), "--path", None),
        (("--memory",), "--x", None),
        (("--memory",), "--", None),
    ])
    def test_a_suggestion_is_close_to_what_was_typed_or_absent(self, options, typed, suggested):
        parser = argparse.ArgumentParser(prog="prune")
        for option in options:
            parser.add_argument(option)
        assert did_you_mean([typed], parser) == ([f"{typed}: did you mean {suggested}?"] if suggested else [])

    def test_nothing_for_words_that_are_not_long_options_or_close_to_none(self, parser):
        assert did_you_mean(["memroy", "-m", "--zzzzzz", "--"], parser) == []

    def test_the_flags_add_it_to_argparse_s_message(self, parser):
        # The CLI and the magics both word unknown options through JobFlags.unknown.
        from jobber._job_flags import JobFlags

        message = JobFlags.unknown(parser, ["--memroy", "1G"])
        assert message == "unrecognized arguments: --memroy 1G; --memroy: did you mean --memory?"
