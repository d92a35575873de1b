"""A job's memory and CPU over time, drawn as small inline SVG charts (no plotting deps).

People would rather watch a job approach its memory limit than read numbers, so the limit
is drawn as a dashed line and the scale always includes it.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass

from jobber import JobStatus, Limits

__all__ = ["ResourceHistory", "Sample", "resource_chart_html"]

_WIDTH, _HEIGHT = 240, 44
_LINE = "#1f77b4"
_LIMIT = "#d62728"
_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


@dataclass(frozen=True)
class Sample:
    """One reading of a running job: seconds since the first sample, bytes, CPU seconds."""

    t: float
    memory_bytes: int | None
    cpu_seconds: float | None


class ResourceHistory:
    """Readings of a job's memory and CPU, thinned so that memory stays bounded.

    Samples closer than ``interval`` to the previous one are dropped; when ``capacity`` is
    reached every other sample goes and the interval doubles, so the chart always spans
    the whole run with at most ``capacity`` points.

    Args:
        interval: the smallest spacing of samples at first, in seconds.
        capacity: the most samples kept.
    """

    def __init__(self, interval: float = 0.5, capacity: int = 120) -> None:
        self.interval = interval
        self.capacity = capacity
        self.samples: list[Sample] = []
        self._origin: float | None = None
        self.peak_memory_bytes: int | None = None

    def add(self, now: float, status: JobStatus) -> bool:
        """Record a reading taken at monotonic time ``now``; return True if it was kept."""
        if status.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, status.peak_memory_bytes)
        if status.memory_bytes is None and status.cpu_seconds is None:
            return False
        if self._origin is None:
            self._origin = now
        t = now - self._origin
        if self.samples and t - self.samples[-1].t < self.interval:
            return False
        self.samples.append(Sample(t, status.memory_bytes, status.cpu_seconds))
        if len(self.samples) > self.capacity:
            self.samples = self.samples[::2]
            self.interval *= 2
        return True


def _points(values: list[tuple[float, float]], t_max: float, y_max: float) -> str:
    sx = (_WIDTH - 2) / t_max if t_max > 0 else 0.0
    sy = (_HEIGHT - 4) / y_max if y_max > 0 else 0.0
    return " ".join(f"{1 + t * sx:.1f},{_HEIGHT - 2 - v * sy:.1f}" for t, v in values)


def _chart(title: str, values: list[tuple[float, float]], limit: float | None) -> str:
    t_max = values[-1][0] if values else 0.0
    y_max = max([v for _, v in values] + [limit or 0.0]) * 1.1 or 1.0
    parts = [f'<svg width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img">',
             f"<title>{html.escape(title)}</title>",
             f'<rect x="0.5" y="0.5" width="{_WIDTH - 1}" height="{_HEIGHT - 1}" fill="none" '
             'stroke="currentColor" stroke-opacity="0.2"/>']
    if limit:
        y = _HEIGHT - 2 - limit * (_HEIGHT - 4) / y_max
        parts.append(f'<line class="limit" x1="1" x2="{_WIDTH - 1}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{_LIMIT}" stroke-dasharray="4 3"/>')
    if len(values) > 1:
        parts.append(f'<polyline fill="none" stroke="{_LINE}" stroke-width="1.5" '
                     f'points="{_points(values, t_max, y_max)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(label: str, svg: str) -> str:
    return (f'<div style="display:inline-block;margin-right:16px">{svg}'
            f'<div style="font-size:11px;opacity:0.8">{html.escape(label)}</div></div>')


def _size(size: int) -> str:
    """A byte count for a chart label, in binary units: 52428800 -> "50 MiB", 1.5 GiB."""
    for unit, factor in _UNITS:
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{size} B"


def resource_chart_html(history: ResourceHistory, limits: Limits, *, running: bool) -> str:
    """Memory and CPU charts of a job, with its limits drawn as dashed lines.

    Args:
        history: the readings so far.
        limits: the job's limits (the dashed lines).
        running: whether the job still runs (labels say "now" or "peak").

    Returns:
        HTML; a short note instead when nothing was measured (no cgroup: isolation "none").
    """
    samples = history.samples
    memory = [(s.t, float(s.memory_bytes)) for s in samples if s.memory_bytes is not None]
    cpu = [
        (b.t, (b.cpu_seconds - a.cpu_seconds) / (b.t - a.t))
        for a, b in itertools.pairwise(samples)
        if a.cpu_seconds is not None and b.cpu_seconds is not None and b.t > a.t
    ]
    if not memory and not cpu:
        if running:
            return '<div style="font-size:11px;opacity:0.8">memory and CPU: waiting for readings…</div>'
        return ""
    figures = []
    if memory:
        now = f"now {_size(int(memory[-1][1]))}" if running else ""
        peak = f"peak {_size(history.peak_memory_bytes)}" if history.peak_memory_bytes else ""
        of = f"limit {_size(limits.memory)}" if limits.memory else "no limit"
        label = "memory: " + ", ".join(p for p in (now, peak, of) if p)
        figures.append(_figure(label, _chart(label, memory, limits.memory)))
    if cpu:
        of = f"limit {limits.cpu:g}" if limits.cpu else "no limit"
        label = f"CPU: {cpu[-1][1]:.2f} cores{' now' if running else ' at the end'}, {of}"
        figures.append(_figure(label, _chart(label, cpu, limits.cpu)))
    return "<div>" + "".join(figures) + "</div>"
