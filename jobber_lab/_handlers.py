"""The HTTP endpoints of the Jobs panel, under the Jupyter server's ``base_url``.

Every handler is a Jupyter server handler: token (or cookie) authentication through
``@tornado.web.authenticated`` / ``ws_authenticated``, and XSRF checks on every
non-GET request (``APIHandler``), like the server's own endpoints. Bodies are JSON;
an error is ``{"message": "..."}`` with a 4xx status that says what to do, never a 5xx
for bad input. Only the server's identity's jobs exist here: another identity's id is a
404 "no job N for this identity", as an id that was never made.

    GET    /jobber/api/identity            the identity (``_identity.Identity.describe``)
    PUT    /jobber/api/identity            {"certPath": str, "server": str} -> the identity;
                                           400 when certPath is not a usable certificate
    GET    /jobber/api/jobs                {"jobs": [Row...], "counts": {...}}, newest first
    GET    /jobber/api/jobs/{id}           Row
    POST   /jobber/api/jobs/{id}/stop      Row (stopped: SIGTERM, SIGKILL after 5 s, whole tree)
    POST   /jobber/api/jobs/{id}/rerun     Row of the new job (started)
    DELETE /jobber/api/jobs/{id}           204; 409 while it runs
    POST   /jobber/api/jobs:stop           {"ids": [..]} or {"label": str} -> {"stopped": [ids]}
    WS     /jobber/api/events              the events feed (``_events``)
    WS     /jobber/api/jobs/{id}/view      the job-view feed (``_view``)
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web, websocket

from jobber import JobberError, JobError, JobNotFound
from jobber._server.watch import WatchHub
from jobber_lab._events import JobsFeed
from jobber_lab._identity import Identity, IdentityProblem
from jobber_lab._reads import BROKEN, list_rows
from jobber_lab._rows import counts, job_row, sweep_of
from jobber_lab._view import JobView

__all__ = ["MAX_UNSENT", "BoundedSend", "LabJobs", "handlers"]

_MAX_BODY = 64 * 1024
_MAX_IDS = 10_000
MAX_UNSENT = 8 << 20
"""The most bytes a socket may have waiting to be sent: a browser that does not read
(a frozen tab) is disconnected past it (it loads a new snapshot when it comes back),
rather than the server keeping every message for it."""
_POOL_THREADS = 2


class LabJobs:
    """What the handlers share, one per Jupyter server: the identity, the events feed, the
    inotify hub of the views."""

    def __init__(self) -> None:
        self.identity = Identity()
        self.pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="jobber-lab")
        self._feed: JobsFeed | None = None
        self._hub: WatchHub | None = None
        self.views: set[ViewSocket] = set()

    @property
    def feed(self) -> JobsFeed:
        if self._feed is None:
            self._feed = JobsFeed(self.identity, asyncio.get_running_loop(), self.pool)
        return self._feed

    @property
    def hub(self) -> WatchHub:
        if self._hub is None:
            self._hub = WatchHub(asyncio.get_running_loop())
        return self._hub

    def identity_changed(self) -> None:
        """The identity was configured anew: the feed (if any) starts over with it, and each
        job view closes (its job is the former identity's: no Stop of it from here)."""
        if self._feed is not None:
            self._feed.restart()
        for view in list(self.views):
            view.close(4000, "the Jobs panel's identity changed")


def _not_found(job_id: int) -> web.HTTPError:
    return web.HTTPError(404, f"no job {job_id} for this identity")


def _broken(job_id: int, err: Exception) -> web.HTTPError:
    """A 409 for a job that cannot be read (its files damaged, or not jobber's; a jobber
    server unreachable): the sentence says which job and why."""
    if isinstance(err, JobberError):
        return web.HTTPError(409, str(err))
    return web.HTTPError(409, f"job {job_id} cannot be read: its files are not jobber's ({type(err).__name__}: "
                              f"{str(err)[:200]}); remove it with `jobber rm {job_id}` or its directory")


def _job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18 or text.startswith("0"):
        raise web.HTTPError(400, f"{text[:40]!r} is not a job id: job ids are positive whole numbers (1, 2, ...)")
    return int(text)


class _Base(APIHandler):
    @property
    def lab(self) -> LabJobs:
        return self.settings["jobber_lab"]

    def session(self) -> Any:
        try:
            return self.lab.identity.session
        except IdentityProblem as err:
            raise web.HTTPError(409, str(err)) from None

    def body(self, example: str) -> dict[str, Any]:
        """The request's JSON object; ``example``: one such object, for the error's words."""
        if len(self.request.body) > _MAX_BODY:
            raise web.HTTPError(413, f"the request body is over {_MAX_BODY // 1024} KiB")
        try:
            data = json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, f"the request body is not JSON: send a JSON object, e.g. {example}") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, f"the request body must be a JSON object, e.g. {example}")
        return data

    async def job(self, text: str) -> Any:
        job_id = _job_id(text)
        session = self.session()
        try:
            return await asyncio.to_thread(session.get_job, job_id)
        except JobNotFound:
            raise _not_found(job_id) from None
        except BROKEN as err:  # its files unreadable, a jobber server unreachable
            raise _broken(job_id, err) from None

    async def row(self, job: Any) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(lambda: job_row(job, job.status()))
        except JobNotFound:
            raise _not_found(job.id) from None
        except BROKEN as err:
            raise _broken(job.id, err) from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class IdentityHandler(_Base):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.lab.identity.describe())

    @web.authenticated
    async def put(self) -> None:
        data = self.body('{"certPath": "/home/you/.jobber/client.pem", "server": ""}')
        try:  # (in a thread: it reads the certificate, and may reach a jobber server)
            await asyncio.to_thread(self.lab.identity.configure, data.get("certPath", ""), data.get("server", ""))
        except IdentityProblem as err:
            raise web.HTTPError(400, str(err)) from None
        self.lab.identity_changed()
        self.reply(self.lab.identity.describe())


class JobsHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        rows = self.lab.feed.current()
        if rows is None:  # no socket keeps the feed current: read them
            session = self.session()
            try:
                rows = await asyncio.to_thread(list_rows, session)
            except JobberError as err:
                raise web.HTTPError(409, str(err)) from None
        self.reply({"jobs": rows, "counts": counts(rows)})


class JobHandler(_Base):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.reply(await self.row(await self.job(job_id)))

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        job = await self.job(job_id)
        try:
            await asyncio.to_thread(job.remove)
        except JobNotFound:
            raise _not_found(job.id) from None
        except JobberError as err:
            raise web.HTTPError(409, str(err)) from None
        self.lab.feed.job_changed(job.id)
        self.set_status(204)
        self.finish()


class JobActionHandler(_Base):
    @web.authenticated
    async def post(self, job_id: str, action: str) -> None:
        job = await self.job(job_id)
        try:
            if action == "stop":
                await asyncio.to_thread(job.stop)
            else:
                new = await asyncio.to_thread(job.rerun)
                await asyncio.to_thread(new.start)
                job = new
        except JobNotFound:
            raise _not_found(job.id) from None
        except JobberError as err:
            raise web.HTTPError(409, str(err)) from None
        self.lab.feed.job_changed(job.id)
        self.reply(await self.row(job))


class StopManyHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        data = self.body('{"ids": [12, 13]}')
        session = self.session()
        ids, label = data.get("ids"), data.get("label")
        if ids is not None:
            if (not isinstance(ids, list) or len(ids) > _MAX_IDS
                    or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 10**18 for i in ids)):
                raise web.HTTPError(400, f"ids must be a list of job ids (whole numbers), at most {_MAX_IDS:,}")
        elif not isinstance(label, str) or not label:
            raise web.HTTPError(400, "give the jobs to stop: {\"ids\": [12, 13]} or {\"label\": \"lr\"} (a sweep's label)")
        stopped = await asyncio.to_thread(_stop_many, session, ids, label)
        for job_id in stopped:
            self.lab.feed.job_changed(job_id)
        self.reply({"stopped": stopped})


def _stop_many(session: Any, ids: list[int] | None, label: str | None) -> list[int]:
    """Stop the running or waiting jobs among ``ids``, or of the sweep (or label) ``label``."""
    if ids is not None:
        jobs = []
        for job_id in ids:
            try:
                jobs.append(session.get_job(job_id))
            except JobNotFound:
                continue  # another identity's, or removed: nothing of ours to stop
    else:
        jobs = [job for job in session.get_jobs() if label in (job.label, sweep_of(job.label))]
    stopped = []
    for job in jobs:
        try:
            if not job.status().ended:
                job.stop()
                stopped.append(job.id)
        except (JobNotFound, JobError):
            continue
    return stopped


class BoundedSend:
    """A WebSocket handler's sending, bounded: a client that does not read its messages is
    disconnected once :data:`MAX_UNSENT` bytes wait for it (they are freed then), instead of
    the server buffering without end (for a tab that froze, or a client that never reads).
    Mixed in before ``tornado.websocket.WebSocketHandler``."""

    max_unsent = MAX_UNSENT
    _unsent = 0

    def send_text(self: Any, text: str) -> None:
        """Send ``text``; past ``max_unsent`` bytes not yet taken by the client, close."""
        if self._unsent > self.max_unsent:
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.close(1008, "the client does not read its messages: reconnect")
            return
        size = len(text)
        try:
            sent = self.write_message(text)
        except websocket.WebSocketClosedError:
            return
        self._unsent += size
        sent.add_done_callback(lambda done: self._taken(size, done))

    def _taken(self, size: int, sent: Any) -> None:
        self._unsent -= size
        if not sent.cancelled():
            sent.exception()  # a connection lost meanwhile: nothing to tell (its on_close does)


class _Socket(BoundedSend, WebSocketMixin, JupyterHandler, websocket.WebSocketHandler):
    """A WebSocket with the Jupyter server's authentication (token or cookie)."""

    @property
    def lab(self) -> LabJobs:
        return self.settings["jobber_lab"]

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get(*args)
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    async def pre_get(self, *args: Any) -> None:
        """Check what the socket asks for before it opens (errors are HTTP errors then)."""

class EventsSocket(_Socket):
    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.lab.feed.add(self.send_text)

    def on_message(self, message: Any) -> None:
        pass  # the feed only talks

    def on_close(self) -> None:
        self.lab.feed.remove(self.send_text)


class ViewSocket(_Socket):
    _view: JobView | None = None

    async def pre_get(self, *args: Any) -> None:
        job_id = _job_id(args[0])
        try:
            session = self.lab.identity.session
        except IdentityProblem as err:
            raise web.HTTPError(409, str(err)) from None
        self._generation = self.lab.identity.generation
        try:
            self._job = await asyncio.to_thread(lambda: _readable(session.get_job(job_id)))
        except JobNotFound:
            raise _not_found(job_id) from None
        except BROKEN as err:
            raise _broken(job_id, err) from None

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        if self._generation != self.lab.identity.generation:
            self.close(4000, "the Jobs panel's identity changed")
            return
        self.lab.views.add(self)
        self._view = JobView(self._job, lambda message: self.send_text(json.dumps(message)), self.lab.hub)
        await self._view.start()

    async def on_message(self, message: Any) -> None:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return
        if isinstance(data, dict) and data.get("type") == "custom" and self._view is not None:
            await self._view.on_message(data.get("content"))

    def on_close(self) -> None:
        self.lab.views.discard(self)
        if self._view is not None:
            self._view.close()


def _readable(job: Any) -> Any:
    job_row(job, job.status())  # (what the view shows first: a job that cannot be read is refused before the socket opens)
    return job


def handlers(base_url: str) -> list[tuple[str, type, dict[str, Any]]]:
    """The routes, under ``base_url``."""
    api = base_url.rstrip("/") + "/jobber/api"
    return [
        (f"{api}/identity", IdentityHandler, {}),
        (f"{api}/events", EventsSocket, {}),
        (f"{api}/jobs", JobsHandler, {}),
        (f"{api}/jobs:stop", StopManyHandler, {}),
        (f"{api}/jobs/([^/]+)", JobHandler, {}),
        (f"{api}/jobs/([^/]+)/(stop|rerun)", JobActionHandler, {}),
        (f"{api}/jobs/([^/]+)/view", ViewSocket, {}),
    ]
