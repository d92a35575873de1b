"""The live grid of a sweep, and a job's live view that copes with a job still waiting.

A sweep shows as one output: `SweepView`, a box holding the grid (`SweepGrid`, an
anywidget whose browser half is ``_sweepview.js``) and, once a row is opened, that job's
full live view (the `JobWidget` of every other job) below it. The grid has a row per job:
its parameters, its state (coloured as the live view colours it, with the note of a job
that waits), elapsed time, peak memory and the last line of its log; a "Stop all" button.

One updater thread per grid reads each job's status (and, for a job that ran, its last
line) a few times a second and sets ``rows``; a row is final once its job has ended and
its last line was read after the end, and the thread ends when every row is final (or
the view closes). Until then it also sets ``as_of`` every second: a page that stops
hearing from the kernel says the grid is no longer live instead of showing a "running"
frozen in time. A page without the widget's state (GitHub, nbconvert) gets a static
table "as of" when it was made. The thread never prints.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets
import traitlets

from jobber import JobberError, JobStatus, last_lines
from jobber_magics._charts import format_size
from jobber_magics._display import STATE_COLOURS, html_text, now_text
from jobber_magics._widget import JobWidget

__all__ = ["SweepGrid", "SweepView", "WaitingJobWidget", "sweep_rows_text"]

_HERE = Path(__file__).parent
_LAST_LINE_CHARS = 200


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _waiting_to_start(status: JobStatus) -> bool:
    """Pending and never started: waiting for its queue, its dependencies or a GPU."""
    return status.state == "pending" and status.started_at is None


class WaitingJobWidget(JobWidget):
    """The live view of a job that may still wait for its queue, dependencies or GPUs.

    While the job waits to start, the view shows "pending" and why (the status note), and
    it follows the log once the job runs. ``job.follow()`` of a job that waits to start
    neither beats its heartbeat nor follows the run once admitted (it returns when the
    job starts), so this view waits first and follows after.
    """

    def _update(self) -> None:
        while not self._closed.is_set():
            try:
                status = self.job.status()
            except JobberError as err:
                self._stopped(err)
                return
            if not _waiting_to_start(status):
                break
            self._draw(status)
            self._closed.wait(self._refresh)
        else:
            return
        super()._update()


def _params_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


class SweepGrid(anywidget.AnyWidget):
    """A row per job of a sweep, live: parameters, state, elapsed, peak memory, last line.

    Args:
        sweep: the sweep's jobs (a list of Job with ``.params``).
        refresh: seconds between two reads of the jobs' states.
    """

    _esm = (_HERE / "_sweepview.js").read_text(encoding="utf-8")
    _css = (_HERE / "_sweepview.css").read_text(encoding="utf-8")

    view_key = traitlets.Unicode("").tag(sync=True)
    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    ended = traitlets.Bool(False).tag(sync=True)
    stopping = traitlets.Bool(False).tag(sync=True)
    opened = traitlets.Int(0).tag(sync=True)
    problem = traitlets.Unicode("").tag(sync=True)
    as_of = traitlets.Unicode("").tag(sync=True)

    def __init__(self, sweep: Sequence[Any], *, refresh: float = 0.5) -> None:
        self.sweep = sweep
        params = list(getattr(sweep, "params", None) or [{} for _ in sweep])
        self._params = params
        columns = list(dict.fromkeys(name for chosen in params for name in chosen))
        self._lock = threading.Lock()
        self._rows: dict[int, dict[str, Any]] = {}
        self._final: set[int] = set()
        self.columns_ = columns
        self._read()  # before the comm opens: its first state has every row
        super().__init__(view_key=uuid.uuid4().hex, columns=columns, rows=self.statuses(),
                         ended=self._all_final(), as_of=_utc_now())
        self._refresh = refresh
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._update, name="jobber-sweep-grid", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SweepGrid(jobs={[job.id for job in self.sweep]})"

    @property
    def updating(self) -> bool:
        """Whether the updater thread still runs."""
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the grid has shown every job's end; return False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Close the grid; its thread ends within a refresh (the jobs run on)."""
        self._closed.set()
        super().close()

    def statuses(self) -> list[dict[str, Any]]:
        """The rows as last read, in the sweep's order."""
        with self._lock:
            return [dict(self._rows[job.id]) for job in self.sweep if job.id in self._rows]

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop every job of the sweep: the waiting ones first, so that none starts meanwhile.

        Raises:
            JobberError: a job could not be stopped.
        """
        self.stopping = True
        try:
            for job in self.sweep:
                if _waiting_to_start(job.status()):
                    job.stop(grace)
            stop = getattr(self.sweep, "stop", None)
            if stop is not None:
                stop(grace)
            else:
                for job in self.sweep:
                    status = job.status()
                    if not status.ended and status.state != "created":
                        job.stop(grace)
        except JobberError:
            self.stopping = False
            raise
        if not self.updating:  # closed, or ended before: nobody else will draw
            self._read_all()

    def _row(self, job: Any, chosen: dict[str, Any]) -> dict[str, Any]:
        status = job.status()
        last = ""
        if status.started_at is not None or status.ended:
            try:
                last = last_lines(job, 1).decode(errors="replace").strip()[:_LAST_LINE_CHARS]
            except JobberError:
                last = ""
        peak = status.peak_memory_bytes
        return {"job": job.id, "params": [_params_text(chosen.get(name, "")) for name in self.columns_],
                "state": status.state, "result": status.describe(), "note": status.note or "",
                "ended": status.ended, "elapsed": status.elapsed_text,
                "peak": format_size(peak) if peak else "-", "last": last}

    def _all_final(self) -> bool:
        return len(self._final) == len(self.sweep)

    def _read(self) -> None:
        """Read every row that is not final."""
        for job, chosen in zip(self.sweep, self._params):
            if job.id in self._final:
                continue
            row = self._row(job, chosen)
            with self._lock:
                self._rows[job.id] = row
                if row["ended"]:
                    self._final.add(job.id)  # read after the end: its last line is the last

    def _read_all(self) -> None:
        """Read every row that is not final; set the state the browser sees."""
        self._read()
        with self.hold_sync():
            self.rows = self.statuses()
            self.ended = self._all_final()
            if self.ended:
                self.stopping = False
            self.as_of = _utc_now()

    def _update(self) -> None:
        try:
            while not self.ended and not self._closed.wait(self._refresh):
                self._read_all()
        except JobberError as err:
            self.problem = f"the grid stopped following: {err}"
        except Exception as err:  # noqa: BLE001 - a thread must not print; show it instead
            self.problem = f"the grid failed: {type(err).__name__}: {err}"


def sweep_rows_text(rows: list[dict[str, Any]]) -> str:
    """The grid as text: one line per job."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    return f"sweep of {len(rows)} job{'s' if len(rows) != 1 else ''}: {summary}"


def sweep_rows_html(columns: list[str], rows: list[dict[str, Any]], *, ended: bool) -> str:
    """The grid as a static table (for a page without the widget's state)."""
    cell = "padding:2px 8px;text-align:left;vertical-align:top;white-space:nowrap"
    head = "".join(f'<th style="{cell}">{html_text(h)}</th>' for h in
                   ("job", *columns, "state", "elapsed", "peak memory", "last line"))
    body = "".join(
        "<tr>" + f'<td style="{cell}">{row["job"]}</td>'
        + "".join(f'<td style="{cell}">{html_text(value)}</td>' for value in row["params"])
        + f'<td style="{cell};color:{STATE_COLOURS.get(row["state"], "inherit")};font-weight:bold">'
        + html_text(row["result"]) + (f' <span style="font-weight:normal">({html_text(row["note"])})</span>' if row["note"] and
                               not row["ended"] else "") + "</td>"
        + f'<td style="{cell}">{html_text(row["elapsed"])}</td><td style="{cell}">{html_text(row["peak"])}</td>'
        + f'<td style="{cell};white-space:pre-wrap"><code>{html_text(row["last"])}</code></td></tr>'
        for row in rows)
    note = "" if ended else (f'<div style="color:var(--jp-warn-color1,#b58900)">as of {html_text(now_text())}: this table '
                             "does not change; display the sweep again to watch it live</div>")
    return f'<div class="jobber-sweep-static">{note}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


class SweepView(ipywidgets.VBox):
    """A sweep's one output: its grid, and below it the live view of the row opened.

    Args:
        sweep: the sweep's jobs.
        live_view: makes a job's live view (default: `WaitingJobWidget`).
        refresh: seconds between two reads of the jobs' states.
    """

    def __init__(self, sweep: Sequence[Any], *, live_view: Callable[[Any], Any] | None = None,
                 refresh: float = 0.5) -> None:
        self.sweep = sweep
        self.grid = SweepGrid(sweep, refresh=refresh)
        self._live_view = live_view or WaitingJobWidget
        self._job_view: Any = None
        super().__init__(children=[self.grid])
        self.grid.on_msg(self._on_message)

    def __repr__(self) -> str:
        return f"SweepView(jobs={[job.id for job in self.sweep]})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # The widget for JupyterLab; a static table, as of now, for any other reader.
        data = dict(super()._repr_mimebundle_(**kwargs) or {})
        rows = self.grid.statuses()
        data["text/plain"] = sweep_rows_text(rows)
        data["text/html"] = sweep_rows_html(self.grid.columns, rows, ended=self.grid.ended)
        return data

    @property
    def job_view(self) -> Any:
        """The live view of the opened row, or None."""
        return self._job_view

    def show_job(self, job_id: int | None) -> Any:
        """Show the live view of one job of the sweep below the grid (None: close it).

        Returns:
            The live view, or None.

        Raises:
            JobberError: its status cannot be read.
        """
        if self._job_view is not None:
            self._job_view.close()
            self._job_view = None
        job = next((job for job in self.sweep if job.id == job_id), None)
        if job is None:
            self.children, self.grid.opened = [self.grid], 0
            return None
        self._job_view = self._live_view(job)
        self.children, self.grid.opened = [self.grid, self._job_view], job.id
        return self._job_view

    def close(self) -> None:
        """Close the grid and the opened live view (the jobs run on)."""
        if self._job_view is not None:
            self._job_view.close()
        self.grid.close()
        super().close()

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # From the browser, in the kernel's main thread: errors go to the grid, not a console.
        event = content.get("event") if isinstance(content, dict) else None
        try:
            if event == "stop-all":
                self.grid.stop_all()
            elif event == "open":
                job_id = content.get("job")
                self.show_job(None if job_id == self.grid.opened else job_id)
        except JobberError as err:
            self.grid.problem = f"{'could not stop the sweep' if event == 'stop-all' else 'could not open the job'}: {err}"
