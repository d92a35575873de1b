"""A job on a jobber server: the backend a remote ``jobber.Job`` holds.

Its verbs map onto the server's /v1/jobs API; ``follow`` streams the log over a chunked
response and resumes from its offset when the server restarts. It reaches the server
through the transport of the session that made it (``transport.py``), and knows that
session only as the small ``Remote`` protocol below: the session imports this module,
never the reverse.
"""

from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from jobber._backends.remote.download import STREAM_FROM, open_result
from jobber._errors import CertificateError, JobberError, JobError, JobNotFound
from jobber._jobs.logs import tail_view
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import JobStatus
from jobber._session import Session

if TYPE_CHECKING:
    from jobber._backends.remote.transport import Transport

__all__ = ["Remote", "RemoteBackend"]

_READ_CHUNK = 256 * 1024
_MAX_READ = 1 << 20  # the server's largest read (MAX_READ_BYTES)
_WAIT_SLICE_S = 30.0  # one long poll; the server allows up to 60


class _Lost(Exception):
    """The connection broke after the request was sent (a follow may resume)."""


class Remote(Session, Protocol):
    """What a remote job needs of its session: the server's transport, the identity, and
    the session's methods (``Job.rerun`` makes the new job there)."""

    transport: Transport

    @property
    def url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    def hash(self) -> str: ...


class RemoteBackend:
    """A job on a jobber server; the same verbs and exceptions as a local job.

    Args:
        session: the session that found or made the job.
        data: the job as the server described it (``id``, ``command``, ``limits``, ``label``, ...).
    """

    name = "remote"
    path = None

    def __init__(self, session: Remote, data: dict[str, Any]) -> None:
        self._session = session
        self.session = session  # where Job.rerun makes the new job
        self.job_id: int = data["id"]
        self.id = self.job_id
        self._spec = JobSpec.from_api(data)

    @property
    def owner(self) -> str:
        """The SHA-256 of the owner's certificate."""
        return self._session.hash()

    def key(self) -> tuple[Any, ...]:
        return (self._session.url, self.owner, self.job_id)

    def where(self) -> str:
        return f" on {self._session.url}"

    def spec(self) -> JobSpec:
        return self._spec

    def _path(self, action: str = "") -> str:
        return f"/v1/jobs/{self.id}{action}"

    def start(self, *, user: str | None = None, cwd: str | None = None) -> None:
        """Start the job on the server.

        Args:
            user: not available remotely (the server runs each certificate's jobs as a uid
                of its own, or, with ``--single-tenant``, as its operator's ``--job-user``).
            cwd: not available remotely either.

        Raises:
            JobError: already started, ``user``/``cwd`` given, or the server could not start it.
        """
        if user is not None or cwd is not None:
            raise JobError("user and cwd are chosen by the server's operator (by default each certificate's jobs "
                           "run as a uid of its own, in its own home), not by the client: leave them out",
                           job_id=self.id)
        self._session.transport.json("POST", self._path("/start"), {}, job_id=self.id)

    def status(self) -> JobStatus:
        """The job's state on the server (``backend`` is "remote").

        Raises:
            JobNotFound: the job is gone. JobberError: the server is unreachable.
        """
        return _status(self._session.transport.json("GET", self._path(), job_id=self.id))

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the whole job: SIGTERM, then SIGKILL after ``grace`` seconds.

        Returns:
            The final status.

        Raises:
            JobError: the job was never started, or could not be killed.
        """
        timeout = self._session.timeout + float(grace) + 10.0  # the server's SIGKILL wait
        return _status(self._session.transport.json("POST", self._path("/stop"), {"grace": grace}, job_id=self.id, timeout=timeout))

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job has ended, or ``timeout`` seconds have passed.

        Returns:
            The status: final, or still "running"/"created" if the timeout came first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE_S if deadline is None else max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))
            data = self._session.transport.json("GET", f"{self._path()}?wait={left:.3f}", job_id=self.id,
                                       timeout=self._session.timeout + left)
            status = _status(data)
            if status.ended or (deadline is not None and time.monotonic() >= deadline):
                return status

    def usage(self) -> list:
        """No usage history: the server's API does not serve it (yet)."""
        return []

    def attempts(self) -> list[JobStatus]:
        """Every attempt's status on the server, oldest first (one for a job never retried).

        Raises:
            JobNotFound: the job is gone. JobberError: the server is unreachable.
        """
        data = self._session.transport.json("GET", f"{self._path()}?attempts=1", job_id=self.id)
        return [JobStatus.from_dict({**attempt, "backend": "remote"}) for attempt in data.get("attempts") or [data["status"]]]

    def read_result(self) -> tuple[dict[str, Any], bytes]:
        """The ended function job's outcome from the server: (``result.json``'s object, the
        pickle's bytes; a large one's download, open), unpickled by nobody here
        (``Job.result`` does, in this process, reading a download as it arrives).

        Raises:
            JobError: a command job, a job not ended, or one that left no result (the
                server's sentence says how it ended). JobNotFound: the job is gone.
        """
        transport = self._session.transport
        meta = transport.json("GET", self._path("/result"), job_id=self.id)
        size = int(meta.get("size") or 0)
        if not size:
            return meta, b""
        if size >= STREAM_FROM:  # unpickled as it arrives (load_result reads and closes it)
            return meta, open_result(transport, self._path("/result/pickle"), size, self.id, self._session.timeout)
        # A second per MiB on top of the usual wait: a large result takes a while to come.
        status, _headers, data = transport.request("GET", self._path("/result/pickle"),
                                                   timeout=self._session.timeout + size / (1 << 20))
        if status != 200:
            raise transport.api_error(status, data, self.id)
        if len(data) != size:
            raise JobError(f"job {self.id}'s result came {len(data)} bytes long, not the {size} its description "
                           "says: ask again (job.result())", job_id=self.id)
        return meta, data

    def result_meta(self) -> dict[str, Any] | None:
        """The function job's ``result.json`` object from the server (never the pickle), or
        None: a command job, a job not ended, or one that left no result.

        Raises:
            JobNotFound: the job is gone. JobberError: the server is unreachable.
        """
        try:
            meta = self._session.transport.json("GET", self._path("/result"), job_id=self.id)
        except JobNotFound:
            raise
        except JobError:  # 409: no result (yet), or a command job
            return None
        return {key: value for key, value in meta.items() if key != "id"}

    def remove(self) -> None:
        """Remove the job on the server (ended jobs only).

        Raises:
            JobError: the job is running, or the server does not remove jobs.
        """
        self._session.transport.json("DELETE", self._path(), job_id=self.job_id)

    def tail(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """``Job.tail``: a request a MiB of ``buf`` (the server's largest read)."""
        view = tail_view(buf, offset)
        copied = 0
        query: dict[str, int] = {"tail": -offset} if offset < 0 else {"offset": offset}
        while copied < len(view):
            want = min(len(view) - copied, _MAX_READ)
            status, headers, data = self._session.transport.request("GET", f"{self._path('/log')}?{urlencode({**query, 'length': want})}")
            if status != 200:
                raise self._session.transport.api_error(status, data, self.id)
            view[copied : copied + len(data)] = data
            copied += len(data)
            if len(data) < want:
                break
            query = {"offset": int(headers.get("X-Jobber-Offset", 0)) + len(data)}
        return copied

    def follow(self, offset: int = 0, heartbeat: float | None = None) -> Iterator[bytes]:
        """Yield the log as it is written, until the job has ended and the log is drained.

        Streams: nothing is buffered beyond one chunk. If the server goes away (a restart),
        the follow reconnects and resumes where it was for up to the session's timeout.

        Args:
            offset: where to start; negative counts back from the current end.
            heartbeat: if set, also yield ``b""`` after this many quiet seconds (the
                stream is then read by a helper thread; closing the iterator stops it).

        Yields:
            Chunks of bytes, exactly as the job wrote them.

        Raises:
            JobNotFound: no such job. JobberError: the server stayed away.
        """
        if heartbeat is None:
            return self._follow(offset)
        return self._follow_with_heartbeat(offset, heartbeat)

    def _follow_with_heartbeat(self, offset: int, heartbeat: float) -> Iterator[bytes]:
        # An HTTP response cannot be read with a timeout and then read again (SocketIO
        # refuses reads after a timeout), so a thread reads and a bounded queue hands over.
        chunks: queue.Queue = queue.Queue(maxsize=16)
        stop = threading.Event()
        live: dict[str, http.client.HTTPSConnection] = {}

        def pump() -> None:
            try:
                for chunk in self._follow(offset, stop, live):
                    while not stop.is_set():
                        try:
                            chunks.put(chunk, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                chunks.put(_END)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
                chunks.put(err)

        reader = threading.Thread(target=pump, name=f"jobber-follow-{self.id}", daemon=True)
        reader.start()
        try:
            while True:
                try:
                    item = chunks.get(timeout=heartbeat)
                except queue.Empty:
                    yield b""
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            conn = live.get("conn")
            if conn is not None and conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in read1
                except OSError:
                    pass

    def _follow(self, offset: int, stop: threading.Event | None = None,
                live: dict[str, http.client.HTTPSConnection] | None = None) -> Iterator[bytes]:
        session = self._session
        position: int | None = None
        # follow(0) reads the job from its first byte, across attempts (as Job.follow(0)):
        # a resume asks for that again and drops what was read, since a later attempt's
        # offsets do not count the earlier attempts' bytes.
        whole_job = offset == 0
        skip = 0
        lost_since: float | None = None
        pause = 0.05
        while True:
            if position is not None:
                query: dict[str, Any] = {"follow": 1, "offset": 0 if whole_job else position}
                skip = position if whole_job else 0
            else:
                query = {"follow": 1, **({"tail": -offset} if offset < 0 else {"offset": offset})}
            if stop is not None and stop.is_set():
                return
            try:
                conn, response = session.transport.stream(self._path("/log"), query)
                if live is not None:
                    live["conn"] = conn
            except (JobNotFound, CertificateError, JobError):
                raise
            except JobberError:
                if lost_since is None:
                    raise  # the first connection: report it as it is
                if time.monotonic() - lost_since > session.timeout:
                    raise JobberError(
                        f"lost the jobber server at {session.url} while following job {self.id}, and it did not "
                        f"come back within {session.timeout:g} s; follow again from offset {position}") from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            try:
                if position is None:
                    position = int(response.headers.get("X-Jobber-Offset", max(offset, 0)))
                lost_since, pause = None, 0.05
                while True:
                    try:
                        chunk = response.read1(_READ_CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Lost() from err
                    if not chunk:
                        return  # the stream's proper end: the job ended and the log is drained
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                        if not chunk:
                            continue
                    position += len(chunk)
                    yield chunk
            except _Lost:
                lost_since = time.monotonic()
            finally:
                conn.close()


_END = object()


def _status(data: dict[str, Any]) -> JobStatus:
    return JobStatus.from_dict({**data["status"], "backend": "remote"})
