"""The jobber magics: each parses its line, calls the core once, and renders the result.

The current session is a ``jobber.Certificate`` (jobs on this host) or a remote session
from ``jobber.connect`` (jobs on a jobber server); both offer ``get_jobs``, ``get_job`` and
``new_job``, so no magic cares which one it holds. jobber's errors reach the user as
one-line ``UsageError`` messages, translated in exactly one place (`_user_errors`).
"""

from __future__ import annotations

import argparse
import functools
import keyword
import os
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

import jobber
from jobber import Certificate, JobberError, Limits
from jobber_magics._display import DoctorReport, IdentityView, JobList
from jobber_magics._loglines import LogLines

__all__ = ["JobberMagics"]

DEFAULT_TAIL_LINES = 10
_SLURM_OPTIONS = ("partition", "time", "account", "gres")
DEFAULT_FOLLOW_LINES = 1000


def _user_errors(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Show jobber's errors as one-line UsageErrors (no traceback from the core)."""

    @functools.wraps(magic)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return magic(*args, **kwargs)
        except JobberError as err:
            raise UsageError(str(err)) from err

    return wrapper


def _job_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id: give the job's number, e.g. 3 (see %jobber_jobs)")
    return int(text)


def _line_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines, e.g. 20")
    return int(text)


def _job_request(args: argparse.Namespace) -> tuple[Limits, dict[str, Any]]:
    """Turn the options of %%jobber_run into ``new_job`` arguments, as `jobber run` does.

    The one place they are read: another backend option is one more ``@argument`` on
    `JobberMagics.jobber_run` and one more name in `_SLURM_OPTIONS` (or its own tuple).

    Raises:
        UsageError: a Slurm option without ``--backend slurm``.
        LimitError: a malformed limit.
    """
    limits = Limits(cpu=args.cpu, memory=args.memory, pids=args.pids, io_read_bps=args.io_read,
                    io_write_bps=args.io_write, require_isolation=args.require_isolation)
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
    return limits, options


@magics_class
class JobberMagics(Magics):
    """The ``%jobber_*`` magics, holding the current session."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._session: Any = None  # a Certificate, or a remote session
        self._identity: Certificate | None = None  # the local identity, for --local
        self.replaced_formatters: dict[type, Any] = {}  # restored by unload_ipython_extension

    @property
    def session(self) -> Any:
        """Where jobs are made and found; $JOBBER_CERT until an identity is chosen.

        Raises:
            UsageError: no identity was chosen and $JOBBER_CERT is not set.
            CertificateError: $JOBBER_CERT is not a valid certificate of the pool.
        """
        if self._session is None:
            identity = self._default_identity()
            if identity is None:
                raise UsageError(
                    "no identity chosen yet: run `%jobber_cert PATH/TO/cert.pem` with a certificate "
                    "issued by your pool's CA (or set $JOBBER_CERT before starting Jupyter)"
                )
            self._session = identity
        return self._session

    def _default_identity(self) -> Certificate | None:
        if self._identity is None and os.environ.get("JOBBER_CERT"):
            self._identity = Certificate.from_file(os.environ["JOBBER_CERT"])
        return self._identity

    @magic_arguments()
    @argument("path", nargs="?", help="a PEM certificate issued by a CA of your pool (its private key "
              "is not needed for local jobs; ~ and $VARS are expanded). Until one is chosen, "
              "$JOBBER_CERT is the identity")
    @line_magic
    @_user_errors
    def jobber_cert(self, line: str) -> IdentityView | None:
        """Choose the identity that owns your jobs; without PATH, show it and the pool.

        The certificate is checked against the pool ($JOBBER_ROOT/pool, else
        ~/.jobber/pool) as a jobber server's TLS handshake would check it.
        """
        args = parse_argstring(self.jobber_cert, line)
        if args.path is None:
            session = self._session if self._session is not None else self._default_identity()
            return IdentityView(session, jobber.get_client_certificates(), str(jobber.default_root() / "pool"))
        cert = Certificate.from_file(_path(args.path))
        self._session = self._identity = cert
        print(f"Jobs now run on this host as {cert.subject}.")
        return None

    @magic_arguments(name="%jobber_run")  # the usage line then reads %%jobber_run
    @argument("--cpu", metavar="C", help="CPUs the job may use, e.g. 0.5 or 2")
    @argument("--memory", metavar="M", help="memory limit, e.g. 512M or 2G (binary units: 1K = 1024)")
    @argument("--pids", metavar="N", help="the most processes and threads the job may have at once")
    @argument("--io-read", metavar="B", help="disk read limit in bytes per second, e.g. 10M")
    @argument("--io-write", metavar="B", help="disk write limit in bytes per second, e.g. 10M")
    @argument("--require-isolation", action="store_true",
              help="refuse to start rather than run unconfined (no cgroup) or with a limit not enforced")
    @argument("--backend", choices=["local", "slurm"], help="where to run it (default: $JOBBER_BACKEND, else local)")
    @argument("--partition", metavar="P", help="Slurm partition (with --backend slurm)")
    @argument("--time", metavar="T", help="Slurm time limit, e.g. 1:00:00 (with --backend slurm)")
    @argument("--account", metavar="A", help="Slurm account (with --backend slurm)")
    @argument("--gres", metavar="G", help="Slurm generic resources, e.g. gpu:1 (with --backend slurm)")
    @argument("--env", action="append", default=[], metavar="NAME=VALUE",
              help="set an environment variable for the job (repeatable): how Python values reach the script")
    @argument("--cwd", metavar="DIR", help="the job's working directory (default: this kernel's)")
    @argument("--name", metavar="VAR", help="also store the Job in the variable VAR")
    @argument("--no-follow", action="store_true", help="start the job without showing its live log")
    @line_cell_magic
    @_user_errors
    def jobber_run(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a shell script in an isolated job, and show its live log.

        The cell body is given to /bin/sh exactly as written: $HOME and {x} reach the shell
        untouched (no IPython variable expansion). To pass Python values in, use
        environment variables: ``--env LR=0.01`` (the script reads ``$LR``). The job runs in
        this kernel's environment and working directory (``--cwd`` to change it), with this
        kernel's Python first on PATH, so ``python`` and ``pip`` are the kernel's; it keeps
        running if the kernel stops. Returns the Job, so `_` and Out[n] hold it.

        Example::

            %%jobber_run --memory 2G --cpu 1 --name train
            python train.py --epochs 10
        """
        if cell is None:
            raise UsageError("%%jobber_run is a cell magic: write %%jobber_run (two %) and its options on the "
                             "first line of a cell, and the shell script below it")
        args = parse_argstring(self.jobber_run, line)
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(f"--name {args.name!r} is not a Python variable name: use letters, digits and _")
        limits, options = _job_request(args)
        session = self.session
        job = session.new_job(cell, limits, **options)
        job.start()
        if args.name:
            self.shell.user_ns[args.name] = job
        if not args.no_follow:
            from jobber_magics._widget import JobWidget

            display(JobWidget(job))
        return job

    @magic_arguments()
    @argument("job_id", type=_job_id, metavar="JOB_ID", help="the job's number (see %%jobber_jobs)")
    @argument("-n", "--lines", type=_line_count, metavar="LINES",
              help=f"how many of the last lines (default {DEFAULT_TAIL_LINES}; "
                   f"with -f, {DEFAULT_FOLLOW_LINES})")
    @argument("-f", "--follow", action="store_true", help="show a live view that follows the log")
    @line_magic
    @_user_errors
    def jobber_tail(self, line: str) -> Any:
        """Print the last lines of a job's log, or follow it live with -f.

        With -f the live view also re-attaches to a job started before a kernel restart.
        """
        args = parse_argstring(self.jobber_tail, line)
        job = self.session.get_job(args.job_id)
        if args.follow:
            from jobber_magics._widget import JobWidget

            lines = DEFAULT_FOLLOW_LINES if args.lines is None else max(args.lines, 1)
            # A negative offset is resolved against the end of the log when following
            # begins, so nothing written after this look back is skipped.
            return JobWidget(job, lines=lines, offset=-len(jobber.last_lines(job, lines)))
        count = DEFAULT_TAIL_LINES if args.lines is None else args.lines
        if count:
            text = LogLines(max_lines=count)
            text.feed(jobber.last_lines(job, count))
            text.finish()
            if len(text):
                print(text.text())
        return None

    @magic_arguments()
    @argument("job_id", type=_job_id, metavar="JOB_ID", help="the job's number (see %%jobber_jobs)")
    @argument("--grace", type=float, default=5.0, metavar="S",
              help="seconds between SIGTERM and SIGKILL (default 5)")
    @line_magic
    @_user_errors
    def jobber_stop(self, line: str) -> None:
        """Stop a job and every process it started: SIGTERM, then SIGKILL after the grace period."""
        args = parse_argstring(self.jobber_stop, line)
        status = self.session.get_job(args.job_id).stop(grace=args.grace)
        print(f"job {args.job_id}: {status.describe()}")

    @magic_arguments()
    @line_magic
    @_user_errors
    def jobber_doctor(self, line: str) -> DoctorReport:
        """Show what confines jobs on this host: the isolation a job gets and why, each limit
        (cpu, memory, pids, io) enforced or not with its fix, the launcher, the jobs
        directory, the identity and the pool (what `jobber doctor` prints).
        """
        parse_argstring(self.jobber_doctor, line)
        return DoctorReport(jobber.doctor())

    @magic_arguments()
    @line_magic
    @_user_errors
    def jobber_jobs(self, line: str) -> JobList:
        """Show this identity's jobs as a table, with their true state (read from disk).

        Jobs outlive the kernel: after a restart they are all here. Returns a list of Jobs.
        """
        parse_argstring(self.jobber_jobs, line)
        return JobList(self.session.get_jobs())

    @magic_arguments()
    @argument("url", nargs="?", help="the jobber server, e.g. https://jobs.example.org:8443 "
              "(default: $JOBBER_SERVER)")
    @argument("--cert", metavar="C", help="your client certificate, PEM (default: $JOBBER_CERT)")
    @argument("--key", metavar="K", help="its private key, PEM (default: $JOBBER_KEY)")
    @argument("--ca", metavar="CA", help="the CA of the server's certificate (default: $JOBBER_CA, "
              "else the system's CAs)")
    @argument("--local", action="store_true", help="run jobs on this host again")
    @line_magic
    @_user_errors
    def jobber_connect(self, line: str) -> None:
        """Run jobs on a jobber server (over mTLS) instead of this host, or back with --local.

        Every other magic then works with the server's jobs.
        """
        args = parse_argstring(self.jobber_connect, line)
        if args.local:
            if args.url or args.cert or args.key or args.ca:
                raise UsageError("--local takes no URL, --cert, --key or --ca: it goes back to this host")
            self._session = self._identity
            identity = self._default_identity()
            print("Jobs now run on this host" + (f" as {identity.subject}." if identity else
                                                 ": choose an identity with %jobber_cert PATH."))
            return
        # The same defaults as the jobber command line.
        url = args.url or os.environ.get("JOBBER_SERVER")
        cert = args.cert or os.environ.get("JOBBER_CERT")
        key = args.key or os.environ.get("JOBBER_KEY")
        ca = args.ca or os.environ.get("JOBBER_CA")
        if not url:
            raise UsageError("give the server's URL: %jobber_connect https://HOST:PORT --cert me.pem "
                             "--key me.key --ca ca.pem (or set $JOBBER_SERVER; --local for this host)")
        if not cert or not key:
            raise UsageError("%jobber_connect needs your certificate and its key: pass --cert C --key K "
                             "(or set $JOBBER_CERT and $JOBBER_KEY)")
        session = jobber.connect(url, cert=_path(cert), key=_path(key), ca=ca and _path(ca))
        self._session = session
        print(f"Jobs now run on {session.url} as {session.subject}.")


def _path(text: str) -> str:
    """A path as typed in a magic: ~ and $VARIABLES expanded (IPython only expands Python names)."""
    return os.path.expanduser(os.path.expandvars(text))
