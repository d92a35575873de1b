"""The job-view feed: one job's live view (status, charts, log, Stop) over a WebSocket.

    WebSocket /jobber/api/jobs/{id}/view
      <- {"type": "state", "state": {...}}       the whole model first, then what changed
      <- {"type": "custom", "content": {"kind": "log", "frame", "lines", "partial", "total", "reset"}}
      -> {"type": "custom", "content": {"event": "stop"}}

The model is the kernel widget's (``jobber_magics._jobview.js`` renders both): built by
the same ``jobber_magics._viewstate.JobViewState``, so the status line, the charts and
the log frames are one code path. A local job's log is followed on the server's event
loop (``jobber._server.watch.follow_log``: the core's follow reader over one inotify
instance shared by every view), a remote job's through ``job.follow`` in a worker
thread. The view redraws every :data:`REFRESH_S` while the job runs, then once more
when it ended and its log is drained, and then only sends what a Stop changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from jobber import JobberError, JobNotFound
from jobber._server.watch import WatchHub, follow_log
from jobber_magics._viewstate import JobViewState

__all__ = ["REFRESH_S", "JobView"]

REFRESH_S = 0.5
"""The shortest time between two frames (the kernel widget's default is 0.2 s)."""
_LINES = 1000


class JobView:
    """One socket's view of one job.

    Args:
        job: the job (of the server's identity).
        send: sends one message (a dict) to the socket.
        hub: the server's shared inotify for following logs.
    """

    def __init__(self, job: Any, send: Callable[[dict[str, Any]], None], hub: WatchHub) -> None:
        self.job = job
        self._send = send
        self._hub = hub
        self._view: JobViewState | None = None  # made in a thread: it reads the job's usage history
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state: dict[str, Any] = {}
        self._closed = False

    async def start(self) -> None:
        """Send the whole model, then follow the job in a task until `close`."""
        self._view = await asyncio.to_thread(JobViewState, self.job, lines=_LINES)
        status = await asyncio.to_thread(self.job.status)
        _message, changes = await asyncio.to_thread(self._view.frame, status)  # (no log read yet: no message)
        state = {"view_key": uuid.uuid4().hex, "job_id": self.job.id, "state": status.state, "ended": False,
                 "status_html": "", "as_of": "", "charts_html": "", "problem": "", "notice_html": "",
                 "notice_kind": "info", "previous_job": 0, "stopping": False, "removed": "", "following": True,
                 "max_lines": _LINES, **changes, **self._view.snapshot()}
        self._state = dict(state)
        if self._closed:
            return  # the socket closed while the job was read: nothing to follow
        self._send({"type": "state", "state": state})
        self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        """The socket closed: stop following (the job runs on)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def on_message(self, content: Any) -> None:
        """A message from the browser: ``{"event": "stop"}`` stops the job (its whole tree)."""
        if not isinstance(content, dict) or content.get("event") != "stop":
            return
        self._set({"stopping": True})
        try:
            status = await asyncio.to_thread(self.job.stop)
        except JobberError as err:
            self._set({"stopping": False, "problem": f"could not stop job {self.job.id}: {err}"})
            return
        self._set({"problem": ""})
        if self._task is not None and self._task.done():
            await self._draw(status)

    def _set(self, changes: dict[str, Any]) -> None:
        changed = {name: value for name, value in changes.items() if self._state.get(name) != value}
        if changed:
            self._state.update(changed)
            self._send({"type": "state", "state": changed})

    async def _draw(self, status: Any) -> None:
        assert self._view is not None
        # In a thread: a frame may walk /proc for the job's process count.
        message, changes = await asyncio.to_thread(self._view.frame, status)
        if message is not None:
            self._send({"type": "custom", "content": message})  # the log first, as the widget sends it
        self._set(changes)

    async def _run(self) -> None:
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            while not reader.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._new.wait(), REFRESH_S)
                self._new.clear()
                status = await asyncio.to_thread(self.job.status)
                # Until the log is drained the view keeps the running state: whoever reads
                # "exited" in the status line has the whole log in front of them.
                await self._draw(None if status.ended else status)
                await asyncio.sleep(REFRESH_S / 5)  # a chatty job's lines come in frames, not one by one
            await reader  # its error, if any
            self._view.finish()
            await self._draw(await asyncio.to_thread(self.job.status))
            self._set({"following": False})
        except JobNotFound:
            self._set({"stopping": False, "removed": f"job {self.job.id} was removed", "following": False})
        except JobberError as err:
            self._set({"problem": f"live view stopped: {err}", "following": False})
        finally:
            reader.cancel()

    async def _read(self) -> None:
        assert self._view is not None
        async for chunk in self._chunks():
            if chunk:
                self._view.feed(chunk)
                self._new.set()

    def _chunks(self) -> AsyncIterator[bytes]:
        if self.job.path is not None:
            return follow_log(self._hub, self.job, 0, from_first_attempt=True)
        return _in_thread(self.job.follow(0))


async def _in_thread(chunks: Any) -> AsyncIterator[bytes]:
    """A blocking iterator (a remote job's follow) read in worker threads."""
    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        chunks.close()
