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
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from jobber import JobberError, JobNotFound, JobStatus
from jobber_magics._display import static_job_html, static_job_text
from jobber_magics._removals import REMOVALS
from jobber_magics._viewstate import JobViewState

__all__ = ["JobWidget"]

# A chunk smaller than this means the reader has caught up with the writer: then the thread
# waits for the next frame and lets output pile up, instead of waking for every line.
_COALESCE_BELOW = 64 * 1024
_HERE = Path(__file__).parent


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
        # Before super().__init__: opening the comm asks get_state, which reads the view's
        # state (built by JobViewState, as the JupyterLab Jobs panel's view builds it).
        self._view = JobViewState(job, lines=lines)
        self._lock = self._view.lock
        self.job = job
        self._previous = previous
        info_html = f'<span class="jobber-info">{html.escape(info)}</span>' if info else ""
        super().__init__(view_key=uuid.uuid4().hex, job_id=job.id, max_lines=lines,
                         notice_html=html.escape(notice) + ("\n" if notice and info else "") + info_html,
                         notice_kind="warning" if notice else "info",
                         previous_job=previous.id if previous is not None else 0)
        self._refresh = refresh
        self._offset = offset
        self._closed = threading.Event()
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
        status = self._view.status
        if status is not None:
            data["text/plain"] = static_job_text(self.job.id, status)
            data["text/html"] = static_job_html(self.job, status)
        return data, dict(metadata or {})

    @property
    def _history(self) -> Any:
        return self._view.history

    @property
    def _status(self) -> JobStatus | None:
        """The last real status drawn (subclasses read it: ``_pyview``)."""
        return self._view.status

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
        return self._view.text()

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
            # Every view receives the state, so later frames carry only what comes after it.
            state.update(self._view.snapshot())
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
                    self._view.feed(chunk)
                now = time.monotonic()
                if now >= next_frame:
                    status = self.job.status()
                    # Until the log is drained the view keeps the running state: whoever
                    # reads "exited" in the status line has the whole log in front of them.
                    self._draw(None if status.ended else status)
                    next_frame = now + self._refresh
                if 0 < len(chunk) < _COALESCE_BELOW and self._closed.wait(max(0.0, next_frame - time.monotonic())):
                    return
            self._view.finish()
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

    def _draw(self, status: JobStatus | None) -> None:
        with self._lock, self.hold_sync():
            message, changes = self._view.frame(status)
            if message is not None:
                self.send(message)  # the log first: whoever reads "exited" has all of it
            for name, value in changes.items():
                setattr(self, name, value)
