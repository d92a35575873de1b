"""A job's memory, CPU and process count over time, drawn as small inline SVG charts.

People would rather watch a job approach its limits than read numbers, so every chart is
scaled to the limit and draws it: memory on 0..limit (0..peak when unlimited), CPU in cores
on 0..limit (0..the host's cores when unlimited), processes on 0..limit. Each has a value
axis with units, a time axis with the span, and the current and peak values as text. The
final reading of an ended job is included (an OOM-killed job reaches its limit), and a job
too short to draw gets its final numbers instead of an empty box. Colours come from
JupyterLab's theme variables (through ``style=``, which, unlike SVG attributes, takes
``var()``), so the dark theme reads as well as the light one.
"""

from __future__ import annotations

import html
import itertools
import os
from dataclasses import dataclass

from jobber import JobStatus, Limits, format_elapsed, format_size
from jobber_magics._ticks import axis_ticks, gutter_width

__all__ = ["ResourceHistory", "Sample", "format_size", "resource_chart_html"]

_PLOT_WIDTH, _HEIGHT = 240, 96  # the plot area's width, the whole chart's height
_RIGHT, _TOP, _BOTTOM = 8, 8, 16  # margins: time below; the value labels' gutter is as wide as they need
_LINE = "stroke:var(--jp-brand-color1,#1f77b4)"
_LIMIT = "stroke:var(--jp-error-color1,#d62728)"
_TEXT = "fill:currentColor;font-size:10px;font-family:var(--jp-ui-font-family,sans-serif)"


@dataclass(frozen=True)
class Sample:
    """One reading: seconds since the job started, bytes, CPU seconds, processes."""

    t: float
    memory_bytes: int | None
    cpu_seconds: float | None
    processes: int | None = None


class ResourceHistory:
    """Readings of a job's memory, CPU and processes, thinned so that memory stays bounded.

    Samples closer than ``interval`` to the previous one are dropped; when ``capacity`` is
    reached every other sample goes and the interval doubles, so the chart always spans
    the whole run with at most ``capacity`` points. ``finish`` adds the final reading.

    Args:
        interval: the smallest spacing of samples at first, in seconds.
        capacity: the most samples kept.
    """

    def __init__(self, interval: float = 0.5, capacity: int = 120) -> None:
        self.interval = interval
        self.capacity = capacity
        self.samples: list[Sample] = []
        self.peak_memory_bytes: int | None = None
        self.peak_processes: int | None = None
        self.peak_processes_measured = False  # the kernel's count (pids.peak), not the largest sample
        self.final: JobStatus | None = None

    def add(self, t: float, status: JobStatus, processes: int | None = None) -> bool:
        """Record a reading taken ``t`` seconds into the job; return True if it was kept."""
        if status.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, status.peak_memory_bytes)
        if processes is not None:
            self.peak_processes = max(self.peak_processes or 0, processes)
        if status.memory_bytes is None and status.cpu_seconds is None and processes is None:
            return False
        if self.samples and t - self.samples[-1].t < self.interval:
            return False
        self.samples.append(Sample(t, status.memory_bytes, status.cpu_seconds, processes))
        if len(self.samples) > self.capacity:
            self.samples = self.samples[::2]
            self.interval *= 2
        return True

    def finish(self, status: JobStatus) -> None:
        """Add the ended job's last reading: its CPU total at its end, and, when the OOM
        killer ended it, its peak memory (the limit) there, which no live reading catches."""
        if self.final is not None or not status.ended:
            return
        self.final = status
        if status.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, status.peak_memory_bytes)
        end = status.elapsed
        if end is None or (status.cpu_seconds is None and not status.oom_killed):
            return
        memory = self.peak_memory_bytes if status.oom_killed else None
        last = self.samples[-1] if self.samples else None
        if last is not None and end - last.t < 0.1:
            # As good as the same moment: the last reading takes the final values.
            self.samples[-1] = Sample(last.t, memory if memory is not None else last.memory_bytes,
                                      status.cpu_seconds if status.cpu_seconds is not None else last.cpu_seconds,
                                      last.processes)
        else:
            self.samples.append(Sample(end, memory, status.cpu_seconds, None))


def _cores(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _chart(title: str, values: list[tuple[float, float]], y_max: float, limit: float | None, limit_label: str,
           span: float, kind: str) -> str:
    """One chart: the series on 0..y_max, the limit dashed and labelled, both axes; the
    value axis has rounded ticks (``_ticks.axis_ticks``) in a gutter as wide as its widest label."""
    y_max = y_max or 1.0
    span = span or 1.0
    ticks = axis_ticks(y_max, kind)
    left = gutter_width(ticks)
    width, plot_w, plot_h = left + _PLOT_WIDTH + _RIGHT, _PLOT_WIDTH, _HEIGHT - _TOP - _BOTTOM

    def x(t: float) -> float:
        return left + min(max(t / span, 0.0), 1.0) * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - min(max(v / y_max, 0.0), 1.0) * plot_h

    parts = [
        f'<svg class="jobber-chart jobber-chart-{kind}" width="{width}" height="{_HEIGHT}" '
        f'viewBox="0 0 {width} {_HEIGHT}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'data-y-max="{y_max:g}" data-limit="{limit or 0:g}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{left}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'style="stroke:currentColor;stroke-opacity:0.35"/>',
    ]
    # The value axis: a faint line and a label at each tick (the baseline, 0, at the bottom).
    for value, text in ticks:
        ty = y(value)
        if value:
            parts.append(f'<line class="tick" x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
                         f'style="stroke:currentColor;stroke-opacity:0.12"/>')
        parts.append(f'<text class="tick-label" x="{left - 4}" y="{min(ty + 3.5, _TOP + plot_h):.1f}" '
                     f'text-anchor="end" style="{_TEXT}">{html.escape(text)}</text>')
    # The time axis: from the job's start to the last reading.
    parts += [
        f'<text x="{left}" y="{_HEIGHT - 3}" style="{_TEXT}">0 s</text>',
        f'<text x="{left + plot_w}" y="{_HEIGHT - 3}" text-anchor="end" style="{_TEXT}">'
        f'{html.escape(format_elapsed(span, tenths_below=10))}</text>',
    ]
    if limit:
        ly = y(limit)
        parts.append(f'<line class="limit" x1="{left}" x2="{left + plot_w}" y1="{ly:.1f}" y2="{ly:.1f}" '
                     f'style="{_LIMIT};stroke-dasharray:4 3"/>')
        # Under the line, in the top left corner of the plot, where a rising series is not yet.
        parts.append(f'<text class="limit-label" x="{left + 3}" y="{min(ly + 10, _TOP + plot_h - 2):.1f}" '
                     f'style="{_TEXT};fill:var(--jp-error-color1,#d62728)">'
                     f'{html.escape(limit_label)}</text>')
    if len(values) > 1:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
        parts.append(f'<polyline fill="none" style="{_LINE};stroke-width:1.5" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(kind: str, svg: str, label: str) -> str:
    return (f'<div class="jobber-figure jobber-figure-{kind}" style="display:inline-block;margin:0 16px 4px 0;'
            f'vertical-align:top">{svg}<div class="jobber-figure-label" style="font-size:11px">'
            f'{html.escape(label)}</div></div>')


def resource_chart_html(history: ResourceHistory, limits: Limits, *, running: bool, host_cpus: int | None = None) -> str:
    """Memory, CPU and (with a pids limit) process charts of a job, against its limits.

    Args:
        history: the readings so far (with ``finish`` called once the job has ended).
        limits: the job's limits.
        running: whether the job still runs (labels say "now" then).
        host_cpus: the CPU scale of a job without a cpu limit (default: this host's).

    Returns:
        HTML: charts, or the final numbers of a job too short to chart; a short note
        while nothing was measured yet, and "" when nothing ever was (no cgroup).
    """
    samples = history.samples
    memory = [(s.t, float(s.memory_bytes)) for s in samples if s.memory_bytes is not None]
    cpu = [
        (b.t, (b.cpu_seconds - a.cpu_seconds) / (b.t - a.t))
        for a, b in itertools.pairwise([s for s in samples if s.cpu_seconds is not None])
        if b.t > a.t
    ]
    processes = [(s.t, float(s.processes)) for s in samples if s.processes is not None]
    span = samples[-1].t if samples else 0.0
    final = history.final
    peak = history.peak_memory_bytes
    if not memory and not cpu and not processes and not peak:
        if running:
            return '<div class="jobber-figure-label" style="font-size:11px">memory and CPU: waiting for readings…</div>'
        return ""

    figures = []
    # Memory: 0..limit, or 0..peak when unlimited.
    if memory or peak:
        now = f"now {format_size(memory[-1][1])}" if running and memory else ""
        words = [w for w in (now, f"peak {format_size(peak)}" if peak else "",
                             f"limit {format_size(limits.memory)}" if limits.memory else "no limit") if w]
        label = "memory: " + ", ".join(words)
        if len(memory) > 1:
            top = float(limits.memory) if limits.memory else max(float(peak or 0), max(v for _, v in memory)) or 1.0
            svg = _chart(label, memory, top, limits.memory, f"limit {format_size(limits.memory)}"
                         if limits.memory else "", span, "memory")
            figures.append(_figure("memory", svg, label))
        else:
            figures.append(_text_figure("memory", label))
    # CPU: cores, 0..limit or 0..the host's cores.
    cpu_seconds = final.cpu_seconds if final is not None else next(
        (s.cpu_seconds for s in reversed(samples) if s.cpu_seconds is not None), None)
    elapsed = final.elapsed if final is not None else span
    if cpu or cpu_seconds is not None:
        average = cpu_seconds / elapsed if cpu_seconds is not None and elapsed else None
        words = []
        if running and cpu:
            words.append(f"now {_cores(cpu[-1][1])} cores")
        if average is not None:
            words.append(f"average {_cores(average)} cores ({cpu_seconds:.2f} CPU-s)")
        words.append(f"limit {limits.cpu:g}" if limits.cpu else "no limit")
        label = "CPU: " + ", ".join(words)
        if len(cpu) > 1:
            # Scaled to the limit: a rate a hair above it (1.00159 of 1 core) is the sampling's
            # jitter, not a use the limit allowed, and is drawn at the top.
            top = float(limits.cpu) if limits.cpu else max(float(host_cpus or os.cpu_count() or 1),
                                                             max(v for _, v in cpu))
            svg = _chart(label, cpu, top, limits.cpu,
                         f"limit {limits.cpu:g}" if limits.cpu else "", span, "cpu")
            figures.append(_figure("cpu", svg, label))
        else:
            figures.append(_text_figure("cpu", label))
    # Processes: only with a pids limit.
    if limits.pids and (processes or history.peak_processes):
        now = f"now {int(processes[-1][1])}" if running and processes else ""
        sampled = "" if history.peak_processes_measured else " (sampled)"
        words = [w for w in (now, f"peak {history.peak_processes}{sampled}" if history.peak_processes else "",
                             f"limit {limits.pids}") if w]
        label = "processes: " + ", ".join(words)
        if len(processes) > 1:
            svg = _chart(label, processes, float(limits.pids), limits.pids,
                         f"limit {limits.pids}", span, "pids")
            figures.append(_figure("pids", svg, label))
        else:
            figures.append(_text_figure("pids", label))
    return '<div class="jobber-figures">' + "".join(figures) + "</div>"


def _text_figure(kind: str, label: str) -> str:
    """The final numbers of a job too short to draw (fewer than two readings)."""
    return (f'<div class="jobber-figure jobber-figure-{kind} jobber-figure-text" style="display:inline-block;'
            f'margin:0 16px 4px 0;font-size:11px">{html.escape(label)}</div>')
