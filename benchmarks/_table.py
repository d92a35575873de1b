"""What the benchmarks print: each result on stderr as it comes, then one Markdown table.

Every row holds a figure, the baseline measured beside it in the same run, and its goal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

ROWS: list[tuple[str, str, str, str]] = []


def row(name: str, value: str, baseline: str, goal: str) -> None:
    """Keep a result for the table, and say it on stderr at once."""
    ROWS.append((name, value, baseline, goal))
    print(f"  {name}: {value} (baseline {baseline}; goal {goal})", file=sys.stderr)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (0 <= q <= 1), nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def print_table() -> None:
    """The rows kept so far, as a Markdown table on stdout."""
    print("| benchmark | jobber | baseline (same run) | goal |")
    print("|---|---|---|---|")
    for name, value, baseline, goal in ROWS:
        print(f"| {name} | {value} | {baseline} | {goal} |")


def run_chosen(benches: dict[str, Callable[[], object]]) -> None:
    """Run the benchmarks named on the command line (all of them when none is), then print
    the table; an unknown name exits saying which names there are."""
    wanted = sys.argv[1:] or list(benches)
    unknown = set(wanted) - set(benches)
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(sorted(unknown))}: choose from {', '.join(benches)}")
    for name in wanted:
        benches[name]()
    print_table()
