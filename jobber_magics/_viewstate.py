"""What a job's live view shows, built once for every place that shows it.

The kernel's widget (``_widget.JobWidget``, over a comm) and the JupyterLab Jobs panel's
view tab (``jobber_lab``, over a WebSocket) render the same browser module
(``_jobview.js``) from the same model. This module builds that model, with no widget
library: the status line, the charts, and the log as frames of new lines (see the
widget's docstring for the frame rules). Each driver feeds it the log chunks and the
statuses it read, and sends what it returns in its own way.

    view = JobViewState(job, lines=1000)
    view.feed(chunk)
    message, changes = view.frame(status)   # the log message to send first, then the traits
    view.snapshot()                         # the log as a page that loads anew gets it

Thread-safe: ``lock`` guards the ring and the frame counters (the widget's updater thread
and the kernel's thread both touch them).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from jobber import JobberError, JobStatus
from jobber_magics._charts import ResourceHistory, resource_chart_html
from jobber_magics._display import status_html
from jobber_magics._loglines import LogLines

__all__ = ["JobViewState", "MAX_LOG_CHARS"]

MAX_LOG_CHARS = 200_000
"""The most characters of log in one message (lines are also cut at LogLines.max_line_chars)."""
# How often the process count of a job with a pids limit is read (it walks /proc).
_PROCESS_INTERVAL = 0.5


def _lines_word(count: int) -> str:
    return f"{count:,} line" + ("" if count == 1 else "s")


class JobViewState:
    """The model of one job's live view: its log ring, its resource history, its frames.

    Args:
        job: the job shown (local or remote).
        lines: how many of the last lines to show and keep.
    """

    def __init__(self, job: Any, *, lines: int = 1000) -> None:
        self.job = job
        self.lock = threading.RLock()
        self.lines = LogLines(max_lines=lines)
        self.history = ResourceHistory()
        self.status: JobStatus | None = None  # the last real status drawn
        self.charts_html = ""
        self._frame = 0
        self._sent_total = 0
        self._sent_partial = ""
        self._processes_at = 0.0
        self._processes: int | None = None
        self._load_history(job)

    def _load_history(self, job: Any) -> None:
        """The readings the job's supervisor kept since the job started (``job.usage()``):
        a view made after the start (a re-attach, a restarted kernel, another notebook, the
        Jobs panel) draws its charts from the start too, not from the moment it was made."""
        try:
            samples = job.usage()
        except (JobberError, OSError):
            return  # no history: the charts start now, as they would without one
        for sample in samples:
            reading = JobStatus(state="running", memory_bytes=sample.memory_bytes, cpu_seconds=sample.cpu_seconds)
            self.history.add(sample.t, reading, sample.tasks)

    def feed(self, chunk: bytes) -> None:
        """Take more of the log."""
        with self.lock:
            self.lines.feed(chunk)

    def finish(self) -> None:
        """The log has ended: its unfinished last line is a line."""
        with self.lock:
            self.lines.finish()

    def text(self) -> str:
        """What the view shows of the log: the kept lines and the unfinished last one."""
        with self.lock:
            return self.lines.text()

    def snapshot(self) -> dict[str, Any]:
        """The log as a view that loads anew gets it: ``log_snapshot`` at ``log_frame``.

        Whoever gets it has everything up to now: later frames carry only what comes after.
        """
        with self.lock:
            self._frame += 1
            self._sent_total = self.lines.total_lines
            self._sent_partial = self.lines.unfinished()
            lines = self._bounded(self.lines.complete_lines())
            return {"log_snapshot": "\n".join(lines), "log_partial": self._sent_partial,
                    "log_total": self._sent_total, "log_frame": self._frame}

    def frame(self, status: JobStatus | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """One frame: what is new in the log, and the view's changed state.

        Args:
            status: the job's status now, or None to redraw with the last one (the log
                is not drained yet, or the status cannot be read).

        Returns:
            The log message to send first (``{"kind": "log", ...}``, None when nothing is
            new), then the state to set: ``status_html``, and with a status ``state``,
            ``ended``, ``as_of``, ``charts_html`` (when it changed) and ``stopping``
            (False once ended).
        """
        with self.lock:
            message = self._log_message()
            changes: dict[str, Any] = {}
            if status is not None:
                self.status = status
                t = status.elapsed or 0.0
                kept = self.history.add(t, status, self._process_count(status))
                if status.peak_pids is not None:  # the kernel's own count beats the view's samples
                    self.history.peak_processes = max(self.history.peak_processes or 0, status.peak_pids)
                    self.history.peak_processes_measured |= not status.peak_pids_sampled
                if status.ended:
                    self.history.finish(status)
                if kept or status.ended or not self.charts_html:
                    self.charts_html = changes["charts_html"] = resource_chart_html(
                        self.history, status.limits, running=not status.ended)
                if status.ended:
                    changes["stopping"] = False
                changes.update(state=status.state, ended=status.ended,
                               as_of=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            if self.status is not None:
                total = self.lines.total_lines
                extra = _lines_word(total)
                if total > self.lines.max_lines:
                    extra += f", last {self.lines.max_lines:,} shown"
                changes["status_html"] = status_html(self.job.id, self.status, extra=extra)
            return message, changes

    def _bounded(self, lines: list[str]) -> list[str]:
        """The newest of ``lines`` that fit in one message."""
        size = 0
        for i in range(len(lines) - 1, -1, -1):
            size += len(lines[i]) + 1
            if size > MAX_LOG_CHARS:
                return lines[i + 1 :]
        return lines

    def _log_message(self) -> dict[str, Any] | None:
        """What is new in the log since the last frame (under the lock), or None."""
        total, partial = self.lines.total_lines, self.lines.unfinished()
        new = total - self._sent_total
        if new == 0 and partial == self._sent_partial:
            return None
        reset = new > self.lines.kept_lines  # more came than the view keeps: replace its lines
        lines = self.lines.complete_lines(None if reset else new)
        bounded = self._bounded(lines)
        reset = reset or len(bounded) < len(lines)
        self._frame += 1
        self._sent_total, self._sent_partial = total, partial
        return {"kind": "log", "frame": self._frame, "lines": bounded, "partial": partial,
                "total": total, "reset": reset}

    def _process_count(self, status: JobStatus) -> int | None:
        """Processes and threads of a local job with a pids limit (what pids.max counts)."""
        current = getattr(status, "pids_current", None)  # a backend that reports it
        if current is not None:
            return current
        if not status.limits.pids or status.pid is None or status.backend != "local" or status.ended:
            return None
        now = time.monotonic()
        if now - self._processes_at >= _PROCESS_INTERVAL:
            self._processes_at, self._processes = now, _task_count(status.pid)
        return self._processes


def _task_count(pid: int) -> int | None:
    """The tasks (processes and threads) of ``pid`` and its descendants, from /proc."""
    todo, seen, tasks = [pid], set(), 0
    while todo:
        process = todo.pop()
        if process in seen:
            continue
        seen.add(process)
        try:
            threads = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        tasks += len(threads)
        for thread in threads:
            try:
                with open(f"/proc/{process}/task/{thread}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
            except (OSError, ValueError):
                continue
    return tasks or None
