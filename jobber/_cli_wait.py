"""``jobber wait ID [--timeout T] [--notify-cmd CMD]``: block until a job ends, and say so.

For terminals and scripts: ``jobber wait 12 --notify-cmd 'notify-send "$JOBBER_JOB_MESSAGE"'``
runs CMD through ``/bin/sh -c`` once the job ended, with ``JOBBER_JOB_ID``,
``JOBBER_JOB_STATE`` and ``JOBBER_JOB_MESSAGE`` (``jobber._jobs.ending.end_message``: the
words the JupyterLab panel's notification uses) in its environment. The exit code is the
job's (as ``jobber run -f``), 124 when ``--timeout`` came first (as timeout(1)), or CMD's
when CMD failed (so a broken notifier is not silent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from jobber._jobs.ending import end_message
from jobber._jobs.options import parse_duration

__all__ = ["add_wait_parser", "run_wait"]

_TIMED_OUT = 124  # timeout(1)'s code: the wait ran out, the job did not end


def add_wait_parser(sub: Any) -> None:
    """Add ``wait`` to the subcommands ``sub`` (argparse's ``add_subparsers``)."""
    wait = sub.add_parser("wait", help="wait until a job ends (and run a command then)",
                          description="Block until the job ended, print how it ended, and exit with its code "
                          "(124 if --timeout came first).")
    wait.add_argument("job_id", metavar="ID|LABEL", help="a job id, or a label (its newest job)")
    wait.add_argument("--timeout", metavar="DURATION", help="give up after this long: 90s, 30m, 2h")
    wait.add_argument("--notify-cmd", metavar="CMD", help="run CMD (through /bin/sh) when the job ends, with "
                      "JOBBER_JOB_ID, JOBBER_JOB_STATE and JOBBER_JOB_MESSAGE set, e.g. "
                      "'notify-send \"$JOBBER_JOB_MESSAGE\"'")


def run_wait(args: argparse.Namespace, session: Any, exit_code_of: Any) -> int:
    """`jobber wait`: wait for the job, print its end, run ``--notify-cmd``.

    Raises:
        JobNotFound: no such job. JobError: a malformed --timeout.
    """
    timeout = None if args.timeout is None else parse_duration(args.timeout, "--timeout")
    job = session.find_job(args.job_id)
    status = job.wait(timeout)
    if not status.ended:
        print(f"jobber: job {job.id} is still {status.state} after {args.timeout}", file=sys.stderr, flush=True)
        return _TIMED_OUT
    message = end_message(job.id, job.label, status)
    print(f"jobber: {message}", file=sys.stderr, flush=True)
    if args.notify_cmd:
        env = {**os.environ, "JOBBER_JOB_ID": str(job.id), "JOBBER_JOB_STATE": status.state,
               "JOBBER_JOB_MESSAGE": message}
        done = subprocess.run(["/bin/sh", "-c", args.notify_cmd], env=env, check=False)
        if done.returncode != 0:
            print(f"jobber: --notify-cmd exited with code {done.returncode}", file=sys.stderr, flush=True)
            return done.returncode
    return exit_code_of(status)
