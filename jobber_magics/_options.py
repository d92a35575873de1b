"""The options that describe a job, for ``%%jobber_run``, ``%%jobber_sweep`` and ``%jobber_rerun``.

They are `jobber.JobFlags`, the flags of ``jobber run`` too, each wrapped in an
``@argument`` line; `job_request` turns the parsed options into the arguments of
``new_job`` (and of ``sweep``, which takes the same ones) as ``jobber run`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from IPython.core.magic_arguments import argument

from jobber import JobFlags, Limits

__all__ = ["flag_arguments", "job_arguments", "job_request", "lifecycle_arguments", "lifecycle_options"]

lifecycle_options = JobFlags.lifecycle_options


def _apply(func: Any, flags: Sequence[tuple[tuple[str, ...], dict[str, Any]]]) -> Any:
    # Applied last to first, so that the help lists them in the order declared.
    for names, keywords in reversed(flags):
        func = argument(*names, **keywords)(func)
    return func


def lifecycle_arguments(func: Any) -> Any:
    """The lifecycle options of ``%jobber_rerun``: ``--timeout --log-max --retries ...``."""
    return _apply(func, JobFlags.LIFECYCLE)


def flag_arguments(flags: Sequence[tuple[tuple[str, ...], dict[str, Any]]]) -> Any:
    """A decorator adding ``flags`` (``JobFlags.LIST``, ``.PRUNE``, ``.RM``) as ``@argument`` lines."""
    return lambda func: _apply(func, flags)


def job_arguments(func: Any) -> Any:
    """Every option that describes a job (`jobber.JobFlags`): limits, where it runs, its
    environment, its lifecycle, and when it may start (``--queue --after --gpus``)."""
    return _apply(func, JobFlags.JOB)


def job_request(args: argparse.Namespace, find_job: Any) -> tuple[Limits, dict[str, Any]]:
    """Turn the options of `job_arguments` into ``new_job`` arguments, as ``jobber run`` does.

    Args:
        args: the parsed options.
        find_job: the session's ``find_job``, to resolve the labels of ``--after``.

    Raises:
        JobberError: a Slurm option without ``--backend slurm``, or a malformed --env/--after.
        LimitError: a malformed limit.
    """
    return JobFlags.new_job_arguments(args, find_job)
