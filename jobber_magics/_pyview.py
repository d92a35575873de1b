"""The live view of a function job: the view of every job, plus a result line when it ends.

For a ``%%jobber_py`` cell (given its `CellRun`) the line says what was set in the
notebook ("set: model (LinearRegression), scores (list); result 1.2 kB"), which ``--out``
names the cell did not set, or, when the cell raised, its traceback and that nothing was
set. For any other function job (``executor.submit`` in a notebook) it says the result's
type and size, read from the job's result.json: the view never unpickles anything.
A command job's view has no result line.
"""

from __future__ import annotations

import html
import time
from typing import Any

import traitlets

from jobber import JobberError
from jobber_magics._charts import format_size
from jobber_magics._pyjobs import CellRun
from jobber_magics._sweepview import WaitingJobWidget

__all__ = ["FunctionJobWidget", "result_html"]

_DELIVERY_WAIT_S = 120.0  # a job that ended has its outcome delivered within a watcher's pass
_TRACEBACK_MAX = 64 * 1024  # characters of a traceback shown (as the job's runner keeps)


def _cut(text: str) -> str:
    """At most ``_TRACEBACK_MAX`` characters: the head and the tail (result.json written by an
    older runner may hold a whole 50 MB traceback; the browser gets no more than this)."""
    if len(text) <= _TRACEBACK_MAX:
        return text
    keep = _TRACEBACK_MAX // 2
    return f"{text[:keep]}\n... {len(text) - 2 * keep} characters cut ...\n{text[-keep:]}"


def result_html(run: CellRun) -> str:
    """A cell run's result line: what was set, what was not, or the traceback."""
    parts = [f'<span class="jobber-result-set">{html.escape(run.text)}</span>']
    if run.missing:
        names = ", ".join(run.missing)
        parts.append(f'<div class="jobber-result-missing">not set by the cell: {html.escape(names)} '
                     "(--out names the cell never assigned)</div>")
    if run.traceback:
        parts.append(f"<pre>{html.escape(_cut(run.traceback))}</pre>")
    return "".join(parts)


def info_html(info: dict[str, Any]) -> str:
    """The result line of a function job, from its result.json (never unpickled)."""
    size = info.get("size")
    if info.get("ok"):
        kind = str(info.get("type") or "?").rsplit(".", 1)[-1]
        return html.escape(f"result: {kind}" + (f", {format_size(size)}" if isinstance(size, int) else ""))
    text = info.get("traceback") or info.get("error") or f"raised {info.get('type')}"
    return f"<pre>{html.escape(_cut(str(text)).rstrip())}</pre>"


class FunctionJobWidget(WaitingJobWidget):
    """`WaitingJobWidget` with a result line once the job has ended.

    Args:
        job: the job.
        run: the ``%%jobber_py`` cell run the job is (None: any function job).
        **kwargs: as for `jobber_magics.JobWidget`.
    """

    result_html = traitlets.Unicode("").tag(sync=True)

    def __init__(self, job: Any, *, run: CellRun | None = None, **kwargs: Any) -> None:
        self.run = run
        super().__init__(job, **kwargs)

    def _update(self) -> None:
        super()._update()
        if self._closed.is_set() or self._status is None or not self._status.ended:
            return
        try:
            self._show_result()
        except JobberError as err:
            self.problem = f"could not read the result: {err}"
        except Exception as err:  # noqa: BLE001 - a thread must not print; show it instead
            self.problem = f"could not read the result: {type(err).__name__}: {err}"

    def _show_result(self) -> None:
        if self.run is not None:
            # The executor's thread reads the result when it sees the end: wait for it, while
            # the job is there (a removed job raises JobNotFound: _update shows it, not a wait
            # for ever), and for a while only (a result not delivered is fetched by hand).
            deadline = time.monotonic() + _DELIVERY_WAIT_S
            while not self.run.wait(self._refresh):
                if self._closed.is_set():
                    return
                self.job.status()
                if time.monotonic() > deadline:
                    self.problem = (f"the result of job {self.job.id} has not come back to this kernel: "
                                    f"%jobber_fetch {self.job.id} reads it")
                    return
            self.result_html = result_html(self.run)
            return
        info = self.job.result_info()  # result.json: never unpickled
        if info is not None:
            self.result_html = info_html(info)

