"""The ``jobber`` command line: run, list, follow and stop jobs from a terminal.

    jobber run --memory 2G --cpu 1 --follow -- python train.py
    jobber ls
    jobber logs 3 -f
    jobber queue gpu --parallel 2; jobber run --queue gpu --after 3 -- python train.py
    jobber sweep --param lr=0.1,0.01 -- 'python train.py --lr {lr}'
    jobber stop 3
    jobber doctor
    jobber certs init-demo ~/.jobber-demo
    jobber serve --cert server.pem --key server.key

The identity is ``--cert`` or ``$JOBBER_CERT``; ``--server`` (or ``$JOBBER_SERVER``) sends
everything to a jobber server instead of this host.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence

from jobber._certificates import Certificate
from jobber._cli_certs import run_certs
from jobber._cli_parser import build_parser
from jobber._cli_queue import run_queue, run_sweep
from jobber._cli_wait import run_wait
from jobber._errors import JobberError
from jobber._job_flags import JobFlags
from jobber._jobs.history import last_runs
from jobber._jobs.oversubscription import oversubscription
from jobber._jobs.status import JobStatus
from jobber._limits import Limits, format_size
from jobber._tail import last_lines

__all__ = ["main", "build_parser", "exit_code_of"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # An option the subcommand does not know: its own usage and error (argparse would
        # pass it up and print the top-level usage), with the closest option it has.
        sub = _subcommand_parser(parser, args)
        sub.error(JobFlags.unknown(sub, extras))
    try:
        return _ACTIONS[args.action](args)
    except JobberError as err:
        print(f"jobber: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `jobber logs 3 | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _subcommand_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand that ``args`` were parsed by."""
    for name in ("action", "certs_action"):
        chosen = getattr(args, name, None)
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if chosen is None or not subparsers or chosen not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[chosen]
    return parser


def _session(args: argparse.Namespace):
    """The identity's job API: a local Certificate, or a remote session."""
    if not args.cert:
        raise JobberError("no identity: pass --cert PEM or set JOBBER_CERT (make one with `jobber certs init-demo DIR`)")
    if args.server:
        if not args.key:
            raise JobberError("--server needs the private key of --cert: pass --key or set JOBBER_KEY")
        from jobber import connect

        return connect(args.server, cert=args.cert, key=args.key, ca=args.ca)
    return Certificate.from_file(args.cert, root=args.root)


def exit_code_of(status: JobStatus) -> int:
    """The shell's convention: the job's code, or 128 + the signal that ended it."""
    if status.exit_code is not None:
        return status.exit_code
    if status.signal:
        return 128 + status.signal
    return 0 if status.state == "exited" else 1


def _run(args: argparse.Namespace) -> int:
    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        raise JobberError("no command: write it after --, e.g. `jobber run -- python train.py`")
    command = words[0] if len(words) == 1 else shlex.join(words)
    limits, options = JobFlags.new_job_arguments(args)
    session = _session(args)
    if args.label is not None:
        history = last_runs(session, args.label)
        if history is not None:
            print(f"jobber: {history.describe()}", file=sys.stderr, flush=True)
    job = session.new_job(command, limits, **options)
    if isinstance(session, Certificate) and job.backend == "local":
        for warning in job.limits.beyond_host():
            print(f"jobber: warning: {warning}", file=sys.stderr, flush=True)
        if (crowded := oversubscription(session, [job])) is not None:  # with the jobs already running
            print(f"jobber: warning: {crowded.describe('cli')}", file=sys.stderr, flush=True)
    if args.memory == "auto":
        print(f"jobber: --memory auto: {format_size(job.limits.memory)}", file=sys.stderr, flush=True)
    job.start()
    if not args.follow:
        waiting = job.status()
        said = f"waits: {waiting.note}" if waiting.state == "pending" else "started"
        print(f"job {job.id} {said} (`jobber logs {job.id} -f` to follow it)", file=sys.stderr, flush=True)
        print(job.id, flush=True)
        return 0
    # Before the job's first byte: stderr and stdout may share a terminal or a file.
    print(f"job {job.id} started", file=sys.stderr, flush=True)
    try:
        _copy_to_stdout(job.follow())
    except KeyboardInterrupt:
        print(f"\njobber: stopped following; job {job.id} keeps running (`jobber stop {job.id}`)", file=sys.stderr)
        return 130
    status = job.wait()
    sys.stdout.flush()
    print(f"jobber: job {job.id} {status.describe()}", file=sys.stderr, flush=True)
    return exit_code_of(status)


def _sweep(args: argparse.Namespace) -> int:
    limits, options = JobFlags.new_job_arguments(args)
    return run_sweep(args, _session(args), limits, options)


def _queue(args: argparse.Namespace) -> int:
    return run_queue(args, _session(args))


def _rerun(args: argparse.Namespace) -> int:
    old = _session(args).find_job(args.job_id)
    overrides: dict = {}
    changed = {name: getattr(args, attr) for name, attr in (("cpu", "cpu"), ("memory", "memory"), ("pids", "pids"),
               ("io_read_bps", "io_read"), ("io_write_bps", "io_write")) if getattr(args, attr) is not None}
    if changed:
        overrides["limits"] = Limits(**{**old.limits.to_dict(), **changed})
    if args.env:
        overrides["env"] = {**old.env, **JobFlags.env(args.env)}
    overrides.update(JobFlags.lifecycle_options(args))
    job = old.rerun(**overrides)
    job.start()
    print(f"job {job.id} started (a re-run of job {old.id})", file=sys.stderr, flush=True)
    if not args.follow:
        print(job.id)
        return 0
    _copy_to_stdout(job.follow())
    return exit_code_of(job.wait())


def _rm(args: argparse.Namespace) -> int:
    removed, missing = JobFlags.remove(_session(args), args)
    for job_id in removed:
        print(f"job {job_id} removed")
    for job_id, why in removed.kept.items():
        print(f"jobber: job {job_id} kept: {why}", file=sys.stderr)
    for error in missing:
        print(f"jobber: error: {error}", file=sys.stderr)
    return 1 if missing or removed.kept else 0


def _prune(args: argparse.Namespace) -> int:
    print(JobFlags.prune(_session(args), args).describe(dry_run=args.dry_run))
    return 0


def _copy_to_stdout(chunks) -> None:
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
        out.flush()


def _skip_first_byte(chunks):
    first = True
    for chunk in chunks:
        if first:
            chunk, first = chunk[1:], False
        if chunk:
            yield chunk


def _ls(args: argparse.Namespace) -> int:
    return _ls_rows(_session(args), args)


def _ls_rows(session, args: argparse.Namespace) -> int:
    """``jobber ls`` for a session (apart, so the benchmarks time the listing alone).

    A job that cannot be read is left out and said on stderr after the listing (``jobber:
    job 7 skipped: why``); the exit status is then 1, as ``jobber rm``'s for a job it kept.
    """
    rows, hidden = JobFlags.listing(session, args, every=args.json)
    _print_rows(rows, hidden, args)
    sys.stdout.flush()  # the table first, where both go to one terminal or file
    for job_id, why in rows.skipped.items():
        print(f"jobber: job {job_id} skipped: {why}", file=sys.stderr)
    return 1 if rows.skipped else 0


def _print_rows(rows, hidden: int, args: argparse.Namespace) -> None:
    """The table of ``jobber ls`` (its JSON with ``--json``), or why there is none."""
    if args.json:
        print(json.dumps([{"id": j.id, "command": j.command, **s.to_dict()} for j, s in rows], indent=1))
        return
    if not rows and not hidden:
        if not rows.skipped:
            filtered = args.label is not None or args.state
            print("no jobs match" if filtered else "no jobs yet: start one with `jobber run -- COMMAND`", file=sys.stderr)
        return
    if hidden:
        print(f"({hidden:,} older job{'s' if hidden != 1 else ''} not shown: `jobber ls --all`, or -n N)")
    # Newest last (ids count up), every column as wide as its widest cell.
    table = [("ID", "STARTED", "DURATION", "RESULT", "BACKEND", "LABEL", "COMMAND")]
    for job, status in rows:
        started = status.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if status.started_at else "-"
        command = job.command.strip().replace("\n", "; ")
        result = status.describe() + (f" ({attempt})" if (attempt := status.attempt_text()) else "")
        if status.state == "pending" and status.note:
            result += f": {status.note}"  # why it waits: its queue, its dependencies, GPUs
        table.append((str(job.id), started, status.elapsed_text, result, status.backend, job.label or "-",
                      command[:80] + (" …" if len(command) > 80 else "")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.rjust(widths[i]) if i in (0, 2) else cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, row[-1]]).rstrip())


def _status(args: argparse.Namespace) -> int:
    job = _session(args).find_job(args.job_id)
    status = job.status()
    if args.json:
        print(json.dumps({"id": job.id, "command": job.command, **status.to_dict()}, indent=1))
        return 0
    elapsed = f"{status.elapsed:.1f} s" if status.elapsed is not None else "-"
    print(f"job {job.id}: {status.describe()}")
    if attempt := status.attempt_text():
        print(f"  retries    {attempt}")
    print(f"  command    {job.command}")
    print(f"  limits     {status.limits.describe()}")
    print(f"  isolation  {status.isolation or '-'}{'  (' + status.isolation_note + ')' if status.isolation_note else ''}")
    print(f"  elapsed    {elapsed}")
    print(f"  memory     peak {format_size(status.peak_memory_bytes)}")
    cpu = f"{status.cpu_seconds:.2f} s" if status.cpu_seconds is not None else "-"
    print(f"  cpu        {cpu}")
    if status.peak_pids is not None:  # "sampled": a burst between two samples is missed (cgroup v1)
        limit = f", limit {status.limits.pids}" if status.limits.pids else ""
        print(f"  processes  peak {status.peak_pids}{' (sampled)' if status.peak_pids_sampled else ''}{limit}")
    if status.log_dropped_bytes:
        print(f"  log        {format_size(status.log_dropped_bytes)} cut from its middle by the log cap")
    if status.log_stopped:
        print(f"  log        stopped: {status.log_stopped}")
    if held := status.held_back():
        print(f"  slow?      {held}")
    if status.note:
        print(f"  note       {status.note}")
    if job.notify:
        print("  notify     its end is announced (--notify)")
    return 0


def _logs(args: argparse.Namespace) -> int:
    job = _session(args).find_job(args.job_id)
    if args.attempt is not None and args.attempt != job.attempt:
        return _attempt_log(job, args.attempt)
    if args.follow:
        # A negative offset is resolved against the end when follow opens the log, so
        # nothing written after that is ever skipped.
        if args.lines is None:
            _copy_to_stdout(job.follow(0))
        elif args.lines > 0:
            _copy_to_stdout(job.follow(-len(last_lines(job, args.lines)) or 0))
        elif job.tail(bytearray(1), -1):
            _copy_to_stdout(_skip_first_byte(job.follow(-1)))  # only what comes next
        else:
            _copy_to_stdout(job.follow(0))
        return 0
    if args.lines is not None:
        sys.stdout.buffer.write(last_lines(job, args.lines))
        sys.stdout.buffer.flush()
        return 0
    offset = 0
    buf = bytearray(1 << 16)
    out = sys.stdout.buffer
    while n := job.tail(buf, offset):
        out.write(buf[:n])
        offset += n
    out.flush()
    return 0


def _attempt_log(job, attempt: int) -> int:
    """``jobber logs ID --attempt N``: the log an ended attempt left."""
    current = job.attempt
    if not 1 <= attempt <= current:
        raise JobberError(f"job {job.id} has attempts 1 to {current}: there is no attempt {attempt}")
    if job.path is None:
        raise JobberError(f"job {job.id}: the logs of earlier attempts are kept on the job's host only")
    from jobber._jobs import logs

    path = job.path / "attempts" / str(attempt) / "log"
    offset, buf, out = 0, bytearray(1 << 16), sys.stdout.buffer
    while n := logs.tail(path, buf, offset):
        out.write(buf[:n])
        offset += n
    out.flush()
    return 0


def _stop(args: argparse.Namespace) -> int:
    job = _session(args).find_job(args.job_id)
    status = job.stop(grace=args.grace)
    print(f"job {job.id}: {status.describe()}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from jobber._doctor import diagnose

    diagnosis = diagnose(args.root)
    print(json.dumps(diagnosis.to_dict(), indent=1) if args.json else diagnosis)
    return 0 if diagnosis.confined else 1


def _serve(args: argparse.Namespace) -> int:
    from jobber._server.app import serve
    from jobber._server.connection_limits import ConnectionLimits
    from jobber._server.quotas import Quotas

    def given(**values: object) -> dict[str, object]:
        return {name: value for name, value in values.items() if value is not None}

    try:
        limits = ConnectionLimits(**given(
            max_connections=args.max_connections, max_per_peer=args.max_connections_per_peer,
            handshake_timeout=args.handshake_timeout, header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout))
        quotas = Quotas(**given(max_running_jobs=args.max_running_jobs, max_jobs=args.max_jobs,
                                max_requests_in_flight=args.max_requests_in_flight))
    except ValueError as err:
        raise JobberError(str(err)) from None
    serve(host=args.host, port=args.port, cert=args.server_cert, key=args.server_key,
          root=args.serve_root or args.root, job_user=args.job_user, log_level=args.log_level,
          single_tenant=args.single_tenant, uid_range=args.uid_range, state_dir=args.state_dir,
          private_tmp=args.private_tmp, limits=limits, quotas=quotas, pythons=args.pythons)
    return 0


_ACTIONS = {"run": _run, "ls": _ls, "status": _status, "logs": _logs, "stop": _stop, "rerun": _rerun, "rm": _rm,
            "prune": _prune, "sweep": _sweep, "queue": _queue,
            "certs": run_certs, "doctor": _doctor, "serve": _serve,
            "wait": lambda args: run_wait(args, _session(args), exit_code_of)}

if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
