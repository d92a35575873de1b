"""The value axis of a chart: tick values a person would say, and labels that fit.

A chart is scaled to a job's limit (0.5 cores, 150 MiB, 2 TiB) or to what it used, so
its top is any number at all (1.00159 cores measured against a limit of 1). The labels
must not be that number: ticks go at multiples of a "nice" step (1, 2 or 5 x 10^k; for
sizes and cores also a power of two, so that 512 KiB reads as 256 and 512), in the largest binary
unit in which the top is at least 1, and a step that lands exactly on the top (the limit)
is preferred, so the limit gets its label. ``gutter_width`` says how wide the axis must
be for its widest label.
"""

from __future__ import annotations

import math

__all__ = ["Tick", "axis_ticks", "gutter_width", "tick_number"]

Tick = tuple[float, str]  # (value in the chart's own unit: bytes, cores, processes), label

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_MOST_INTERVALS = 4
# A 10 px sans-serif label: about this many pixels a character (digits are ~5.6 px wide,
# lower-case letters up to ~6), and the gap between a label and the plot.
_CHAR_PX = 6.2
_GAP_PX = 8


def _nice_steps(top: float, powers_of_two: bool) -> list[float]:
    """Candidate steps around ``top``: 1, 2, 5 x 10^k (and 2^k when asked)."""
    exponent = math.floor(math.log10(top))
    steps = {m * 10.0 ** k for k in range(exponent - 2, exponent + 1) for m in (1, 2, 5)}
    if powers_of_two and top >= 1:
        steps |= {2.0 ** k for k in range(0, math.floor(math.log2(top)) + 1)}
    return sorted(steps)


def _step(top: float, powers_of_two: bool = False, whole: bool = False) -> float:
    """The step of the ticks on 0..top: at most four intervals, landing on ``top`` if one
    can (the limit labelled), else as near three intervals as can be; decimal before
    binary when neither lands; whole numbers only for counts (``whole``)."""
    def rank(step: float) -> tuple[bool, bool, int, int]:
        intervals = math.floor(top / step + 1e-9)
        lands = abs(intervals * step - top) <= 1e-9 * top
        decimal = round(step / 10 ** math.floor(math.log10(step)), 6) in (1, 2, 5)
        return not lands, not decimal, abs(intervals - 3), intervals

    candidates = [s for s in _nice_steps(top, powers_of_two)
                  if 1 <= math.floor(top / s + 1e-9) <= _MOST_INTERVALS and (not whole or s >= 1)]
    return min(candidates, key=rank) if candidates else top


def tick_number(value: float) -> str:
    """A tick value as a person writes it: 0.5, 1, 1.5, 64, 0.25, 0.005 (no more decimals
    than it has, up to three: the ticks of the smallest CPU limit, 0.01, read apart)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def axis_ticks(top: float, kind: str) -> list[Tick]:
    """The ticks of a value axis on 0..top, the first one 0.

    Args:
        top: the top of the scale, in bytes (``kind`` "memory"), cores ("cpu") or
            processes ("pids").
        kind: what the axis measures.

    Returns:
        (value, label) pairs in ascending order, values in ``top``'s unit, e.g. for 1.5 GiB
        of memory ``[(0, "0"), (0.5 GiB, "0.5 GiB"), (1 GiB, "1 GiB"), (1.5 GiB, "1.5 GiB")]``.
    """
    if not top > 0 or not math.isfinite(top):
        return [(0.0, "0")]
    if kind == "memory":
        power = min(max(0, math.floor(math.log(top, 1024) + 1e-9)), len(_SIZE_UNITS) - 1)
        unit = 1024.0 ** power
        step = _step(top / unit, powers_of_two=True, whole=power == 0)
        return [(0.0, "0")] + [(i * step * unit, f"{tick_number(i * step)} {_SIZE_UNITS[power]}")
                               for i in range(1, math.floor(top / unit / step + 1e-9) + 1)]
    step = _step(top, powers_of_two=kind == "cpu", whole=kind == "pids")  # 64 cores: 32 and 64
    ticks = [(0.0, "0")]
    for i in range(1, math.floor(top / step + 1e-9) + 1):
        value = i * step
        number = tick_number(value)
        ticks.append((value, number if kind != "cpu" else f"{number} core{'' if number == '1' else 's'}"))
    return ticks


def gutter_width(ticks: list[Tick]) -> int:
    """How many pixels left of the plot the widest label needs (10 px font)."""
    widest = max((len(label) for _, label in ticks), default=1)
    return math.ceil(widest * _CHAR_PX) + _GAP_PX
