"""The magics for a job's lifecycle: ``%jobber_jobs`` (the table of jobs), ``%jobber_rerun``,
``%jobber_rm``, ``%jobber_prune``.

They act on the session of the main magics (`JobberMagics`), which they are given, so a
``%jobber_connect`` applies to them too.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jobber import JobFlags, Limits
from jobber_magics._display import JobList
from jobber_magics._magics import JobberMagics, job_ref, lifecycle_arguments, lifecycle_options, parse_options, user_errors
from jobber_magics._options import flag_arguments
from jobber_magics._removals import check_removals_soon

__all__ = ["JobberLifecycleMagics"]


@magics_class
class JobberLifecycleMagics(Magics):
    """List, re-run, remove and prune jobs, through the main magics' session."""

    def __init__(self, shell: Any, main: JobberMagics) -> None:
        super().__init__(shell)
        self._main = main

    @magic_arguments()
    @flag_arguments(JobFlags.LIST)
    @line_magic
    @user_errors
    def jobber_jobs(self, line: str) -> JobList:
        """Show this identity's jobs as a table, newest last (the newest 200, as `jobber ls`):
        label, start time, duration, their true state or result (read from disk), and the
        command's first line (all of it on hover). ``--label train``, ``--state failed``,
        ``-n 20`` and ``--all`` choose which.

        Jobs outlive the kernel: after a restart they are all here. Returns a list of Jobs.
        """
        args = parse_options(self.jobber_jobs, line)
        rows, hidden = JobFlags.listing(self._main.session, args)
        return JobList([job for job, _ in rows], [status for _, status in rows], hidden=hidden,
                       skipped=getattr(rows, "skipped", None))

    @magic_arguments()
    @argument("job_id", type=job_ref, metavar="JOB_ID", help="the job to run again: its number or label")
    @argument("--cpu", metavar="C", help="new CPU limit")
    @argument("--memory", metavar="M", help="new memory limit, e.g. 16G")
    @argument("--pids", metavar="N", help="new process limit")
    @argument("--io-read", metavar="B", help="new disk read limit (bytes/s)")
    @argument("--io-write", metavar="B", help="new disk write limit (bytes/s)")
    @argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set or replace a variable")
    @argument("--label", metavar="L", help="a new label")
    @lifecycle_arguments
    @argument("--no-follow", action="store_true", help="start it without showing its live view")
    @line_magic
    @user_errors
    def jobber_rerun(self, line: str) -> Any:
        """Run a job again: a new job with its command, limits and options, changed by the
        options given here (``%jobber_rerun train --memory 16G``). The old job is left as it
        was; the new one records which job it re-ran. Returns the new Job (its live view).
        """
        args = parse_options(self.jobber_rerun, line)
        old = self._main.session.find_job(args.job_id)
        overrides: dict[str, Any] = {}
        changed = {name: value for name, value in (("cpu", args.cpu), ("memory", args.memory), ("pids", args.pids),
                   ("io_read_bps", args.io_read), ("io_write_bps", args.io_write)) if value is not None}
        if changed:
            overrides["limits"] = Limits(**{**old.limits.to_dict(), **changed})
        env = dict(old.env)
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--env {item!r}: write NAME=VALUE, e.g. --env SEED=1")
            env[name] = value
        if args.env:
            overrides["env"] = env
        overrides.update(lifecycle_options(args))  # --label among them
        job = old.rerun(**overrides)
        job.start()
        if args.no_follow:
            print(f"job {job.id} started (a re-run of job {old.id}): `%jobber_tail -f {job.id}` to watch")
            return None
        return job

    @magic_arguments()
    @flag_arguments(JobFlags.RM)
    @line_magic
    @user_errors
    def jobber_rm(self, line: str) -> None:
        """Remove jobs that ended or never started: their directories and logs
        (``%jobber_rm 3 5 9``, ``%jobber_rm 12-40``, ``%jobber_rm --label sweep``). A running
        job is kept (stop it first), and said so. Each job removed is said ("job 25 removed").
        """
        args = parse_options(self.jobber_rm, line)
        removed, missing = JobFlags.remove(self._main.session, args)
        for job_id in removed:
            print(f"job {job_id} removed")
        problems = [*missing, *(f"job {job_id} kept: {why}" for job_id, why in removed.kept.items())]
        check_removals_soon()  # the live views of these jobs say so now, not at their next look
        if problems:
            raise UsageError("; ".join(problems))

    @magic_arguments()
    @flag_arguments(JobFlags.PRUNE)
    @line_magic
    @user_errors
    def jobber_prune(self, line: str) -> list[int]:
        """Remove ended jobs (never a running one), e.g. ``%jobber_prune --older-than 7d``,
        ``%jobber_prune --label sweep --dry-run``, ``%jobber_prune 12-40``; jobs never started
        go too once older than ``--older-than`` (default a day). Returns the ids removed;
        the selected jobs it kept, and why, are said.
        """
        args = parse_options(self.jobber_prune, line)
        pruned = JobFlags.prune(self._main.session, args)
        if pruned and not args.dry_run:
            check_removals_soon()
        print(pruned.describe(dry_run=args.dry_run))
        return pruned
