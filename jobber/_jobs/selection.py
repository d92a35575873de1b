"""Which jobs a clean-up names, and what it did: id ranges and the outcome of a prune.

    JobIds.parse("12-40")          jobs 12 to 40, both included
    JobIds.parse("3,5,9")          three jobs; "3 5 9", [3, 5, 9] and range(3, 10) work too
    Pruned([3, 5], kept={9: "running"})   the ids removed (a list), and those kept, with why

One home for both, so that ``prune(ids=...)`` locally, the server's ``POST /v1/jobs:prune``
(which carries the ids as text, ``str(JobIds)``) and ``jobber rm 12-40`` read a selection
the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobber._errors import JobError

__all__ = ["MAX_SPANS", "JobIds", "Pruned", "is_id_selection"]

MAX_SPANS = 200
"""The most ranges one selection may hold (a request's size stays small)."""
_MAX_ID = 10**18
_SPAN = re.compile(r"^([1-9][0-9]{0,17})(?:-([1-9][0-9]{0,17}))?$")
_HOW = "write job ids and ranges, e.g. 12-40 or 3,5,9"


def is_id_selection(word: str) -> bool:
    """Whether ``word`` names jobs by number: ``12``, ``12-40``, ``3,5,9`` (not a label)."""
    return all(_SPAN.match(part) for part in word.split(",")) if word else False


@dataclass(frozen=True)
class JobIds:
    """A set of job ids, as sorted, merged ranges ``((first, last), ...)``, both ends included."""

    spans: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, value: Any) -> JobIds:
        """Read a selection of job ids.

        Args:
            value: a `JobIds`; an id; text of ids and ranges separated by commas or spaces
                ("12-40", "3,5,9", "3 5 9"); or an iterable of ids and such texts
                (``[3, 5, 9]``, ``range(12, 41)``, ``["3", "12-40"]``).

        Returns:
            The selection.

        Raises:
            JobError: a word that is not an id or a range, a range that runs backwards,
                or more than `MAX_SPANS` ranges.
        """
        if isinstance(value, JobIds):
            return value
        if isinstance(value, range) and value.step == 1:
            if len(value) and not (1 <= value.start and value.stop - 1 < _MAX_ID):
                raise JobError(f"ids: {value} holds numbers that are not job ids (ids are whole numbers from 1): {_HOW}")
            return cls._merged([(value.start, value.stop - 1)] if len(value) else [])
        items = [value] if isinstance(value, (str, int)) else value
        if not isinstance(items, Iterable) or isinstance(items, (bytes, Mapping)):
            raise JobError(f"ids {_shown(value)}: {_HOW}")
        spans: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                if not 1 <= item < _MAX_ID:
                    raise JobError(f"ids: {item} is not a job id (ids are whole numbers from 1): {_HOW}")
                spans.append((item, item))
            elif isinstance(item, str):
                spans.extend(_spans_of(item))
            else:
                raise JobError(f"ids: {_shown(item)} is not a job id: {_HOW}")
            if len(spans) > 4 * MAX_SPANS:  # neighbours merged as they come: 1,2,3,... is one range
                spans = list(cls._merged(spans, bound=None).spans)
        return cls._merged(spans)

    @classmethod
    def _merged(cls, spans: list[tuple[int, int]], bound: int | None = MAX_SPANS) -> JobIds:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(spans):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
            else:
                merged.append((first, last))
        if bound is not None and len(merged) > bound:
            raise JobError(f"ids: more than {MAX_SPANS} separate ids or ranges: select fewer, or by --label")
        return cls(tuple(merged))

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, int) and any(first <= job_id <= last for first, last in self.spans)

    def __str__(self) -> str:
        """``"3,5,12-40"``: what `parse` reads back."""
        return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in self.spans)


def _spans_of(text: str) -> list[tuple[int, int]]:
    spans = []
    for word in text.replace(",", " ").split():
        match = _SPAN.match(word)
        if not match:
            raise JobError(f"ids: {word[:40]!r} is not a job id or a range of them: {_HOW}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise JobError(f"ids: {word} runs backwards: write the lower id first, e.g. {last}-{first}")
        spans.append((first, last))
    if not spans:
        raise JobError(f"ids: {text[:40]!r} names no job: {_HOW}")
    return spans


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Pruned(list):
    """What ``prune`` returns: the ids removed (or, in a dry run, that would be), oldest
    first, as a plain ``list`` of ints; ``kept`` holds the jobs it left although they were
    selected, each with why ("running", "never started, created 2 min ago").

    Attributes:
        kept: job id -> the reason it was kept, oldest first.
    """

    def __init__(self, removed: Iterable[int] = (), kept: Mapping[int, str] | None = None) -> None:
        super().__init__(removed)
        self.kept: dict[int, str] = dict(kept or {})

    def describe(self, *, dry_run: bool) -> str:
        """One line for a person: ``removed 2 jobs: 3, 5; kept 9 (running)``."""
        verb = "would remove" if dry_run else "removed"
        text = f"{verb} {len(self)} job{'s' if len(self) != 1 else ''}" + (f": {', '.join(map(str, self))}" if self else "")
        if not self and not self.kept:
            return "nothing to prune"
        if self.kept:
            text += "; kept " + ", ".join(f"{job_id} ({why})" for job_id, why in self.kept.items())
        return text
