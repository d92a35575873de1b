"""The options that describe a job, declared once for ``%%jobber_run`` and ``%%jobber_sweep``.

`job_arguments` adds the ``@argument`` lines (limits, backend, env, cwd, label, lifecycle,
queue, after, gpus) to a magic; `job_request` turns the parsed options into the arguments
of ``new_job`` (and of ``sweep``, which takes the same ones), as `jobber run` does.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from jobber import Limits

__all__ = ["after_refs", "job_arguments", "job_request", "lifecycle_arguments", "lifecycle_options"]

_SLURM_OPTIONS = ("partition", "time", "account", "gres")


def lifecycle_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--timeout --log-max --retries --retry-on --oom-growth`` as ``new_job`` arguments."""
    options = {name: getattr(args, name) for name in ("timeout", "log_max", "retries", "oom_growth")
               if getattr(args, name, None) is not None}
    if getattr(args, "retry_on", None) is not None:
        options["retry_on"] = tuple(s.strip() for s in args.retry_on.split(",") if s.strip())
    return options


def _apply(func: Any, decorators: tuple[Any, ...]) -> Any:
    # Applied last to first, so that the help lists them in the order written.
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def lifecycle_arguments(func: Any) -> Any:
    """The lifecycle options of ``%%jobber_run`` and ``%jobber_rerun``, declared once."""
    return _apply(func, (
        argument("--timeout", metavar="T", help="stop the job after this long: 90s, 30m, 2h, 1d (it ends timed-out)"),
        argument("--log-max", metavar="SIZE", help="cap the log at SIZE (e.g. 200M): past it keep its first and "
                 "newest halves (default 1G, or $JOBBER_LOG_MAX)"),
        argument("--retries", type=int, metavar="N", help="start a failed attempt again, up to N times"),
        argument("--retry-on", metavar="STATES", help="which endings are retried: failed, oom-killed, timed-out "
                 "(comma-separated; default failed)"),
        argument("--oom-growth", metavar="F[:CAP]", help="after an OOM kill the next attempt gets memory x F, "
                 "up to CAP (e.g. 1.5:16G)"),
    ))


def job_arguments(func: Any) -> Any:
    """Every option that describes a job: limits, where it runs, its environment, its
    lifecycle, and when it may start (``--queue --after --gpus``)."""
    return _apply(lifecycle_arguments(func), (
        argument("--cpu", metavar="C", help="CPUs the job may use, e.g. 0.5 or 2"),
        argument("--memory", metavar="M", help="memory limit, e.g. 512M or 2G (binary units: 1K = 1024); auto: "
                 "1.25 x the peak of the last runs with the same --label"),
        argument("--pids", metavar="N", help="the most processes and threads the job may have at once"),
        argument("--io-read", metavar="B", help="disk read limit in bytes per second, e.g. 10M"),
        argument("--io-write", metavar="B", help="disk write limit in bytes per second, e.g. 10M"),
        argument("--gpus", metavar="N", help="GPUs given to the job alone (CUDA_VISIBLE_DEVICES); it waits, "
                 "pending, until that many are free"),
        argument("--require-isolation", action="store_true",
                 help="refuse to start rather than run unconfined (no cgroup) or with a limit not enforced"),
        argument("--queue", metavar="Q", help="start through the queue Q: the job waits, pending, while Q is "
                 "full (%%jobber_queue Q --parallel N sets its limits)"),
        argument("--after", metavar="ID[,ID...]", help="start only once these jobs (numbers or labels) have "
                 "exited with code 0; ID:any waits for any ending. A failed one fails this job"),
        argument("--backend", choices=["local", "slurm"], help="where to run it (default: $JOBBER_BACKEND, "
                 "else local)"),
        argument("--partition", metavar="P", help="Slurm partition (with --backend slurm)"),
        argument("--time", metavar="T", help="Slurm time limit, e.g. 1:00:00 (with --backend slurm)"),
        argument("--account", metavar="A", help="Slurm account (with --backend slurm)"),
        argument("--gres", metavar="G", help="Slurm generic resources, e.g. gpu:1 (with --backend slurm)"),
        argument("--env", action="append", default=[], metavar="NAME=VALUE",
                 help="set an environment variable for the job (repeatable): how Python values reach the script"),
        argument("--cwd", metavar="DIR", help="the job's working directory (default: this kernel's)"),
        argument("--label", metavar="L", help="a short name for the job: %%jobber_tail L, %%jobber_rerun L"),
    ))


def after_refs(text: str | None, find_job: Any) -> list[tuple[int, str]]:
    """``--after 3,train:any`` as ``new_job(after=...)``: labels resolved with ``find_job``.

    Raises:
        UsageError: an empty reference or an unknown mode.
        JobNotFound: no job with that number or label.
    """
    if text is None:
        return []
    refs = []
    for word in (w.strip() for w in text.split(",")):
        ref, sep, mode = word.rpartition(":") if word.endswith((":ok", ":any")) else (word, "", "ok")
        if not ref or (sep and mode not in ("ok", "any")):
            raise UsageError(f"--after {text!r}: write job numbers or labels, comma-separated, each with "
                             ":any to wait for any ending (e.g. --after 3,prep:any)")
        job_id = int(ref) if ref.isdigit() else find_job(ref).id
        refs.append((job_id, mode))
    return refs


def job_request(args: argparse.Namespace, find_job: Any) -> tuple[Limits, dict[str, Any]]:
    """Turn the options of `job_arguments` into ``new_job`` arguments, as `jobber run` does.

    The one place they are read: another backend option is one more ``@argument`` above
    and one more name in `_SLURM_OPTIONS` (or its own tuple).

    Args:
        args: the parsed options.
        find_job: the session's ``find_job``, to resolve the labels of ``--after``.

    Raises:
        UsageError: a Slurm option without ``--backend slurm``, or a malformed --env/--after.
        LimitError: a malformed limit.
    """
    limits = Limits(cpu=args.cpu, memory=args.memory, pids=args.pids, io_read_bps=args.io_read,
                    io_write_bps=args.io_write, gpus=args.gpus, require_isolation=args.require_isolation)
    options = {name: getattr(args, name) for name in ("backend", *_SLURM_OPTIONS) if getattr(args, name) is not None}
    if options.keys() - {"backend"} and options.get("backend", os.environ.get("JOBBER_BACKEND")) != "slurm":
        raise UsageError("--partition, --time, --account and --gres are Slurm options: add --backend slurm")
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--env {item!r}: write NAME=VALUE, e.g. --env SEED=1")
        env[name] = value
    if env:
        options["env"] = env
    if args.cwd is not None:
        options["cwd"] = args.cwd
    if args.label is not None:
        options["label"] = args.label
    if args.queue is not None:
        options["queue"] = args.queue
    if after := after_refs(args.after, find_job):
        options["after"] = after
    options.update(lifecycle_options(args))
    return limits, options
