"""The magics for queues and sweeps: ``%%jobber_sweep`` and ``%jobber_queue``.

They act on the session of the main magics (`JobberMagics`), which they are given, so a
``%jobber_connect`` applies to them too.
"""

from __future__ import annotations

import html
import keyword
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

from jobber import JobFlags
from jobber_magics._magics import JobberMagics, known_options, parse_options, user_errors
from jobber_magics._options import job_arguments, job_request
from jobber_magics._pymagics import in_out_arguments, python_sweep

__all__ = ["JobberSweepMagics", "QueueTable", "sweep_params"]

# Keywords that cert.sweep takes as the jobs' options, not as parameters.
_OPTION_NAMES = frozenset({"limits", "start", *JobFlags.KEYWORDS})


def _typed(text: str) -> int | float | str:
    """An int or a float when it reads back exactly as written ("32", "0.1"), else the text."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if str(value) == text:
            return value
    return text


def sweep_params(words: list[str]) -> dict[str, list[Any]]:
    """``["lr=0.1,0.01", "opt=adam,sgd"]`` -> ``{"lr": [0.1, 0.01], "opt": ["adam", "sgd"]}``.

    Raises:
        UsageError: a word that is not NAME=V1,V2, a name given twice, or a name that is one
            of the jobs' options.
    """
    params: dict[str, list[Any]] = {}
    for word in words:
        name, sep, values = word.partition("=")
        if not sep or not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"{word!r}: write each parameter as NAME=V1,V2,... (e.g. lr=0.1,0.01), "
                             "with {NAME} where it goes in the cell")
        if name in params:
            raise UsageError(f"parameter {name} is given twice: list all its values once, {name}=V1,V2")
        if name in _OPTION_NAMES:
            raise UsageError(f"{name} names an option of the jobs, not a parameter: call it something else "
                             f"(e.g. {name}_)")
        items = values.split(",")
        if any(not item for item in items):
            raise UsageError(f"{word!r}: a value is empty; write {name}=V1,V2 without spaces or empty values")
        params[name] = [_typed(item) for item in items]
    if not params:
        raise UsageError("%%jobber_sweep needs parameters on its first line, e.g. %%jobber_sweep lr=0.1,0.01 "
                         "bs=32,64, and {lr} {bs} where they go in the cell")
    return params


class QueueTable(dict):
    """The queues as a table (what ``%jobber_queue`` returns): name -> its settings and
    how many of its jobs run and wait. A plain ``dict`` otherwise."""

    _COLUMNS = ("parallel", "memory", "cpus", "gpus", "running", "waiting")

    def _cells(self, info: dict[str, Any]) -> list[str]:
        from jobber_magics._charts import format_size

        cells = []
        for column in self._COLUMNS:
            value = info.get(column)
            if value is None:
                cells.append("-")
            elif column == "memory" and isinstance(value, int):
                cells.append(format_size(value))
            else:
                cells.append(str(value))
        return cells

    def _repr_html_(self) -> str:
        if not self:
            return "<p>No queues yet: <code>%jobber_queue NAME --parallel 2</code> makes one.</p>"
        cell = "padding:2px 8px;text-align:left;white-space:nowrap"
        head = "".join(f'<th style="{cell}">{h}</th>' for h in ("queue", *self._COLUMNS))
        body = "".join(f'<tr><td style="{cell}"><code>{html.escape(name)}</code></td>'
                       + "".join(f'<td style="{cell}">{html.escape(c)}</td>' for c in self._cells(info)) + "</tr>"
                       for name, info in self.items())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        if not self:
            return "No queues yet: %jobber_queue NAME --parallel 2 makes one."
        rows = [("QUEUE", *(c.upper() for c in self._COLUMNS))] + [(name, *self._cells(info))
                                                                    for name, info in self.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _pretty_sweep(sweep: Any, printer: Any, _cycle: bool) -> None:
    """The text form of a sweep: how many jobs, in which states (IPython's pretty printer)."""
    from jobber_magics._sweepview import sweep_rows_text

    printer.text(sweep_rows_text([{"state": job.status().state} for job in sweep]))


@magics_class
class JobberSweepMagics(Magics):
    """Sweeps and queues, through the main magics' session."""

    def __init__(self, shell: Any, main: JobberMagics) -> None:
        super().__init__(shell)
        self._main = main
        self._views: list[tuple[Any, Any]] = []  # (sweep, its view) made by this cell, not yet displayed
        self.replaced_bundles: dict[type, Any] = {}  # restored by unload_ipython_extension
        self.replaced_texts: dict[type, Any] = {}

    def post_run_cell(self, _result: Any) -> None:
        """IPython's post_run_cell event: close grids that were never displayed."""
        views, self._views = self._views, []
        for _sweep, view in views:
            view.close()

    def sweep_bundle(self, sweep: Any) -> Any:
        """The display of a sweep in a notebook: its grid (the one %%jobber_sweep made, else a new one)."""
        if type(self.shell).__name__ == "TerminalInteractiveShell":
            return None
        for i, (made, view) in enumerate(self._views):
            if made is sweep:
                del self._views[i]
                return view._repr_mimebundle_()
        return self.grid(sweep)._repr_mimebundle_()

    def grid(self, sweep: Any) -> Any:
        """A live grid of ``sweep`` (imports ipywidgets on first use)."""
        from jobber_magics._sweepview import SweepView

        return SweepView(sweep, live_view=self._main.live_view)

    def _display_as_grid(self, sweep: Any) -> None:
        # The sweep's class comes from the session (a private core class): its display is
        # registered when the first one is seen.
        kind = type(sweep)
        if kind is list or kind in self.replaced_bundles:
            return
        bundles = self.shell.display_formatter.mimebundle_formatter
        self.replaced_bundles[kind] = bundles.for_type(kind, self.sweep_bundle)
        # Else the text form would be the list's, which wins over the bundle's.
        texts = self.shell.display_formatter.formatters["text/plain"]
        self.replaced_texts[kind] = texts.for_type(kind, _pretty_sweep)

    @magic_arguments(name="%jobber_sweep")
    @argument("params", nargs="*", metavar="NAME=V1,V2", help="a parameter and its values, comma-separated "
              "(repeatable): one job per combination; {NAME} in the cell is replaced by the value, quoted for "
              "the shell, and the job gets SWEEP_NAME=value")
    @argument("--py", action="store_true", help="the cell is Python, run once per combination with the "
              "values bound as variables (not a shell template); --in/--out as for %%%%jobber_py")
    @in_out_arguments
    @job_arguments
    @argument("--name", metavar="VAR", help="also store the sweep in the variable VAR")
    @cell_magic
    @user_errors
    def jobber_sweep(self, line: str, cell: str) -> Any:
        """Run the cell once per combination of parameter values, and show them in one live grid.

        The cell is the command template: ``{lr}`` is replaced by each value of ``lr=...``
        (quoted for the shell); nothing else of it is touched ({x} of other names, $HOME and
        ${HOME} reach the shell as written). The options apply to every job, as for
        %%jobber_run: limits, --queue (to run a few at a time), --after, --gpus, --label
        (the jobs are labelled LABEL-1, LABEL-2, ...; default sweep-N), --env, ...

        A value is kept as an int or a float in the sweep's ``params`` and ``table()``
        when it reads back exactly as written (``32``, ``0.1``), else as text (``1e-3``,
        ``adam``); the command always gets the text as written.

        Returns the sweep: a list of the Jobs with ``.params``, ``.table()`` (a DataFrame
        with pandas, else a list of dicts), ``.stop()`` and ``.wait()``. Its display is a
        grid with a row per job (parameters, state, elapsed, peak memory, last line), a
        Stop all button, and a row's button opens that job's live view.

        With ``--py`` the cell is Python, as in ``%%jobber_py``: each job runs it with the
        parameters bound as variables (``lr = 0.1``), beside the ``--in`` variables, and
        returns its ``--out`` names; ``table()`` then has a column for each (its value in
        each job, once that job has ended). ``--py`` is a form of the sweep rather than a
        magic of its own because all else is the sweep's: the parameters, the options, the
        labels and the grid.

        Example::

            %%jobber_sweep --queue train --memory 2G lr=0.1,0.01 bs=32,64
            python train.py --lr {lr} --batch-size {bs}

            %%jobber_sweep --py --in X,y --out score --memory 2G alpha=0.1,1,10
            score = Ridge(alpha=alpha).fit(X, y).score(X, y)
        """
        parser = self.jobber_sweep.parser
        args = known_options(parser, parser.parse_known_intermixed_args(arg_split(line, posix=True)))
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(f"--name {args.name!r} is not a Python variable name: use letters, digits and _")
        params = sweep_params(args.params)
        session = self._main.session
        if args.py:
            sweep = python_sweep(session, cell, params, args, self.shell.user_ns)
        elif args.inputs or args.out:
            raise UsageError("--in and --out are for a Python sweep: add --py (the cell is then Python)")
        else:
            limits, options = job_request(args, session.find_job)
            sweep = session.sweep(cell, limits=limits, **options, **params)
        if args.name:
            self.shell.user_ns[args.name] = sweep
        if type(self.shell).__name__ != "TerminalInteractiveShell":
            self._display_as_grid(sweep)
            self._views.append((sweep, self.grid(sweep)))
        return sweep

    @magic_arguments()
    @argument("queue", nargs="?", metavar="NAME", help="the queue to show or set (default: show all)")
    @argument("--parallel", type=int, metavar="N", help="at most N of its jobs run at once (0: no limit)")
    @argument("--memory", metavar="M", help="admit while its running jobs' memory limits sum to at most M, "
              "e.g. 8G (0: no limit)")
    @argument("--cpus", type=float, metavar="C", help="the same, for their CPU limits (0: no limit)")
    @argument("--gpus", type=int, metavar="G", help="the same, for their GPUs (0: no limit)")
    @line_magic
    @user_errors
    def jobber_queue(self, line: str) -> QueueTable:
        """Show the queues (their limits, and how many of their jobs run and wait), or set one.

        ``%jobber_queue train --parallel 2`` lets at most two jobs of ``--queue train`` run
        at once; the others wait, pending, in the order they were started. Limits persist
        and apply at once to jobs already waiting. Returns the queues as a dict.
        """
        args = parse_options(self.jobber_queue, line)
        session = self._main.session
        limits = {name: getattr(args, name) for name in ("parallel", "memory", "cpus", "gpus")
                  if getattr(args, name) is not None}
        if limits:
            if args.queue is None:
                raise UsageError("say which queue to set: %jobber_queue NAME --parallel 2")
            memory = limits.get("memory")
            if memory is not None and memory.strip() == "0":
                limits["memory"] = 0
            session.set_queue(args.queue, **limits)
        queues = session.queues()
        if args.queue is not None:
            queues = {args.queue: queues.get(args.queue, {"running": 0, "waiting": 0})}
        return QueueTable(queues)
