"""The magics for Python jobs: ``%%jobber_py`` (a cell as an isolated job) and
``%jobber_fetch`` (a job's outputs back into the notebook, e.g. after a kernel restart).

They act on the session of the main magics (`JobberMagics`) and make the job through
its ``executor``, the one way every session runs a Python function as a job; the cell
becomes a function in `_pyjobs`.
"""

from __future__ import annotations

import argparse
import itertools
import keyword
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jobber import JobberError
from jobber_magics._magics import JobberMagics, job_ref, parse_options, user_errors
from jobber_magics._options import job_arguments, job_request
from jobber_magics._pyjobs import CELL_FILENAME, OUTPUTS_VARIABLE, CellRun, PySweep, cell_function, names_list

__all__ = ["JobberPyMagics", "cell_inputs", "in_out_arguments", "python_sweep", "python_job_options",
           "variable_names"]


def variable_names(option: str, given: Sequence[str]) -> list[str]:
    """The names of ``--in``/``--out`` (comma-separated, repeatable), or a UsageError."""
    try:
        return names_list(option, given)
    except ValueError as err:
        raise UsageError(str(err)) from err


def cell_inputs(names: Sequence[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The ``--in`` values from the notebook's namespace.

    Raises:
        UsageError: a name the notebook has no variable of (before any job is made).
    """
    missing = [name for name in names if name not in namespace]
    if missing:
        which = ", ".join(repr(name) for name in missing)
        raise UsageError(f"--in: no variable {which} in the notebook: run the cell that defines "
                         f"{'it' if len(missing) == 1 else 'them'} first, or drop {'it' if len(missing) == 1 else 'them'} "
                         "from --in")
    return {name: namespace[name] for name in names}


def python_job_options(args: argparse.Namespace, session: Any, outputs: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """The limits and ``executor`` options of a Python cell's job(s): the run magic's
    options, and the ``--out`` names recorded in the job's environment."""
    limits, options = job_request(args, session.find_job)
    options["env"] = {**(options.get("env") or {}), OUTPUTS_VARIABLE: ",".join(outputs)}
    return limits, options


def in_out_arguments(func: Any) -> Any:
    """``--in NAMES`` and ``--out NAMES``, for ``%%jobber_py`` and ``%%jobber_sweep --py``."""
    func = argument("--out", action="append", default=[], metavar="NAMES",
                    help="variables the cell sets, comma-separated: set in the notebook when the job "
                    "ends without an error")(func)
    return argument("--in", dest="inputs", action="append", default=[], metavar="NAMES",
                    help="notebook variables the cell reads, comma-separated: sent to the job (functions "
                    "and classes defined in the notebook by value)")(func)


def python_sweep(session: Any, cell: str, params: dict[str, list[Any]], args: argparse.Namespace,
                 namespace: dict[str, Any]) -> PySweep:
    """``%%jobber_sweep --py``: one job per combination of ``params``, each running the cell
    with the combination's values (and the ``--in`` variables) bound as Python variables.

    The jobs are labelled ``LABEL-1``, ``LABEL-2``, ... (default ``sweep-N``) and get
    ``SWEEP_NAME=value`` in their environment, as a command sweep's do; the sweep is made
    whole or not at all.

    Raises:
        UsageError: a parameter also named in ``--in``, a missing ``--in`` variable, or a
            cell that is not Python.
    """
    inputs = cell_inputs(variable_names("--in", args.inputs), namespace)
    outputs = variable_names("--out", args.out)
    if both := sorted(set(params) & set(inputs)):
        raise UsageError(f"{', '.join(both)}: both a parameter and an --in variable; keep one")
    _check_python(cell)
    limits, options = python_job_options(args, session, outputs)
    base = options.pop("label", None) or "sweep"
    combos = [dict(zip(params, values)) for values in itertools.product(*params.values())]
    function = cell_function(cell, outputs)
    jobs: list[Any] = []
    try:
        for n, chosen in enumerate(combos, 1):
            env = {**options["env"], **{f"SWEEP_{name.upper()}": str(value) for name, value in chosen.items()}}
            executor = session.executor(limits, **{**options, "env": env, "label": f"{base}-{n}"})
            jobs.append(executor.submit(function, {**inputs, **chosen}).job)
    except BaseException:
        _discard(jobs)
        raise
    return PySweep(jobs, combos, cell, outputs)


def _discard(jobs: list[Any]) -> None:
    """Stop and remove the jobs of a sweep that could not be made whole."""
    for job in jobs:
        try:
            job.stop(0)
            job.remove()
        except JobberError:
            pass


def _check_python(cell: str) -> None:
    if not cell.strip():
        raise UsageError("the cell is empty: write the Python to run below the magic's line")
    try:
        compile(cell, CELL_FILENAME, "exec")
    except SyntaxError as err:
        raise UsageError(f"the cell is not valid Python (line {err.lineno}: {err.msg}): nothing was started") from err


@magics_class
class JobberPyMagics(Magics):
    """Python cells as jobs, through the main magics' session."""

    def __init__(self, shell: Any, main: JobberMagics) -> None:
        super().__init__(shell)
        self._main = main

    @magic_arguments(name="%jobber_py")  # the usage line then reads %%jobber_py
    @in_out_arguments
    @job_arguments
    @argument("--name", metavar="VAR", help="also store the Job in the variable VAR")
    @argument("--no-follow", action="store_true", help="start the job without showing its live view: "
              "print one line instead (the --out names are still set when it ends)")
    @argument("--replace", action="store_true", help="if this cell's previous job still runs, stop it first")
    @cell_magic
    @user_errors
    def jobber_py(self, line: str, cell: str) -> Any:
        """Run the cell's Python in an isolated job (limits, queues, retries as %%jobber_run),
        and set the ``--out`` names in the notebook when it ends.

        The cell runs in a fresh namespace in its own process (the kernel's interpreter on
        this host, with the kernel's ``sys.path``), seeded with the ``--in`` variables of
        the notebook (sent with cloudpickle: functions and classes defined in the notebook
        go by value). Its prints appear live in the view. When it ends without an error the
        ``--out`` names it set are set in the notebook, and the view says so ("set: model
        (LinearRegression), scores (list)") and names any it did not set; when it raises,
        the view shows the traceback and nothing is set. The names are set when the job
        ends, whatever cell runs then: read them once the view says "set".

        Returns the Job (its display is the live view); with --no-follow, nothing. The
        job's result is the dict of the ``--out`` values: after a kernel restart,
        ``%jobber_fetch ID`` sets them again.

        Example::

            %%jobber_py --in X,y,make_model --out model,score --memory 2G
            model = make_model().fit(X, y)
            score = model.score(X, y)
        """
        args = parse_options(self.jobber_py, line)
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(f"--name {args.name!r} is not a Python variable name: use letters, digits and _")
        inputs = cell_inputs(variable_names("--in", args.inputs), self.shell.user_ns)
        outputs = variable_names("--out", args.out)
        _check_python(cell)
        session = self._main.session
        limits, options = python_job_options(args, session, outputs)
        cell_key = self._main.current_cell
        notices, previous = self._main.earlier_run_of(cell_key, replace=args.replace)
        future = session.executor(limits, **options).submit(cell_function(cell, outputs), inputs)
        run = CellRun(future, outputs, self.shell.user_ns, latest=lambda: self._main.last_job_of(cell_key))
        job = run.job
        if args.name:
            self.shell.user_ns[args.name] = job
        if args.no_follow:
            self._main.remember_run(cell_key, job, None)
            for notice in notices:
                print(notice)
            print(f"job {job.id} started: `%jobber_tail -f {job.id}` to watch; "
                  + (f"{', '.join(outputs)} will be set when it ends" if outputs else "it sets no names (no --out)"))
            return None
        widget = self._main.live_view(job, notice="\n".join(notices), previous=previous, run=run)
        self._main.remember_run(cell_key, job, widget)
        return job

    @magic_arguments()
    @argument("job_id", type=job_ref, metavar="JOB_ID", help="the job's number or label (see %%jobber_jobs)")
    @argument("--out", action="append", default=[], metavar="NAMES",
              help="set only these of its outputs, comma-separated (default: all of a %%%%jobber_py job's)")
    @line_magic
    @user_errors
    def jobber_fetch(self, line: str) -> Any:
        """Bring an ended job's result back: a ``%%jobber_py`` job's outputs are set in the
        notebook again (after a kernel restart, say), any other function job's return value
        is the magic's value (``model = %jobber_fetch 12``).

        The result is read from the job's directory (or downloaded from its jobber server)
        and unpickled here, in your kernel,
        as many times as asked, until the job is removed. A job still running is refused
        (nothing waits in the kernel); a job that raised re-raises its exception.
        """
        args = parse_options(self.jobber_fetch, line)
        wanted = variable_names("--out", args.out)
        job = self._main.session.find_job(args.job_id)
        status = job.status()
        if not status.ended:
            raise UsageError(f"job {job.id} has not ended ({status.describe()}): fetch it once it has "
                             f"(job.result() waits for it)")
        value = job.result()
        recorded = job.env.get(OUTPUTS_VARIABLE) if isinstance(job.env, dict) else None
        if recorded is None and not wanted:
            return value
        if not isinstance(value, dict):
            raise UsageError(f"job {job.id} returned a {type(value).__qualname__}, not a dict of names: "
                             f"drop --out and take its value, x = %jobber_fetch {job.id}")
        names = wanted or [name for name in value if isinstance(name, str) and name.isidentifier()]
        absent = [name for name in names if name not in value]
        if absent:
            raise UsageError(f"job {job.id} did not return {', '.join(absent)}: it has "
                             f"{', '.join(map(str, value)) or 'no outputs'}")
        self.shell.user_ns.update({name: value[name] for name in names})
        print(f"job {job.id}: set " + (", ".join(f"{name} ({type(value[name]).__qualname__})" for name in names)
                                       if names else "nothing (it has no outputs)"))
        return None
