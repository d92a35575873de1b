"""The jobber magics: each parses its line, calls the core once, and renders the result.

The current session is a ``jobber.Certificate`` (jobs on this host) or a remote session
from ``jobber.connect`` (jobs on a jobber server); both offer ``get_jobs``, ``get_job`` and
``new_job``, so no magic cares which one it holds. jobber's errors reach the user as
one-line ``UsageError`` messages, translated in exactly one place (`user_errors`).
"""

from __future__ import annotations

import argparse
import functools
import keyword
import os
import re
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

import jobber
from jobber import Certificate, CertificateError, JobberError, JobFlags, Session, ca_hint, last_runs, oversubscription
from jobber_magics._display import DoctorReport, IdentityView, job_html
from jobber_magics._loglines import LogLines
from jobber_magics._options import job_arguments, job_request, lifecycle_arguments, lifecycle_options

__all__ = ["JobberMagics", "lifecycle_arguments", "lifecycle_options"]

DEFAULT_TAIL_LINES = 10
DEFAULT_FOLLOW_LINES = 1000


def user_errors(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Show jobber's errors as one-line UsageErrors (no traceback from the core)."""

    @functools.wraps(magic)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return magic(*args, **kwargs)
        except JobberError as err:
            raise UsageError(str(err)) from err

    return wrapper


def parse_options(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """The options of ``line`` (split as parse_argstring splits it), with "did you mean
    --memory?" for a mistyped option."""
    return known_options(magic.parser, magic.parser.parse_known_args(arg_split(line)))


def known_options(parser: argparse.ArgumentParser, parsed: tuple[argparse.Namespace, list[str]]) -> argparse.Namespace:
    """What ``parser.parse_known_args`` returned, once it found every word: else a
    UsageError that names the others, with the closest real option to each."""
    args, extras = parsed
    if extras:
        raise UsageError(f"{JobFlags.unknown(parser, extras)} (see {parser.prog}? for the options)")
    return args


def job_ref(text: str) -> int | str:
    """A job's number, or a label (the newest job with it)."""
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text and (text[0].isalpha() or text[0] == "_"):
        return text  # a label: resolved by the session's find_job
    raise argparse.ArgumentTypeError(f"{text!r} is not a job id: give the job's number, e.g. 3, or its label "
                                     "(see %jobber_jobs)")


def _line_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines, e.g. 20")
    return int(text)


@magics_class
class JobberMagics(Magics):
    """The ``%jobber_*`` magics, holding the current session."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._session: Session | None = None  # a Certificate, or a remote session
        self._identity: Certificate | None = None  # the local identity, for --local
        self.replaced_formatters: dict[type, Any] = {}  # restored by unload_ipython_extension
        self.replaced_bundles: dict[type, Any] = {}
        self.current_cell: Any = None  # the running cell: its id from the frontend, else its source
        self._cell_runs: dict[Any, tuple[Any, Any]] = {}  # cell -> (its last job, its live view)
        self._pending: dict[Any, Any] = {}  # job -> the live view its display is to be

    # ---- the cell being run, and the one display of each job ----

    def pre_run_cell(self, info: Any) -> None:
        """IPython's pre_run_cell event: remember which cell runs (JupyterLab sends its id)."""
        self.current_cell = getattr(info, "cell_id", None) or getattr(info, "raw_cell", None)

    def post_run_cell(self, _result: Any) -> None:
        """IPython's post_run_cell event: close live views that were never displayed."""
        pending, self._pending = self._pending, {}
        for widget in pending.values():
            widget.close()

    def live_view(self, job: Any, **kwargs: Any) -> Any:
        """A live view of ``job`` (imports ipywidgets on first use); one that waits in a
        queue, for its dependencies or for GPUs shows "pending" and why until it starts, and
        a function job's says what it returned when it ends (``run=``: a %%jobber_py cell's)."""
        from jobber_magics._pyview import FunctionJobWidget

        return FunctionJobWidget(job, **kwargs)

    def job_bundle(self, job: Any) -> Any:
        """The display of a Job in a notebook: its live view (the Job mimebundle formatter).

        The view made by %%jobber_run for the job it returns is used as is (with its
        notices); any other display of a Job makes a view of its own.
        """
        if type(self.shell).__name__ == "TerminalInteractiveShell":
            return None  # a terminal has no widgets: the text form
        widget = self._pending.pop(job, None)
        if widget is None:
            try:
                widget = self.live_view(job)
            except JobberError as err:
                return {"text/plain": f"job {job.id}: status unavailable: {err}", "text/html": job_html(job)}
        return widget._repr_mimebundle_()

    def remember_run(self, cell_key: Any, job: Any, widget: Any) -> None:
        """Record the job a cell started (and its view, to be the display of the Job it returns)."""
        self._cell_runs[cell_key] = (job, widget)
        if widget is not None:
            self._pending[job] = widget

    def last_job_of(self, cell_key: Any) -> Any:
        """The job a cell started last (None if it started none in this kernel)."""
        return self._cell_runs.get(cell_key, (None, None))[0]

    def earlier_run_of(self, cell_key: Any, *, replace: bool) -> tuple[list[str], Any]:
        """What to say about the job this cell started last time, stopping it with --replace.

        Returns:
            The notices, and that job if it still runs (and was not replaced), else None.
        """
        job, widget = self._cell_runs.pop(cell_key, (None, None))
        if job is None:
            return [], None
        if widget is not None:
            widget.close()  # its output was cleared by this run; the job runs on
        try:
            status = job.status()
        except JobberError:
            return [], None
        if status.ended:
            return [], None
        if replace:
            final = job.stop()
            return [f"job {job.id}, started by this cell before, was stopped first (--replace): "
                    f"{final.describe()}"], None
        return [f"job {job.id} is still running from this cell: stop it with the button, or rerun the "
                "cell with --replace to stop it first"], job

    @property
    def session(self) -> Session:
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

    @session.setter
    def session(self, session: Session) -> None:
        self._session = session

    def use_this_host(self) -> Certificate | None:
        """Run jobs on this host again (``%jobber_connect --local``).

        Returns:
            The identity they run as, or None until one is chosen.

        Raises:
            CertificateError: $JOBBER_CERT is not a valid certificate of the pool.
        """
        self._session = self._identity
        return self._default_identity()

    def _default_identity(self) -> Certificate | None:
        if self._identity is None and os.environ.get("JOBBER_CERT"):
            self._identity = Certificate.from_file(os.environ["JOBBER_CERT"])
        return self._identity

    @magic_arguments()
    @argument("path", nargs="?", help="a PEM certificate issued by a CA of your pool (its private key "
              "is not needed for local jobs; ~ and $VARS are expanded). Until one is chosen, "
              "$JOBBER_CERT is the identity")
    @line_magic
    @user_errors
    def jobber_cert(self, line: str) -> IdentityView | None:
        """Choose the identity that owns your jobs; without PATH, show it and the pool.

        The certificate is checked against the pool ($JOBBER_ROOT/pool, else
        ~/.jobber/pool) as a jobber server's TLS handshake would check it.
        """
        args = parse_options(self.jobber_cert, line)
        if args.path is None:
            session = self._session if self._session is not None else self._default_identity()
            return IdentityView(session, jobber.get_client_certificates(), str(jobber.default_root() / "pool"))
        path = expanded_path(args.path)
        try:
            cert = Certificate.from_file(path)
        except CertificateError as err:
            hint = ca_hint(path)
            if hint:
                raise UsageError(hint) from err
            raise
        self._session = self._identity = cert
        print(f"Jobs now run on this host as {cert.subject}.")
        if cert.expiry_warning():  # a certificate about to expire: say so where it is chosen
            print(f"Warning: {cert.expiry_warning()}")
        return None

    @magic_arguments(name="%jobber_run")  # the usage line then reads %%jobber_run
    @job_arguments
    @argument("--name", metavar="VAR", help="also store the Job in the variable VAR")
    @argument("--no-follow", action="store_true", help="start the job without showing its live log: "
              "print one line instead (watch it later with %%jobber_tail -f ID)")
    @argument("--replace", action="store_true", help="if this cell's previous job still runs, stop it first "
              "(without --replace the new job starts beside it, and the view says so)")
    @line_cell_magic
    @user_errors
    def jobber_run(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a shell script in an isolated job, and show its live log.

        The cell body is given to /bin/sh exactly as written: $HOME and {x} reach the shell
        untouched (no IPython variable expansion). The options line is expanded by IPython,
        so Python values reach the script as environment variables: ``--env LR={lr}`` (or
        ``--env LR=$lr``), and the script reads ``$LR``; a body that writes ``{lr}`` for a
        notebook variable ``lr`` gets a one-line hint saying so (the job still starts as
        written). The job runs in this kernel's
        environment and working directory (``--cwd`` to change it), with this kernel's
        Python first on PATH, so ``python`` and ``pip`` are the kernel's; it keeps running
        if the kernel stops.

        With ``--queue Q``, ``--after ID`` or ``--gpus N`` the job may wait before it runs:
        its view then says "pending" and why (``queue `Q`: 2 of 2 running``, ``after job
        12``), and follows the job once it starts.

        Returns the Job, so `_` and Out[n] hold it; its display is the live view (one
        output, always current). With --no-follow it prints one line and returns nothing.
        Running the cell again while its previous job still runs starts a second job and
        says so (with a button to stop the first); ``--replace`` stops the first one first.

        Example::

            %%jobber_run --memory 2G --cpu 1 --name train --env LR={lr}
            python train.py --epochs 10 --lr "$LR"
        """
        if cell is None:
            raise UsageError("%%jobber_run is a cell magic: write %%jobber_run (two %) and its options on the "
                             "first line of a cell, and the shell script below it")
        args = parse_options(self.jobber_run, line)
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(f"--name {args.name!r} is not a Python variable name: use letters, digits and _")
        session = self.session
        limits, options = job_request(args, session.find_job)
        job = session.new_job(cell, limits, **options)
        cell_key = self.current_cell
        notices, previous = self.earlier_run_of(cell_key, replace=args.replace)
        if isinstance(session, Certificate) and job.backend == "local":
            notices += [f"warning: {warning}" for warning in job.limits.beyond_host()]
            if (crowded := oversubscription(session, [job])) is not None:  # with the jobs already running
                notices.append(f"warning: {crowded.describe()}")
        info = ""  # what earlier runs used: information, not a warning
        if args.label is not None and (history := last_runs(session, args.label, before=job.id)) is not None:
            picked = f"; --memory auto picked {job.limits.describe()}" if args.memory == "auto" else ""
            info = history.describe() + picked
        if hint := python_names_hint(cell, self.shell.user_ns, self.shell.user_ns_hidden):
            notices.append(hint)
        job.start()
        if args.name:
            self.shell.user_ns[args.name] = job
        if args.no_follow:
            self._cell_runs[cell_key] = (job, None)
            for notice in [*notices, info] if info else notices:
                print(notice)
            print(f"job {job.id} started: `%jobber_tail -f {job.id}` to watch")
            return None
        widget = self.live_view(job, notice="\n".join(notices), previous=previous, info=info)
        self._cell_runs[cell_key] = (job, widget)
        self._pending[job] = widget  # the display of the Job returned below is this view
        return job

    @magic_arguments()
    @argument("job_id", type=job_ref, metavar="JOB_ID", help="the job's number or label (see %%jobber_jobs)")
    @argument("-n", "--lines", type=_line_count, metavar="LINES",
              help=f"how many of the last lines (default {DEFAULT_TAIL_LINES}; "
                   f"with -f, {DEFAULT_FOLLOW_LINES})")
    @argument("-f", "--follow", action="store_true", help="show a live view that follows the log")
    @line_magic
    @user_errors
    def jobber_tail(self, line: str) -> Any:
        """Print the last lines of a job's log, or follow it live with -f.

        With -f the live view also re-attaches to a job started before a kernel restart.
        """
        args = parse_options(self.jobber_tail, line)
        job = self.session.find_job(args.job_id)
        if args.follow:
            lines = DEFAULT_FOLLOW_LINES if args.lines is None else max(args.lines, 1)
            # A negative offset is resolved against the end of the log when following
            # begins, so nothing written after this look back is skipped.
            return self.live_view(job, lines=lines, offset=-len(jobber.last_lines(job, lines)))
        count = DEFAULT_TAIL_LINES if args.lines is None else args.lines
        if count:
            text = LogLines(max_lines=count)
            text.feed(jobber.last_lines(job, count))
            text.finish()
            if len(text):
                print(text.text())
        return None

    @magic_arguments()
    @argument("job_id", type=job_ref, metavar="JOB_ID", help="the job's number or label (see %%jobber_jobs)")
    @argument("--grace", type=float, default=5.0, metavar="S",
              help="seconds between SIGTERM and SIGKILL (default 5)")
    @line_magic
    @user_errors
    def jobber_stop(self, line: str) -> None:
        """Stop a job and every process it started: SIGTERM, then SIGKILL after the grace period."""
        args = parse_options(self.jobber_stop, line)
        job = self.session.find_job(args.job_id)
        status = job.stop(grace=args.grace)
        print(f"job {job.id}: {status.describe()}")

    @magic_arguments()
    @line_magic
    @user_errors
    def jobber_doctor(self, line: str) -> DoctorReport:
        """Show what confines jobs on this host: the isolation a job gets and why, each limit
        (cpu, memory, pids, io) enforced or not with its fix, the launcher, the jobs
        directory, the identity and the pool (what `jobber doctor` prints).
        """
        parse_options(self.jobber_doctor, line)
        return DoctorReport(jobber.doctor())


# `{n}` alone: not `${n}` (the shell's own), `{{n}}`, `{1..3}`, `{a,b}`, `{}` or `{ n }`.
_PYTHON_NAME_IN_BRACES = re.compile(r"(?<![${])\{([A-Za-z_][A-Za-z0-9_]*)\}(?!})")
# A line of Python inside the script (python -c '...') fills its own braces.
_PYTHON_FORMATS = re.compile(r"""\bf["']|\.format\(""")


def python_names_hint(script: str, namespace: dict[str, Any], hidden: dict[str, Any]) -> str | None:
    """What to say when a %%jobber_run body writes ``{n}`` and ``n`` is a notebook variable.

    The body reaches the shell as written (%%jobber_sweep fills ``{lr}`` in; %%jobber_run
    does not), so the script gets the text ``{n}``: the hint names the fix, an ``--env`` on
    the magic's line, which IPython does expand.

    Args:
        script: the cell body.
        namespace: the user's variables (``shell.user_ns``).
        hidden: IPython's own names in it (``shell.user_ns_hidden``: In, Out, exit, ...),
            ignored as %who ignores them, as are names starting with "_".

    Returns:
        One line, or None when the body names no notebook variable in braces (outside
        lines of Python that format strings themselves: ``f"{i}"``, ``"{i}".format(i=1)``).
    """
    found = [name for line in script.splitlines() if not _PYTHON_FORMATS.search(line)
             for name in _PYTHON_NAME_IN_BRACES.findall(line)]
    names = [name for name in dict.fromkeys(found)
             if name in namespace and not name.startswith("_") and (name not in hidden or hidden[name] is not namespace[name])]
    if not names:
        return None
    # The job inherits the kernel's environment: `{path}` must not become --env PATH=...
    env = {name: name.upper() if name.upper() not in os.environ else f"PY_{name.upper()}" for name in names}
    braces = ", ".join(f"`{{{name}}}`" for name in names)
    flags = " ".join(f"--env {env[name]}={{{name}}}" for name in names)
    variables = ", ".join(f"`${env[name]}`" for name in names)
    if len(names) == 1:
        return (f"{braces} reaches the script as written, not as the value of {names[0]}: add `{flags}` to "
                f"the %%jobber_run line (IPython fills it in there) and write {variables} in the script")
    return (f"{braces} reach the script as written, not as the values of {', '.join(names)}: add `{flags}` to "
            f"the %%jobber_run line (IPython fills them in there) and write {variables} in the script")


def expanded_path(text: str) -> str:
    """A path as typed in a magic: ~ and $VARIABLES expanded (IPython only expands Python names)."""
    return os.path.expanduser(os.path.expandvars(text))
