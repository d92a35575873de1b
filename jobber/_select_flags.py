"""The flags that pick existing jobs, declared once for ``jobber ls/prune/rm`` and their magics.

    jobber ls --label train --state failed -n 20      %jobber_jobs --label train -n 20
    jobber prune 12-40 --label sweep --older-than 7d  %jobber_prune --label sweep --dry-run
    jobber rm 3 5 9;  jobber rm 12-40;  jobber rm --label sweep     %jobber_rm 12-40

Each flag is ``(names, keywords)`` of ``ArgumentParser.add_argument``, as in
``jobber._job_flags``; `listing`, `prune` and `remove` do what the parsed flags ask of a
session, so that the command line and the magics choose the same jobs. ``jobber.JobFlags``
carries them (``JobFlags.LIST``, ``JobFlags.listing`` ...), the magics' one door to them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jobber._errors import JobberError, JobError, JobNotFound
from jobber._jobs.selection import JobIds, Pruned, is_id_selection
from jobber._states import STATES

__all__ = ["LIST", "PRUNE", "RM", "Rows", "listing", "prune", "remove"]

Flag = tuple[tuple[str, ...], dict[str, Any]]
DEFAULT_LAST = 200


def _states(text: str) -> tuple[str, ...]:
    """``--state running,failed``: states a job can be in, or an error naming them."""
    chosen = tuple(word.strip() for word in text.split(",") if word.strip())
    wrong = [state for state in chosen if state not in STATES]
    if wrong or not chosen:
        raise argparse.ArgumentTypeError(f"{', '.join(wrong) or repr(text)} is not a job state: choose among "
                                         f"{', '.join(STATES)}, comma-separated")
    return chosen


_LABEL: Flag = (("--label",), {"metavar": "NAME", "help": "only the jobs with this label"})
LIST: tuple[Flag, ...] = (
    _LABEL,
    (("--state",), {"type": _states, "metavar": "STATES",
                    "help": "only the jobs in these states, comma-separated: running,failed"}),
    (("-n", "--last"), {"type": int, "default": DEFAULT_LAST, "metavar": "N",
                        "help": f"show the newest N jobs (default {DEFAULT_LAST}), newest last"}),
    (("-a", "--all"), {"action": "store_true", "help": "show every job, however many"}),
)
PRUNE: tuple[Flag, ...] = (
    (("ids",), {"nargs": "*", "metavar": "IDS", "help": "only these jobs: 12-40, or 3 5 9"}),
    _LABEL,
    (("--older-than",), {"metavar": "AGE", "help": "only jobs that ended at least AGE ago: 7d, 12h, 30m (never "
                                                   "started ones: created that long ago; default a day)"}),
    (("--state",), {"metavar": "STATES", "help": "only these final states, comma-separated: exited,failed"}),
    (("--keep-last",), {"type": int, "metavar": "N", "help": "keep the newest N of the matching jobs"}),
    (("--dry-run",), {"action": "store_true", "help": "say what would be removed, remove nothing"}),
)
RM: tuple[Flag, ...] = (
    (("job_ids",), {"nargs": "*", "metavar": "ID|LABEL", "help": "the jobs to remove: ids, ranges (12-40), "
                                                                "or labels (a label: its newest job)"}),
    (("--label",), {"metavar": "NAME", "help": "every job with this label (with ids: those of them)"}),
)


class Rows(list):
    """What `listing` returns first: ``[(job, status), ...]``, newest last, as a plain
    ``list``; ``skipped`` holds the jobs left out because they cannot be read, each with why.

    Attributes:
        skipped: job id -> why it was left out (its ``spec.json`` is not JSON, a status
            file of the wrong types, ...), oldest first.
    """

    def __init__(self, rows: Iterable[tuple[Any, Any]] = (), skipped: Mapping[int, str] | None = None) -> None:
        super().__init__(rows)
        self.skipped: dict[int, str] = dict(skipped or {})


def listing(session: Any, args: argparse.Namespace, *, every: bool = False) -> tuple[Rows, int]:
    """The jobs that `LIST` flags select, newest last, each with its status.

    A job whose files cannot be read (damaged, or not written by jobber) is left out of
    the rows and named in their ``skipped``, with why: one such job never hides the others.

    Args:
        session: a Certificate or a remote session.
        args: what a parser with `LIST` parsed.
        every: ignore ``-n`` (``jobber ls --json`` lists every matching job).

    Returns:
        ``[(job, status), ...]`` (a `Rows`), and how many older matching jobs ``-n`` left out.
    """
    jobs = session.get_jobs(label=args.label) if args.label else session.get_jobs()
    skipped: dict[int, str] = dict(getattr(jobs, "skipped", {}))  # those a jobber server left out
    if args.state:
        rows: list[tuple[Any, Any]] | None = [(job, status) for job, status in _with_statuses(jobs, skipped)
                                              if status.state in args.state]
    else:
        rows = None
    count = len(rows) if rows is not None else len(jobs)
    hidden = 0 if every or args.all else max(0, count - max(args.last, 1))
    if rows is None:
        rows = list(_with_statuses(jobs[hidden:], skipped))  # only the statuses shown are read
    else:
        rows = rows[hidden:]
    # Each reason as its own sentence: the line that reports it names the job already.
    return Rows(rows, {job_id: why.removeprefix(f"job {job_id}: ") for job_id, why in sorted(skipped.items())}), hidden


def _with_statuses(jobs: list[Any], skipped: dict[int, str]) -> Iterator[tuple[Any, Any]]:
    """Each job with its status, leaving out a job removed since the listing (another
    process's prune or rm), which would otherwise fail the whole listing, and a job that
    cannot be read, noted in ``skipped`` with why."""
    for job in jobs:
        try:
            status = job.status()
            job.command, job.label  # noqa: B018 - what a listing shows of it must read too (a spec's fields)
        except JobNotFound:
            continue
        except JobError as err:
            skipped[job.id] = str(err)
            continue
        yield job, status


def prune(session: Any, args: argparse.Namespace) -> Pruned:
    """``session.prune`` with what `PRUNE` flags parsed (dry run or not: ``args.dry_run``)."""
    states = None if args.state is None else [s.strip() for s in args.state.split(",") if s.strip()]
    return session.prune(older_than=args.older_than, states=states, keep_last=args.keep_last,
                         dry_run=args.dry_run, label=args.label, ids=args.ids or None)


def remove(session: Any, args: argparse.Namespace) -> tuple[Pruned, list[str]]:
    """Remove the jobs `RM` flags name; a running one is kept, and said so.

    An id or a label names one job (the label: its newest), which must exist; a range
    (``12-40``, ``3,5,9``) or ``--label`` alone names whichever of its jobs exist.

    Returns:
        The ids removed (with ``kept``: those that could not be, and why), and the errors
        of the references that named no job.

    Raises:
        JobberError: neither ids nor ``--label`` were given, or a malformed range.
    """
    if not args.job_ids and args.label is None:
        raise JobberError("name the jobs to remove: ids (3 5 9), a range (12-40), labels, or --label NAME")
    chosen, missing = [], []
    ranges = [word for word in args.job_ids if is_id_selection(word) and not word.isdigit()]
    if ranges or (args.label is not None and not args.job_ids):
        ids = JobIds.parse(ranges) if ranges else None
        labelled = session.get_jobs(label=args.label) if args.label is not None else session.get_jobs()
        chosen += [job for job in labelled if ids is None or job.id in ids]
    for word in (w for w in args.job_ids if w not in ranges):
        try:
            job = session.find_job(word)
        except JobNotFound as err:
            missing.append(str(err))
            continue
        if args.label is None or job.label == args.label:
            chosen.append(job)
    removed, kept = [], {}
    for job in sorted({job.id: job for job in chosen}.values(), key=lambda job: job.id):
        try:
            job.remove()
            removed.append(job.id)
        except JobberError as err:
            kept[job.id] = str(err)
    return Pruned(removed, kept), missing
