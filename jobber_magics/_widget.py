"""The live view of a job: its status, resource charts, log and a Stop button, in one widget.

The browser half is a small ES module (``_jobview.js``, loaded through anywidget, which
ships its own JupyterLab extension, so nothing needs building). This half runs one updater
thread per view: it consumes ``job.follow(heartbeat=...)`` (local or remote; an empty
chunk arrives while the job is silent), keeps the last lines in a bounded ``LogLines`` ring
and, at most ``1 / refresh`` times a second, sends the browser **only what is new**: the
complete lines since the last frame and the unfinished last line (a custom message), then
the status line and the charts (widget state, one message). The browser appends them, so
a reader who scrolled up keeps their place. When more lines came in one frame than the
view keeps (a job printing 100k lines/s), the frame replaces the view's lines instead:
every message stays bounded, whatever the job prints.

A page that loads the view anew (a reopened notebook, a reloaded browser) asks for the
widget's full state; ``get_state`` then includes a snapshot of the ring (``log_snapshot``
at ``log_frame``), so it starts from the current log and applies only later frames.

The thread never prints (output from a thread lands in whichever cell runs at the time);
widget messages from threads are safe with ipykernel >= 7.1. It ends when the job has ended
and its log is drained, or when the widget closes.

A job can be removed under its view (``%jobber_rm``, a prune, ``job.remove()``, ``jobber rm``
in a terminal): its follow or status then raises ``JobNotFound``, and the view says "job 25
was removed" (``removed``) over its last real state, the charts and log as they were. A job
that ended before its removal has no updater left to notice: one thread for all such views
of the kernel (``_removals.REMOVALS``) asks each job's status now and then. The browser counts a
view's traffic as its kernel's heartbeat; ``following`` tells it when the kernel stopped
sending on purpose (the job ended or was removed, or the follow failed), so that only a
kernel really gone reads as "no word from its kernel".
"""

from __future__ import annotations

import html
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from jobber import JobberError, JobNotFound, JobStatus
from jobber_magics._charts import ResourceHistory, resource_chart_html
from jobber_magics._display import static_job_html, static_job_text, status_html
from jobber_magics._loglines import LogLines
from jobber_magics._removals import REMOVALS

__all__ = ["JobWidget"]

# A chunk smaller than this means the reader has caught up with the writer: then the thread
# waits for the next frame and lets output pile up, instead of waking for every line.
_COALESCE_BELOW = 64 * 1024
# The most characters of log in one message (lines are also cut at LogLines.max_line_chars).
_MAX_LOG_CHARS = 200_000
# How often the process count of a job with a pids limit is read (it walks /proc).
_PROCESS_INTERVAL = 0.5
_HERE = Path(__file__).parent


def _lines_word(count: int) -> str:
    return f"{count:,} line" + ("" if count == 1 else "s")


class JobWidget(anywidget.AnyWidget):
    """A live view of a job: status line, resource charts, the last lines and a Stop button.

    Args:
        job: the job to follow (local or remote).
        lines: how many of the last lines to show and keep.
        offset: where in the log to start; negative counts back from the end.
        refresh: the shortest time between two frames, in seconds.
        notice: a line (text) shown above the log, e.g. that an earlier job of the cell runs:
            a warning, styled as one.
        previous: a running job the notice is about: the view offers a button to stop it.
        info: a line (text) shown above the log as information, not as a warning (what
            earlier runs of the label used).
    """

    _esm = (_HERE / "_jobview.js").read_text(encoding="utf-8")
    _css = (_HERE / "_jobview.css").read_text(encoding="utf-8")

    view_key = traitlets.Unicode("").tag(sync=True)
    job_id = traitlets.Int(0).tag(sync=True)
    state = traitlets.Unicode("").tag(sync=True)
    ended = traitlets.Bool(False).tag(sync=True)
    status_html = traitlets.Unicode("").tag(sync=True)
    as_of = traitlets.Unicode("").tag(sync=True)
    charts_html = traitlets.Unicode("").tag(sync=True)
    problem = traitlets.Unicode("").tag(sync=True)
    notice_html = traitlets.Unicode("").tag(sync=True)
    notice_kind = traitlets.Unicode("warning").tag(sync=True)  # "info": nothing in the notice warns
    previous_job = traitlets.Int(0).tag(sync=True)
    stopping = traitlets.Bool(False).tag(sync=True)
    removed = traitlets.Unicode("").tag(sync=True)  # "job 25 was removed", once it was
    following = traitlets.Bool(True).tag(sync=True)  # False once the updater has stopped
    max_lines = traitlets.Int(1000).tag(sync=True)
    # Filled in by get_state (a snapshot of the ring), never set: see the module docstring.
    log_snapshot = traitlets.Unicode("").tag(sync=True)
    log_partial = traitlets.Unicode("").tag(sync=True)
    log_total = traitlets.Int(0).tag(sync=True)
    log_frame = traitlets.Int(-1).tag(sync=True)

    def __init__(self, job: Any, *, lines: int = 1000, offset: int = 0, refresh: float = 0.2,
                 notice: str = "", previous: Any = None, info: str = "") -> None:
        # Before super().__init__: opening the comm asks get_state, which reads these.
        self._lock = threading.RLock()
        self._lines = LogLines(max_lines=lines)
        self._frame = 0
        self._sent_total = 0
        self._sent_partial = ""
        self.job = job
        self._previous = previous
        info_html = f'<span class="jobber-info">{html.escape(info)}</span>' if info else ""
        super().__init__(view_key=uuid.uuid4().hex, job_id=job.id, max_lines=lines,
                         notice_html=html.escape(notice) + ("\n" if notice and info else "") + info_html,
                         notice_kind="warning" if notice else "info",
                         previous_job=previous.id if previous is not None else 0)
        self._history = ResourceHistory()
        self._load_history(job)
        self._refresh = refresh
        self._offset = offset
        self._closed = threading.Event()
        self._status: JobStatus | None = None
        self._processes_at = 0.0
        self._processes: int | None = None
        self.on_msg(self._on_message)
        self._draw(job.status())
        self._thread = threading.Thread(target=self._update, name=f"jobber-widget-job-{job.id}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        # Deterministic: notebooks checked with nbval compare text/plain forms.
        return f"JobWidget(job={self.job.id})"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        # The widget for JupyterLab; for any other reader of the notebook (GitHub, nbconvert,
        # a page without the widget's state) a static card that says when it was true.
        result = super()._repr_mimebundle_(**kwargs) or {}
        data, metadata = result if isinstance(result, tuple) else (result, {})
        data = dict(data)
        status = self._status
        if status is not None:
            data["text/plain"] = static_job_text(self.job.id, status)
            data["text/html"] = static_job_html(self.job, status)
        return data, dict(metadata or {})

    @property
    def closed(self) -> bool:
        """Whether the widget was closed."""
        return self._closed.is_set()

    @property
    def updating(self) -> bool:
        """Whether the updater thread still runs."""
        return self._thread.is_alive()

    def log_text(self) -> str:
        """What the view shows of the log: the kept lines and the unfinished last one."""
        with self._lock:
            return self._lines.text()

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
        self.stopping = True
        try:
            status = self.job.stop(grace)
        except JobberError:
            self.stopping = False
            raise
        self.problem = ""
        if not self.updating:  # closed, or ended before: nobody else will draw
            self._draw(status)
        return status

    def close(self) -> None:
        """Close the widget; the updater thread ends within a heartbeat (the job runs on)."""
        self._closed.set()
        super().close()

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        """The widget's state; the full state carries a snapshot of the log (see above)."""
        state = super().get_state(key=key, drop_defaults=drop_defaults)
        if key is None:
            with self._lock:
                # Whoever gets this snapshot has everything up to now: later frames carry
                # only what comes after it, for every view (they all receive the state).
                self._frame += 1
                self._sent_total = self._lines.total_lines
                self._sent_partial = self._lines.unfinished()
                lines = self._bounded(self._lines.complete_lines())
                state.update(log_snapshot="\n".join(lines), log_partial=self._sent_partial,
                             log_total=self._sent_total, log_frame=self._frame)
        return state

    # ---- in the kernel's main thread, from the browser ----

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # An exception here would only reach the browser's console: show it in the view.
        event = content.get("event") if isinstance(content, dict) else None
        if event == "stop":
            try:
                self.stop()
            except JobberError as err:
                self.problem = f"could not stop job {self.job.id}: {err}"
        elif event == "stop-previous" and self._previous is not None:
            try:
                status = self._previous.stop()
            except JobberError as err:
                self.problem = f"could not stop job {self._previous.id}: {err}"
            else:
                self.notice_html = html.escape(f"job {self._previous.id} (from an earlier run of this cell): "
                                               f"{status.describe()}")
                self.notice_kind = "info"
                self.previous_job = 0

    def _load_history(self, job: Any) -> None:
        """The readings the job's supervisor kept since the job started (``job.usage()``):
        a view made after the start (a re-attach, a restarted kernel, another notebook)
        draws its charts from the start too, not from the moment it was made."""
        try:
            samples = job.usage()
        except (JobberError, OSError):
            return  # no history: the charts start now, as they would without one
        for sample in samples:
            reading = JobStatus(state="running", memory_bytes=sample.memory_bytes, cpu_seconds=sample.cpu_seconds)
            self._history.add(sample.t, reading, sample.tasks)

    # ---- in the updater thread ----

    def _update(self) -> None:
        next_frame = 0.0
        # The heartbeat (an empty chunk while the job is silent) lets this loop redraw the
        # status and notice a closed widget even when the job prints nothing for hours.
        chunks = self.job.follow(self._offset, heartbeat=self._refresh)
        try:
            for chunk in chunks:
                if self._closed.is_set():
                    return
                if chunk:
                    with self._lock:
                        self._lines.feed(chunk)
                now = time.monotonic()
                if now >= next_frame:
                    status = self.job.status()
                    # Until the log is drained the view keeps the running state: whoever
                    # reads "exited" in the status line has the whole log in front of them.
                    self._draw(None if status.ended else status)
                    next_frame = now + self._refresh
                if 0 < len(chunk) < _COALESCE_BELOW and self._closed.wait(max(0.0, next_frame - time.monotonic())):
                    return
            with self._lock:
                self._lines.finish()
            status = self.job.status()
            self._draw(status)
            if status.ended and not self._closed.is_set():
                REMOVALS.watch(self)
        except JobberError as err:
            self._stopped(err)
        except Exception as err:  # noqa: BLE001 - a thread must not print; show it instead
            self.problem = f"live view failed: {type(err).__name__}: {err}"
            self._draw(None)
        finally:
            chunks.close()  # frees the follower's inotify descriptor or HTTP stream now
            self.following = False

    def _stopped(self, err: JobberError) -> None:
        """The updater cannot go on: the job was removed, or following it failed."""
        if isinstance(err, JobNotFound):
            self.show_removed()
        else:
            self.problem = f"live view stopped: {err}"
            self._draw(None)
            self.following = False

    def show_removed(self) -> None:
        """Say that the job was removed, over the view's last real state (its log and
        charts as they were); the view then asks nothing more of the job."""
        with self._lock, self.hold_sync():  # one message: the browser never sees half of it
            self.stopping = False
            self.removed = f"job {self.job.id} was removed"
            self.following = False

    def _bounded(self, lines: list[str]) -> list[str]:
        """The newest of ``lines`` that fit in one message."""
        size = 0
        for i in range(len(lines) - 1, -1, -1):
            size += len(lines[i]) + 1
            if size > _MAX_LOG_CHARS:
                return lines[i + 1 :]
        return lines

    def _log_message(self) -> dict[str, Any] | None:
        """What is new in the log since the last frame (under the lock), or None."""
        total, partial = self._lines.total_lines, self._lines.unfinished()
        new = total - self._sent_total
        if new == 0 and partial == self._sent_partial:
            return None
        reset = new > self._lines.kept_lines  # more came than the view keeps: replace its lines
        lines = self._lines.complete_lines(None if reset else new)
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

    def _draw(self, status: JobStatus | None) -> None:
        with self._lock, self.hold_sync():
            message = self._log_message()
            if message is not None:
                self.send(message)  # the log first: whoever reads "exited" has all of it
            if status is not None:
                self._status = status
                t = status.elapsed or 0.0
                kept = self._history.add(t, status, self._process_count(status))
                if status.peak_pids is not None:  # the kernel's own count beats the view's samples
                    self._history.peak_processes = max(self._history.peak_processes or 0, status.peak_pids)
                    self._history.peak_processes_measured |= not status.peak_pids_sampled
                if status.ended:
                    self._history.finish(status)
                if kept or status.ended or not self.charts_html:
                    self.charts_html = resource_chart_html(self._history, status.limits, running=not status.ended)
                if status.ended:
                    self.stopping = False
                self.state, self.ended = status.state, status.ended
                self.as_of = datetime.now(timezone.utc).isoformat(timespec="seconds")
            status = self._status
            if status is None:
                return
            total = self._lines.total_lines
            extra = _lines_word(total)
            if total > self._lines.max_lines:
                extra += f", last {self._lines.max_lines:,} shown"
            self.status_html = status_html(self.job.id, status, extra=extra)


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
