"""The ``jobber`` commands of queues and sweeps: ``queue`` and ``sweep`` (the
``--queue``/``--after``/``--gpus`` of a new job are `jobber._job_flags`).

    jobber queue gpu --parallel 2 --gpus 2
    jobber run --queue gpu --gpus 1 --after 12,13:any -- python train.py
    jobber sweep --param lr=0.1,0.01 --param bs=32,64 --queue gpu -- 'python train.py --lr {lr} --bs {bs}'

Kept apart from ``cli.py``, which calls these; both drive a ``Certificate`` or a remote
session alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from jobber._certificates import Certificate
from jobber._errors import JobberError
from jobber._jobs.oversubscription import oversubscription
from jobber._jobs.queues import describe_settings

__all__ = ["run_queue", "run_sweep"]


def _params(items: list[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise JobberError(f"--param {item!r}: write NAME=V1,V2,..., e.g. --param lr=0.1,0.01")
        if name.strip() in params:
            raise JobberError(f"--param {name.strip()} is given twice: give all its values in one --param")
        params[name.strip()] = [v.strip() for v in values.split(",")]
    return params


def run_sweep(args: argparse.Namespace, session: Any, limits: Any, options: dict[str, Any]) -> int:
    """``jobber sweep``: make and start the jobs, then print a line per job."""
    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        raise JobberError("no command template: write it after --, e.g. "
                          "`jobber sweep --param lr=0.1,0.01 -- 'python train.py --lr {lr}'`")
    if not args.param:
        raise JobberError("a sweep needs parameters: --param lr=0.1,0.01 (repeatable)")
    template = words[0] if len(words) == 1 else shlex.join(words)
    sweep = session.sweep(template, limits=limits, **options, **_params(args.param))
    if isinstance(session, Certificate) and sweep and sweep[0].backend == "local":
        if (crowded := oversubscription(session, list(sweep))) is not None:
            print(f"jobber: warning: {crowded.describe('cli')}", file=sys.stderr, flush=True)
    for job, params in zip(sweep, sweep.params):
        print(f"{job.id}\t" + " ".join(f"{name}={value}" for name, value in params.items()), flush=True)
    print(f"jobber: {len(sweep)} jobs started (`jobber ls` shows them)", file=sys.stderr, flush=True)
    return 0


def run_queue(args: argparse.Namespace, session: Any) -> int:
    """``jobber queue [NAME] [--parallel N ...]``: show every queue, show one, or set one."""
    given = {name: getattr(args, name) for name in ("parallel", "memory", "cpus", "gpus")
             if getattr(args, name) is not None}
    if given and args.name is None:
        raise JobberError("which queue? name it: jobber queue NAME --parallel 2")
    if given:
        session.set_queue(args.name, **given)
    queues = session.queues()
    if args.name is not None:
        queues = {args.name: queues.get(args.name) or {"parallel": None, "memory": None, "cpus": None, "gpus": None,
                                                       "running": 0, "waiting": 0}}
    if args.json:
        print(json.dumps(queues, indent=1))
        return 0
    if not queues:
        print("no queues yet: set one with `jobber queue NAME --parallel 2`, or run a job with --queue NAME")
        return 0
    table = [("QUEUE", "RUNNING", "WAITING", "LIMITS")]
    for name, info in queues.items():
        table.append((name, str(info.get("running", 0)), str(info.get("waiting", 0)), describe_settings(info)))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]]).rstrip())
    return 0
