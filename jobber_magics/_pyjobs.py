"""Notebook cells as function jobs: the function a ``%%jobber_py`` cell becomes, what a
cell run sets in the notebook when its job ends, and the Python form of a sweep.

No IPython here: the magics (`_pymagics`) parse their lines and call these, the views
(`_pyview`) render what they say.

A cell becomes `cell_function(source, outputs)`: a function (pickled by value, so the job
needs nothing of jobber_magics) that runs the source in a fresh namespace seeded with its
one argument, the ``--in`` values, and returns the dict of the ``--out`` names the cell set.
That dict is the job's result, so ``job.result()`` (or ``%jobber_fetch``) gives it back
after a kernel restart. The job records its ``--out`` names in its environment
(`OUTPUTS_VARIABLE`), which tells ``%jobber_fetch`` that its result is a cell's outputs.
"""

from __future__ import annotations

import keyword
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any

import jobber
from jobber import JobberError

__all__ = ["OUTPUTS_VARIABLE", "CellRun", "PySweep", "cell_function", "names_list", "result_summary", "type_name"]

# In a %%jobber_py job's environment: its --out names, comma-separated ("" for none).
OUTPUTS_VARIABLE = "JOBBER_PY_OUT"
# Where a cell's code comes from, in its tracebacks.
CELL_FILENAME = "<jobber_py cell>"
# The label a %%jobber_py job gets when none is given (the function's qualified name).
CELL_LABEL = "jobber_py"


def names_list(option: str, given: Iterable[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (each once, in order), for ``--in``/``--out``.

    Raises:
        ValueError: a word that is not a Python variable name (the message names it).
    """
    names: list[str] = []
    for word in given:
        for name in (part.strip() for part in word.split(",")):
            if not name:
                continue
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{option} {name!r} is not a Python variable name: give names such as "
                                 f"{option} model,scores")
            if name not in names:
                names.append(name)
    return names


def cell_function(source: str, outputs: Sequence[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The function a cell runs as: ``f(inputs) -> {name: value}`` for the ``outputs`` the
    cell set (the others are left out: the caller knows which it asked for).

    It is a closure, so cloudpickle sends it by value: the job runs it without importing
    jobber_magics. The namespace's ``__name__`` is ``"__main__"``, so classes and functions
    the cell defines are sent back by value too, and its tracebacks show the cell's lines.
    """
    wanted = tuple(outputs)

    def run_cell(inputs: dict[str, Any]) -> dict[str, Any]:
        import builtins
        import linecache

        filename = CELL_FILENAME
        # Tracebacks read the source from linecache: give them the cell's lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"__name__": "__main__", "__builtins__": builtins, **inputs}
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the user's own cell, in their job
        return {name: namespace[name] for name in wanted if name in namespace}

    run_cell.__name__ = run_cell.__qualname__ = CELL_LABEL
    return run_cell


def type_name(value: Any) -> str:
    """A value's type for people: ``ndarray``, ``LinearRegression``, ``int``."""
    return type(value).__qualname__


def result_summary(outputs: Sequence[str], values: dict[str, Any], size: int | None) -> tuple[str, list[str]]:
    """What a view says of a cell run's outputs: ``"set: model (LinearRegression), scores
    (list); result 1.2 kB"`` and the ``--out`` names the cell did not set."""
    from jobber_magics._charts import format_size

    missing = [name for name in outputs if name not in values]
    done = [f"{name} ({type_name(values[name])})" for name in outputs if name in values]
    text = ("set: " + ", ".join(done)) if done else "nothing set"
    if size is not None:
        text += f"; result {format_size(size)}"
    return text, missing


def failure_text(err: BaseException) -> str:
    """The traceback of a cell that raised, as its job wrote it; else the error's sentence."""
    remote = getattr(err, "traceback_text", None)  # jobber.RemoteError
    if remote:
        return str(remote).rstrip()
    for note in getattr(err, "__notes__", ()) or ():
        if "Traceback" in note:
            return str(note).rstrip()
    cause = err.__cause__
    if cause is not None and "Traceback" in str(cause):
        return str(cause).rstrip()
    if isinstance(err, JobberError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class CellRun:
    """One run of a ``%%jobber_py`` cell: when its job ends, set its outputs in the notebook.

    The future's done callback (in the executor's thread, when the job has ended) unpickles
    the result here, in the kernel that owns the job, and sets the names; a view waits
    with `wait` and shows `text`. Nothing is set when the cell raised or the job ended
    without a result (killed, out of memory, timed out).

    Args:
        future: the job's future (``executor.submit``'s).
        outputs: the ``--out`` names.
        namespace: where to set them (the notebook's ``user_ns``).
        latest: the job the cell started last, when it ends: a run superseded by a later
            run of the same cell sets nothing (the later one's values must not be
            overwritten by an earlier job that ends after it).
    """

    def __init__(self, future: Future, outputs: Sequence[str], namespace: dict[str, Any],
                 latest: Callable[[], Any] | None = None) -> None:
        self.future = future
        self.job = future.job  # type: ignore[attr-defined]
        self.outputs = list(outputs)
        self.ok: bool | None = None  # None until the job has ended
        self.text = ""  # "set: ..." or why nothing was set
        self.traceback = ""  # what the cell raised, as the job wrote it
        self.missing: list[str] = []
        self._namespace = namespace
        self._latest = latest
        self._done = threading.Event()
        future.add_done_callback(self._finish)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the outputs are set (or it is known why not); False on timeout."""
        return self._done.wait(timeout)

    def _finish(self, future: Future) -> None:
        try:
            try:
                values = future.result()
            except BaseException as err:  # noqa: BLE001 - the cell's own exception, shown in the view
                self.ok, self.text = False, _nothing_set(err)
                # A RemoteError carries the cell's traceback; any other JobError's sentence is all there is.
                if getattr(err, "traceback_text", None) or not isinstance(err, (JobberError, CancelledError)):
                    self.traceback = from_the_cell(failure_text(err))
                return
            if not isinstance(values, dict):  # not from cell_function: set nothing
                self.ok, self.text = False, f"nothing set: the job returned a {type_name(values)}, not a dict of names"
                return
            newer = None if self._latest is None else self._latest()
            if newer is not None and newer != self.job:
                self.ok, self.text = False, (f"nothing set: job {newer.id}, a later run of this cell, "
                                             "sets its names")
                return
            self._namespace.update({name: values[name] for name in self.outputs if name in values})
            self.ok = True
            self.text, self.missing = result_summary(self.outputs, values, _result_size(self.job))
        finally:
            self._done.set()


def from_the_cell(traceback_text: str) -> str:
    """A cell's traceback without the frames of the job's runner above the cell's own."""
    lines = traceback_text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(f'  File "{CELL_FILENAME}"')), None)
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")), None)
    if first is None or start is None or start > first:
        return traceback_text
    return "\n".join([*lines[:start + 1], *lines[first:]])


def _nothing_set(err: BaseException) -> str:
    if isinstance(err, CancelledError):
        return "nothing set: the job was cancelled"
    if getattr(err, "traceback_text", None):  # jobber.RemoteError: raised, cannot be rebuilt here
        return f"nothing set: the cell raised {getattr(err, 'type_name', None) or type(err).__name__}"
    if isinstance(err, JobberError):
        return f"nothing set: {err}"
    return f"nothing set: the cell raised {type(err).__name__}"


def _result_size(job: Any) -> int | None:
    try:
        info = job.result_info()  # result.json: never unpickled
    except JobberError:
        return None
    size = None if info is None else info.get("size")
    return size if isinstance(size, int) else None


class PySweep(jobber.Sweep):
    """A sweep of a Python cell (``%%jobber_sweep --py``): its jobs' results are the cell's
    ``--out`` values, and `table` has a column for each (empty until the job has ended
    and where it failed)."""

    def __init__(self, jobs: Iterable[Any], params: list[dict[str, Any]], template: str,
                 outputs: Sequence[str]) -> None:
        super().__init__(jobs, params, template)
        self.outputs = list(outputs)

    def results(self) -> list[dict[str, Any] | None]:
        """Each job's outputs, in order: None for a job that has not ended or ended without them."""
        found: list[dict[str, Any] | None] = []
        for job in self:
            if not job.status().ended:
                found.append(None)
                continue
            try:
                found.append(job.result())
            except Exception:  # noqa: BLE001 - a cell that raised: its row's state says so
                found.append(None)
        return found

    def table(self) -> Any:
        """The sweep's table (see `jobber.Sweep.table`) with a column per ``--out`` name."""
        table = super().table()
        results = self.results()
        columns = {name: [None if got is None else got.get(name) for got in results] for name in self.outputs}
        if isinstance(table, list):
            for index, row in enumerate(table):
                row.update({name: values[index] for name, values in columns.items()})
            return table
        for name, values in columns.items():
            table[name] = values
        return table
