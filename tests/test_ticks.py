"""The charts' value axes (``jobber_magics._ticks``): rounded ticks a person would say,
in a gutter as wide as the widest label. The browser check (the rendered labels inside
the svg) is e2e/tests/chart-axes.spec.js."""

from __future__ import annotations

import re

import pytest

from jobber import JobStatus, Limits
from jobber_magics._charts import ResourceHistory, resource_chart_html
from jobber_magics._ticks import axis_ticks, gutter_width, tick_number

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


def labels(top, kind):
    return [label for _value, label in axis_ticks(top, kind)]


class TestTicks:
    @pytest.mark.parametrize(("cores", "expected"), [
        (0.5, ["0", "0.5 cores"]),
        (1, ["0", "0.5 cores", "1 core"]),
        (1.00159, ["0", "0.5 cores", "1 core"]),  # the label that read "159 cores"
        (2, ["0", "1 core", "2 cores"]),
        (64, ["0", "32 cores", "64 cores"]),
        (3, ["0", "1 core", "2 cores", "3 cores"]),
    ])
    def test_cores(self, cores, expected):
        assert labels(cores, "cpu") == expected

    @pytest.mark.parametrize(("size", "expected"), [
        (512 * KiB, ["0", "256 KiB", "512 KiB"]),
        (150 * MiB, ["0", "50 MiB", "100 MiB", "150 MiB"]),
        (1.5 * GiB, ["0", "0.5 GiB", "1 GiB", "1.5 GiB"]),
        (2 * TiB, ["0", "1 TiB", "2 TiB"]),
        (123_456_789, ["0", "50 MiB", "100 MiB"]),  # an unlimited job's peak: no label at the odd top
        (700, ["0", "200 B", "400 B", "600 B"]),
    ])
    def test_sizes(self, size, expected):
        assert labels(size, "memory") == expected

    @pytest.mark.parametrize(("count", "expected"), [(20, ["0", "10", "20"]), (3, ["0", "1", "2", "3"]),
                                                     (1, ["0", "1"])])
    def test_processes_are_whole_numbers(self, count, expected):
        assert labels(count, "pids") == expected

    @pytest.mark.parametrize("kind", ["cpu", "memory", "pids"])
    @pytest.mark.parametrize("top", [0.013, 0.37, 0.5, 1, 1.00159, 2.5, 7, 13, 64, 99.9, 1000, 5 * MiB, 17 * GiB,
                                     3 * TiB + 5])
    def test_every_axis_is_rounded_ascending_and_within_its_scale(self, kind, top):
        ticks = axis_ticks(top, kind)
        assert ticks[0] == (0.0, "0") and 2 <= len(ticks) <= 5 or (kind == "pids" and top < 1)
        values = [value for value, _ in ticks]
        assert values == sorted(values) and values[-1] <= top * (1 + 1e-9)
        for _value, label in ticks[1:]:
            assert re.fullmatch(r"\d+(\.\d{1,3})?( (cores?|B|KiB|MiB|GiB|TiB))?", label), label

    def test_nothing_to_scale_is_just_zero(self):
        assert axis_ticks(0, "cpu") == [(0.0, "0")] and axis_ticks(float("nan"), "memory") == [(0.0, "0")]

    def test_numbers_are_written_as_people_write_them(self):
        assert [tick_number(v) for v in (0, 0.5, 1.0, 1.5, 64.0, 0.25, 0.1 + 0.2)] == \
            ["0", "0.5", "1", "1.5", "64", "0.25", "0.3"]

    def test_the_gutter_grows_with_the_widest_label(self):
        assert gutter_width(axis_ticks(0.5, "cpu")) > gutter_width(axis_ticks(20, "pids"))


class TestChartAxes:
    def chart(self, limits, cores):
        history = ResourceHistory(interval=0)
        for i in range(5):
            history.add(float(i), JobStatus(state="running", limits=limits, memory_bytes=(i + 1) * MiB,
                                            cpu_seconds=i * cores, started_at=None))
        return resource_chart_html(history, limits, running=True)

    def test_a_rate_a_hair_above_the_limit_keeps_the_limit_as_the_scale(self):
        html = self.chart(Limits(cpu=1), 1.00159)
        cpu = html.split("jobber-chart-cpu")[1]
        assert 'data-y-max="1"' in cpu
        assert re.findall(r'class="tick-label"[^>]*>([^<]*)<', cpu) == ["0", "0.5 cores", "1 core"]
        assert "1.00159" not in html and "159 cores" not in html

    def test_the_gutter_fits_the_widest_label(self):
        html = self.chart(Limits(cpu=0.5, memory="1536M"), 0.5)
        for kind, widest in (("cpu", "0.5 cores"), ("memory", "1.5 GiB")):
            svg = html.split(f"jobber-chart-{kind}")[1].split("</svg>")[0]
            assert f">{widest}</text>" in svg
            left = float(re.search(r'<rect x="([\d.]+)"', svg).group(1))
            assert left >= gutter_width([(0.0, widest)])


def test_the_smallest_cpu_limit_has_distinct_tick_labels():
    from jobber_magics._ticks import axis_ticks

    labels = [label for _value, label in axis_ticks(0.01, "cpu")]
    assert labels == ["0", "0.005 cores", "0.01 cores"] and len(set(labels)) == len(labels)
