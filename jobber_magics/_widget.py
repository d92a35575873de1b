"""The live log widget: a job's last lines, its status, memory and CPU charts, a Stop button.

One updater thread per widget consumes ``job.follow(heartbeat=...)`` (local or remote: an
empty chunk arrives while the job is silent), keeps the last lines in a bounded ``LogLines`` ring and
sets widget values at most ``1 / refresh`` times a second. It never prints: output from a
thread lands in whichever cell runs at the time (ipykernel >= 7.1 routes it by thread), and
widget updates are comm messages, which ipykernel >= 7.1 sends safely from threads. It
never uses ``Output.append_stdout`` either, which resends the whole history every time.
The thread ends when the job has ended and its log is drained, or when the widget closes.

Requires ipywidgets 8 and ipykernel >= 7.1 (7.0 broke widget updates from threads).
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets

from jobber import JobberError, JobStatus
from jobber_magics._charts import ResourceHistory, resource_chart_html
from jobber_magics._display import log_html, status_html
from jobber_magics._loglines import LogLines

__all__ = ["JobWidget"]

# A chunk smaller than this means the reader has caught up with the writer: then the thread
# waits for the next frame and lets output pile up, instead of waking for every line.
_COALESCE_BELOW = 64 * 1024
# The most characters of log sent in one update (a few hundred KiB at worst per message,
# whatever the job prints: lines are also cut at LogLines.max_line_chars).
_MAX_LOG_CHARS = 200_000


class JobWidget(ipywidgets.VBox):
    """A live view of a job: last lines, status line, resource charts and a Stop button.

    Args:
        job: the job to follow (local or remote).
        lines: how many of the last lines to show and keep.
        offset: where in the log to start; negative counts back from the end.
        refresh: the shortest time between two redraws, in seconds.
    """

    def __init__(self, job: Any, *, lines: int = 1000, offset: int = 0, refresh: float = 0.2) -> None:
        self._status_view = ipywidgets.HTML(layout=ipywidgets.Layout(flex="1 1 auto"), _dom_classes=("jobber-status",))
        self._stop_button = ipywidgets.Button(
            description="Stop", icon="stop", button_style="danger", tooltip=f"Stop job {job.id}",
            layout=ipywidgets.Layout(width="auto", flex="0 0 auto"), _dom_classes=("jobber-stop",),
        )
        self._chart_view = ipywidgets.HTML(_dom_classes=("jobber-charts",))
        # Classes given at construction travel in the widget's first message (tests find
        # the log view by it; a stylesheet could too).
        self._log_view = ipywidgets.HTML(_dom_classes=("jobber-log",))
        super().__init__(children=[
            ipywidgets.HBox([self._status_view, self._stop_button]),
            self._chart_view,
            self._log_view,
        ], _dom_classes=("jobber-job-widget",))
        self.job = job
        self._lines = LogLines(max_lines=lines)
        self._history = ResourceHistory()
        self._refresh = refresh
        self._offset = offset
        self._closed = threading.Event()
        self._draw_lock = threading.Lock()
        self._problem = ""
        self._stop_button.on_click(self._on_stop_click)
        self._draw(job.status(), log=True)
        self._thread = threading.Thread(target=self._update, name=f"jobber-widget-job-{job.id}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        # Deterministic: notebooks checked with nbval compare this text/plain form.
        return f"JobWidget(job={self.job.id})"

    @property
    def updating(self) -> bool:
        """Whether the updater thread still runs."""
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the updater has shown the job's end; return False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the job (what the Stop button does): SIGTERM, then SIGKILL after ``grace``.

        Returns:
            The job's final status.

        Raises:
            JobberError: the job could not be stopped.
        """
        self._stop_button.disabled = True
        self._stop_button.description = "Stopping…"
        try:
            status = self.job.stop(grace)
        except JobberError:
            self._stop_button.disabled = False
            self._stop_button.description = "Stop"
            raise
        self._problem = ""
        if not self.updating:  # closed, or ended before: nobody else will redraw
            self._draw(status)
        return status

    def close(self) -> None:
        """Close the widget and its parts; the updater thread ends within a heartbeat."""
        self._closed.set()
        for part in (self._status_view, self._stop_button, self._chart_view, self._log_view, *self.children):
            part.close()
        super().close()

    def _on_stop_click(self, _button: Any) -> None:
        # Runs in the kernel's main thread, from a comm message: an exception would only
        # reach the browser console, so the problem is shown in the widget instead.
        try:
            self.stop()
        except JobberError as err:
            self._problem = f"could not stop job {self.job.id}: {err}"
            self._draw(None)

    def _update(self) -> None:
        next_frame = 0.0
        dirty = False
        # The heartbeat (an empty chunk while the job is silent) lets this loop redraw the
        # chart and notice a closed widget even when the job prints nothing for hours.
        chunks = self.job.follow(self._offset, heartbeat=self._refresh)
        try:
            for chunk in chunks:
                if self._closed.is_set():
                    return
                if chunk:
                    self._lines.feed(chunk)
                    dirty = True
                now = time.monotonic()
                if now >= next_frame:
                    status = self.job.status()
                    # Until the log is drained the view keeps the running state: whoever
                    # reads "exited" in the status line has the whole log in front of them.
                    self._draw(None if status.ended else status, log=dirty)
                    dirty = False
                    next_frame = now + self._refresh
                if 0 < len(chunk) < _COALESCE_BELOW and self._closed.wait(max(0.0, next_frame - time.monotonic())):
                    return
            self._lines.finish()
            self._draw(self.job.status(), log=True)
        except JobberError as err:
            self._problem = f"live view stopped: {err}"
            self._draw(None, log=True)
        except Exception as err:  # noqa: BLE001 - a thread must not print; show it instead
            self._problem = f"live view failed: {type(err).__name__}: {err}"
            self._draw(None, log=True)
        finally:
            chunks.close()  # frees the follower's inotify descriptor or HTTP stream now

    def _draw(self, status: JobStatus | None, *, log: bool = False) -> None:
        with self._draw_lock:
            if status is not None:
                self._status = status
                kept = self._history.add(time.monotonic(), status)
                if kept or status.ended or not self._chart_view.value:
                    self._chart_view.value = resource_chart_html(
                        self._history, status.limits, running=not status.ended)
                if status.ended:
                    self._stop_button.disabled = True
                    self._stop_button.layout.display = "none"
            status = self._status
            total = self._lines.total_lines
            extra = f"{total:,} lines" + (f", last {self._lines.max_lines:,} shown" if total > self._lines.max_lines else "")
            line = status_html(self.job.id, status, extra=extra)
            if self._problem:
                line += f'<div style="color:#d62728">{html.escape(self._problem)}</div>'
            # The log before the status line: whoever sees "exited" has the whole log.
            if log:
                empty = "(no output)" if status.ended else "(no output yet)"
                self._log_view.value = log_html(self._lines.text(max_chars=_MAX_LOG_CHARS) or empty)
            self._status_view.value = line
