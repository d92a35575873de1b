"""The flags that describe a new job, declared once for the command line and the magics.

``jobber run`` and ``jobber sweep`` add them to their argparse parsers; ``%%jobber_run``
and ``%%jobber_sweep`` wrap each in IPython's ``magic_arguments.argument``, which is
argparse too. So both take the same flags with the same help, and `JobFlags.new_job_arguments`
turns what either parsed into the arguments of ``new_job`` (and of ``sweep``).

Each flag is ``(names, keywords)``, as ``ArgumentParser.add_argument(*names, **keywords)``
takes them; its argparse dest (``--log-max`` -> ``log_max``) is the ``new_job`` keyword it
fills, except for the limits, which make one `Limits`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from gettext import gettext
from typing import Any, ClassVar

from jobber import _select_flags as select
from jobber._errors import JobberError
from jobber._jobs.spec import LIFECYCLE_OPTIONS
from jobber._limits import Limits
from jobber._text import did_you_mean

__all__ = ["JobFlags"]

Flag = tuple[tuple[str, ...], dict[str, Any]]


def _flag(*names: str, **keywords: Any) -> Flag:
    return names, keywords


def _dest(flag: Flag) -> str:
    """argparse's dest of a flag: its first long name, ``-`` as ``_``."""
    names, keywords = flag
    return keywords.get("dest") or next(n for n in names if n.startswith("--"))[2:].replace("-", "_")


def _words(text: str) -> tuple[str, ...]:
    """``"failed, oom-killed"`` -> ``("failed", "oom-killed")``."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


_LIMITS: tuple[Flag, ...] = (
    _flag("--cpu", metavar="C", help="CPUs the job may use, e.g. 0.5 or 2"),
    _flag("--memory", metavar="M", help="memory limit, e.g. 512M or 2G (binary units: 1K = 1024); auto: "
          "1.25 x the peak of the last runs with the same --label"),
    _flag("--pids", metavar="N", help="the most processes and threads the job may have at once"),
    _flag("--io-read", metavar="B", help="disk read limit in bytes per second, e.g. 10M"),
    _flag("--io-write", metavar="B", help="disk write limit in bytes per second, e.g. 10M"),
    _flag("--gpus", metavar="N", help="GPUs given to the job alone (CUDA_VISIBLE_DEVICES); it waits, pending, "
          "until that many are free. On Slurm: --gres=gpu:N"),
    _flag("--require-isolation", action="store_true",
          help="refuse to start rather than run unconfined (no cgroup) or with a limit not enforced"),
)
_LABEL = _flag("--label", metavar="NAME", help="a short name for the job: where a job id is asked for, "
               "NAME stands for its newest job")
_LIFECYCLE: tuple[Flag, ...] = (
    _flag("--timeout", metavar="DURATION", help="stop the job after this long: 90s, 30m, 2h, 1d "
          "(it ends timed-out)"),
    _flag("--log-max", metavar="SIZE", help="cap the log: past SIZE (e.g. 200M) keep its first and newest "
          "halves (default 1G, or $JOBBER_LOG_MAX; 0 for no cap)"),
    _flag("--retries", type=int, metavar="N", help="start a failed attempt again, up to N times"),
    _flag("--retry-on", type=_words, metavar="STATES", help="which endings are retried, comma-separated: "
          "failed, oom-killed, timed-out (default failed; failed,oom-killed with --oom-growth)"),
    _flag("--oom-growth", metavar="FACTOR[:CAP]", help="retry OOM kills (with --retries), the next attempt "
          "getting memory x FACTOR, up to CAP (e.g. 1.5:16G; default cap: the host's memory)"),
    # default None, not False: a re-run without --notify keeps what the job had.
    _flag("--notify", action="store_true", default=None, help="announce the job's end: JupyterLab's Jobs panel "
          "notifies of it whatever its length (its setting decides for the other jobs)"),
)
_SLURM: tuple[Flag, ...] = (
    _flag("--partition", metavar="NAME", help="Slurm partition (with --backend slurm)"),
    _flag("--time", metavar="LIMIT", help="Slurm time limit, e.g. 1:00:00 (with --backend slurm)"),
    _flag("--account", metavar="NAME", help="Slurm account (with --backend slurm)"),
    _flag("--gres", metavar="SPEC", help="Slurm generic resources, e.g. gpu:1 (with --backend slurm)"),
)
_QUEUE = _flag("--queue", metavar="NAME", help="start through this queue: the job waits, pending, while the "
               "queue is full (jobber queue and %%jobber_queue set its limits)")
_AFTER = _flag("--after", metavar="IDS", help="start once these jobs ended: 12,13 (each must exit 0, else "
               "this job fails unrun), 12:any (any ending); the magics take labels too")
_BACKEND = _flag("--backend", choices=["local", "slurm"], help="where to run it (default: $JOBBER_BACKEND, "
                 "else local)")
_ENV = _flag("--env", action="append", default=[], metavar="NAME=VALUE",
             help="set an environment variable for the job (repeatable)")
_CWD = _flag("--cwd", metavar="DIR", help="the job's working directory (default: the current one)")

LIFECYCLE_FLAGS = (_LABEL, *_LIFECYCLE)
"""One flag per lifecycle option of the spec, in its order (tests/test_job_flags.py checks it)."""


def _after(text: str, find_job: Callable[[str], Any] | None) -> list[tuple[int, str]]:
    """``--after 12,13:any`` as ``new_job(after=...)``: ``[(12, "ok"), (13, "any")]``.

    With ``find_job`` (the magics), a label stands for its newest job; the command line
    takes ids only (docs/api.md), so each says what it takes in its own words.
    """
    refs = []
    for word in (w.strip() for w in text.split(",")):
        ref, _, mode = word.rpartition(":") if word.endswith((":ok", ":any")) else (word, "", "ok")
        if ref.isdigit():
            refs.append((int(ref), mode))
        elif ref and find_job is not None:
            refs.append((find_job(ref).id, mode))
        elif find_job is None:
            raise JobberError(f"--after {text!r}: write job ids separated by commas, each maybe with :any "
                              "(any ending) or :ok (must exit 0, the default), e.g. --after 12,13:any")
        else:
            raise JobberError(f"--after {text!r}: write job numbers or labels, comma-separated, each with "
                              ":any to wait for any ending (e.g. --after 3,prep:any)")
    return refs


class JobFlags:
    """The flags of a new job (``--memory 2G --queue gpu --retries 2 ...``), declared once.

    ``jobber run``/``jobber sweep`` add them to their parsers with `add_to`; the magics
    wrap each ``(names, keywords)`` of `JOB` in ``magic_arguments.argument``.

    Attributes:
        JOB: every flag of a new job, in the order help lists them: ``(names, keywords)``
            of ``ArgumentParser.add_argument``.
        LIFECYCLE: the lifecycle flags ``--timeout --log-max --retries --retry-on
            --oom-growth --notify``, which ``rerun`` takes too (with a ``--label`` of its own).
        KEYWORDS: the keywords of ``new_job`` that `new_job_arguments` may fill, besides
            the limits.
        LIST: the flags that pick jobs to show (``jobber ls``, ``%jobber_jobs``):
            ``--label --state -n -a``; `listing` applies them.
        PRUNE: the flags of ``jobber prune``/``%jobber_prune``; `prune` applies them.
        RM: the flags of ``jobber rm``/``%jobber_rm``; `remove` applies them.
    """

    JOB: ClassVar[tuple[Flag, ...]] = (*_LIMITS, _ENV, _CWD, _LABEL, *_LIFECYCLE, _QUEUE, _AFTER, _BACKEND,
                                       *_SLURM)
    LIFECYCLE: ClassVar[tuple[Flag, ...]] = _LIFECYCLE
    KEYWORDS: ClassVar[frozenset[str]] = frozenset(_dest(flag) for flag in JOB if flag not in _LIMITS)
    LIST: ClassVar[tuple[Flag, ...]] = select.LIST
    PRUNE: ClassVar[tuple[Flag, ...]] = select.PRUNE
    RM: ClassVar[tuple[Flag, ...]] = select.RM
    listing = staticmethod(select.listing)
    prune = staticmethod(select.prune)
    remove = staticmethod(select.remove)

    @staticmethod
    def add_to(parser: argparse.ArgumentParser, flags: Sequence[Flag] = JOB) -> None:
        """Add ``flags`` (default: every flag of a new job) to ``parser``."""
        for names, keywords in flags:
            parser.add_argument(*names, **keywords)

    @staticmethod
    def new_job_arguments(args: argparse.Namespace,
                          find_job: Callable[[str], Any] | None = None) -> tuple[Limits, dict[str, Any]]:
        """Turn parsed flags into the arguments of ``new_job``: its limits, and its keywords.

        Args:
            args: what a parser with `JOB` parsed.
            find_job: the session's ``find_job``, to let ``--after`` name labels; without
                it, ``--after`` takes job ids only.

        Returns:
            The `Limits`, and the keywords given (``env``, ``cwd``, the lifecycle options,
            ``queue``, ``after``, ``backend`` and the Slurm options).

        Raises:
            LimitError: a malformed limit.
            JobberError: a Slurm flag without ``--backend slurm``, or a malformed
                ``--env`` or ``--after``.
            JobNotFound: ``--after`` names a label no job has.
        """
        limits = Limits(cpu=args.cpu, memory=args.memory, pids=args.pids, io_read_bps=args.io_read,
                        io_write_bps=args.io_write, gpus=args.gpus, require_isolation=args.require_isolation)
        slurm = [names[0] for names, _ in _SLURM]
        options = {name: getattr(args, name) for name in ("backend", *map(_dest, _SLURM)) if getattr(args, name) is not None}
        if options.keys() - {"backend"} and options.get("backend", os.environ.get("JOBBER_BACKEND")) != "slurm":
            raise JobberError(f"{', '.join(slurm[:-1])} and {slurm[-1]} are Slurm options: add --backend slurm")
        if env := JobFlags.env(args.env):
            options["env"] = env
        if args.cwd is not None:
            options["cwd"] = args.cwd
        options.update(JobFlags.lifecycle_options(args))
        if args.queue is not None:
            options["queue"] = args.queue
        if args.after is not None:
            options["after"] = _after(args.after, find_job)
        return limits, options

    @staticmethod
    def lifecycle_options(args: argparse.Namespace) -> dict[str, Any]:
        """The lifecycle options among parsed flags (``--label`` and `LIFECYCLE`), as keywords
        of ``new_job`` and ``rerun``: those given, ``--retry-on`` as a tuple of states."""
        return {name: getattr(args, name) for name in LIFECYCLE_OPTIONS if getattr(args, name, None) is not None}

    @staticmethod
    def env(items: Sequence[str]) -> dict[str, str]:
        """``["SEED=1", "TAG=a=b"]`` (the ``--env`` given) -> ``{"SEED": "1", "TAG": "a=b"}``.

        Raises:
            JobberError: an item without ``=``.
        """
        env = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep:
                raise JobberError(f"--env {item!r}: write NAME=VALUE, e.g. --env SEED=1")
            env[name] = value
        return env

    @staticmethod
    def unknown(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
        """What to say of the words ``parser.parse_known_args`` did not know: argparse's own
        "unrecognized arguments" line, with the closest option of ``parser`` to each
        mistyped one ("--memroy: did you mean --memory?")."""
        guesses = did_you_mean(extras, parser)
        message = gettext("unrecognized arguments: %s") % " ".join(extras)  # argparse's words, as it translates them
        return "; ".join([message, *guesses])
