"""Limits and the size strings people type."""

from __future__ import annotations

import os

import pytest

from jobber import LimitError, Limits
from jobber._limits import format_size, parse_size


class TestParseSize:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("512M", 512 << 20), ("2G", 2 << 30), ("1.5G", 3 << 29), ("100k", 100 << 10),
         ("64MiB", 64 << 20), ("10 MB", 10 << 20), ("4096", 4096), (1234, 1234)],
    )
    def test_accepts(self, text, expected):
        assert parse_size(text) == expected

    @pytest.mark.parametrize("bad", ["12Q", "", "M", "-5M", "1e9", "0", 0, -1, True, 1.5, None])
    def test_refuses_with_a_hint(self, bad):
        with pytest.raises(LimitError, match="size|positive|int"):
            parse_size(bad, "memory")

    def test_message_names_the_limit_and_an_example(self):
        with pytest.raises(LimitError, match=r"memory: '12Q' is not a size.*512M"):
            parse_size("12Q", "memory")


class TestLimits:
    def test_defaults_are_unlimited(self):
        assert Limits().describe() == "unlimited"

    def test_round_trips_through_a_dict(self):
        limits = Limits(cpu="0.5", memory="2G", pids="20", io_read_bps="1M", io_write_bps=4096)
        assert Limits.from_dict(limits.to_dict()) == limits
        assert limits.describe() == "cpu=0.5 memory=2 GiB pids=20 io_read=1 MiB/s io_write=4 KiB/s"

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"cpu": 0}, "positive"), ({"cpu": "fast"}, "number of CPUs"), ({"cpu": float("nan")}, "positive"),
         ({"cpu": 0.001}, "smallest quota"), ({"pids": 0}, "at least 1"), ({"pids": "x"}, "whole number"),
         ({"memory": "12Q"}, "not a size"), ({"cpu": 5.5e307}, "more CPUs"), ({"cpu": "1e5"}, "more CPUs"),
         ({"memory": "9" * 400 + "G"}, "8 EiB"), ({"memory": 1 << 64}, "8 EiB"), ({"pids": 1 << 64}, "beyond")],
    )
    def test_bad_values_are_refused(self, kwargs, match):
        with pytest.raises(LimitError, match=match):
            Limits(**kwargs)

    def test_limit_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            Limits(memory="lots")

    def test_unknown_keys_are_refused(self):
        with pytest.raises(LimitError, match="unknown limit"):
            Limits.from_dict({"gpu": 1})


def test_format_size():
    assert [format_size(n) for n in (None, 12, 50 << 20, 1536 << 20)] == ["-", "12 B", "50 MiB", "1.5 GiB"]


class TestBeyondTheHost:
    def test_limits_the_host_cannot_reach_are_named(self):
        cpus = len(os.sched_getaffinity(0))
        warnings = Limits(cpu=cpus * 32, memory="100T").beyond_host()
        assert len(warnings) == 2
        assert warnings[0].startswith(f"--cpu {cpus * 32} is more than the {cpus} CPU")
        assert warnings[1].startswith("--memory 100 TiB is more than the")

    def test_limits_that_fit_say_nothing(self):
        assert Limits(cpu=0.5, memory="64M").beyond_host() == []
        assert Limits().beyond_host() == []
