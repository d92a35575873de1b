"""The remote session: a jobber server's jobs, behaving like local ones (standard library only).

    session = jobber.connect("https://jobs.example.org:8443", cert="me.pem", key="me.key", ca="ca.pem")
    job = session.new_job("python train.py", jobber.Limits(memory="2G"))
    job.start()
    for chunk in job.follow():
        ...

``RemoteSession`` has the job methods of a ``Certificate`` and ``RemoteJob`` those of a
``Job``, with the same exceptions, so the CLI and the magics need no special cases.
This module is the one boundary where network and TLS errors (``OSError``, ``ssl.SSLError``,
``http.client.HTTPException``) become ``JobberError`` naming the server and the cause, and
where the server's JSON errors become jobber's exception classes again.

Connections are kept alive, one per thread; each follow has its own, and resumes from its
offset when the server restarts (jobs outlive the server).
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from jobber._errors import CertificateError, JobberError, JobError, JobNotFound, LimitError
from jobber._job import JobStatus
from jobber._limits import Limits
from jobber._storage import validate_job_id

__all__ = ["RemoteSession", "RemoteJob"]

_READ_CHUNK = 256 * 1024
_MAX_READ = 1 << 20  # the server's largest read (MAX_READ_BYTES)
_WAIT_SLICE_S = 30.0  # one long poll; the server allows up to 60
_IDLE_REUSE_S = 20.0  # the server closes idle connections after 75 s: never race it
# The server's TLS alerts when it refuses the client certificate, and what they mean.
_TLS_REFUSALS = {
    "ALERT_CERTIFICATE_REQUIRED": "it requires a client certificate",
    "ALERT_CERTIFICATE_EXPIRED": "the certificate (or its CA) has expired",
    "ALERT_UNKNOWN_CA": "neither the certificate nor its issuer is in the server's pool",
    "ALERT_UNSUPPORTED_CERTIFICATE": "the certificate is not for client authentication (keyUsage/extendedKeyUsage)",
    "ALERT_BAD_CERTIFICATE": "the certificate is not valid now, or its key or signature is too weak",
    "ALERT_CERTIFICATE_UNKNOWN": "the certificate could not be verified",
    "ALERT_CERTIFICATE_REVOKED": "the certificate was revoked",
    "ALERT_DECRYPT_ERROR": "the certificate's signature does not verify",
    "ALERT_ACCESS_DENIED": "access denied",
    "ALERT_HANDSHAKE_FAILURE": "the TLS handshake failed",
}


class _Lost(Exception):
    """The connection broke after the request was sent (a follow may resume)."""


class RemoteSession:
    """A jobber server, reached over HTTPS with a client certificate (TLS 1.3 only).

    Use ``jobber.connect``. The server's identity of the caller is the client
    certificate's SHA-256: the session sees and acts on that certificate's jobs only.

    Args:
        url: ``https://HOST:PORT`` (a path prefix is kept, for servers behind a proxy).
        cert: the client certificate (PEM file; intermediates may follow it).
        key: its private key (PEM file).
        ca: the CA file that signed the server's certificate (default: the system's CAs).
        timeout: seconds to wait for the server on each request.

    Raises:
        CertificateError: the certificate or key cannot be loaded.
        JobberError: the server is unreachable, does not speak TLS 1.3, or refuses the
            certificate.
    """

    def __init__(self, url: str, *, cert: str, key: str, ca: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise JobberError(f"{url!r} is not an https URL: use https://HOST:PORT (the server only speaks HTTPS)")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._host = parts.hostname
        try:
            self._port = parts.port or 443
        except ValueError as err:
            raise JobberError(f"{url!r}: {err}") from None
        self._prefix = parts.path.rstrip("/")
        self._cert_path = str(cert)
        self._context = _client_context(str(cert), str(key), None if ca is None else str(ca))
        self._local = threading.local()
        with open(cert, "rb") as file:  # readable: load_cert_chain just read it
            self._pem = file.read()
        identity = self._json("GET", "/v1/identity")
        self._hash = identity["hash"]
        self.subject: str = identity["subject"]

    def __repr__(self) -> str:
        return f"<jobber.RemoteSession {self.url} as {self.subject}>"

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's kept-alive connection (others close when their threads end)."""
        self._drop()

    def hash(self) -> str:
        """The SHA-256 of the client certificate, as the server computed it: the identity."""
        return self._hash

    def bytes(self) -> bytes:
        """The client certificate file's PEM."""
        return self._pem

    def get_jobs(self) -> list[RemoteJob]:
        """Every job of this identity on the server, by id.

        Raises:
            JobberError: the server is unreachable or failed.
        """
        return [RemoteJob(self, data) for data in self._json("GET", "/v1/jobs")["jobs"]]

    def get_job(self, job_id: int) -> RemoteJob:
        """One job of this identity.

        Raises:
            JobNotFound: the identity has no such job (another identity's look the same).
        """
        job_id = validate_job_id(job_id)
        return RemoteJob(self, self._json("GET", f"/v1/jobs/{job_id}", job_id=job_id))

    def new_job(self, command: str, limits: Limits | None = None, **options: Any) -> RemoteJob:
        """Create a job on the server (state "created"); ``start()`` starts it.

        Args:
            command: the shell command.
            limits: resource limits.
            **options: backend options; a server runs its jobs on its own host, so only
                ``backend="local"`` is accepted remotely.

        Raises:
            JobError: the command is empty or has a NUL byte, or options other than the
                local backend were given.
            LimitError: the server refuses a limit.
        """
        if options and options != {"backend": "local"}:
            raise JobError(
                f"a jobber server runs jobs on its own host: {', '.join(sorted(options))} cannot be used "
                "remotely (run Slurm jobs from a host with sbatch)"
            )
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        body = {"command": command, "limits": None if limits is None else limits.to_dict(), "start": False}
        return RemoteJob(self, self._json("POST", "/v1/jobs", body))

    def generate_job_id(self) -> int:
        """Not offered remotely: ``new_job`` reserves the id and creates the job at once.

        Raises:
            JobError: always.
        """
        raise JobError("generate_job_id is not supported remotely: new_job(command) reserves an id and creates the job in one step")

    def _json(self, method: str, path: str, body: Any = None, *, job_id: int | None = None,
              timeout: float | None = None) -> Any:
        status, _headers, data = self._request(method, path, body, timeout=timeout)
        if status >= 300:
            raise self._api_error(status, data, job_id)
        try:
            return json.loads(data)
        except ValueError as err:
            raise JobberError(f"the jobber server at {self.url} answered {method} {path} with something other than JSON") from err

    def _request(self, method: str, path: str, body: Any = None, *,
                 timeout: float | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn, reused = self._connection()
            conn.timeout = timeout or self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(method, self._prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as err:
                self._drop()
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection as we reused it
                raise self._network_error(err, fresh=not reused) from err
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                raise self._network_error(err, fresh=not reused) from err
            if response.will_close:
                self._drop()
            else:
                self._local.used = time.monotonic()
            return response.status, response.headers, data
        raise AssertionError("unreachable")

    def _connection(self) -> tuple[http.client.HTTPSConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.used < _IDLE_REUSE_S:
            return conn, True
        self._drop()
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._context, timeout=self.timeout)
        self._local.conn, self._local.used = conn, time.monotonic()
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _stream(self, path: str, query: dict[str, Any]) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        """Open a follow on its own connection; the caller closes it."""
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._context, timeout=self.timeout)
        try:
            conn.request("GET", f"{self._prefix}{path}?{urlencode(query)}", headers={"Accept": "application/octet-stream"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise self._network_error(err, fresh=True) from err
        if response.status != 200:
            data = response.read()
            conn.close()
            raise self._api_error(response.status, data, None)
        # A quiet job may print nothing for hours: block without a timeout, and let TCP
        # keepalive notice a server that vanished without closing the connection.
        sock = conn.sock
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        return conn, response

    def _network_error(self, err: BaseException, *, fresh: bool) -> JobberError:
        where = f"the jobber server at {self.url}"
        if isinstance(err, ConnectionRefusedError):
            return JobberError(f"cannot connect to {where}: connection refused (is `jobber serve` running there, on that port?)")
        if isinstance(err, socket.gaierror):
            return JobberError(f"cannot find {where}: {err.strerror} (check the host name)")
        if isinstance(err, (TimeoutError, socket.timeout)):
            return JobberError(f"{where} did not answer within {self.timeout:g} s (timeout): is it overloaded, or the network down?")
        if isinstance(err, ssl.SSLCertVerificationError):
            return JobberError(f"cannot verify the certificate of {where}: {err.verify_message}; pass ca= (--ca, "
                               "$JOBBER_CA) the CA file that signed the server's certificate")
        if isinstance(err, ssl.SSLError):
            reason = err.reason or str(err)
            meaning = next((text for alert, text in _TLS_REFUSALS.items() if alert in reason), None)
            if meaning is not None:
                return JobberError(self._refused(f"{meaning} (TLS alert {reason})"))
            if "PROTOCOL_VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason:
                return JobberError(f"{where} does not speak TLS 1.3 ({reason}): is it a jobber server?")
            if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
                return JobberError(f"{where} does not speak TLS ({reason}): is it plain http, or not a jobber server?")
            if isinstance(err, ssl.SSLEOFError) and fresh:
                return JobberError(self._refused("it closed the connection during the TLS handshake"))
            return JobberError(f"TLS with {where} failed: {reason}")
        if fresh and isinstance(err, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
            return JobberError(self._refused("it closed the connection before answering"))
        if isinstance(err, OSError):
            return JobberError(f"cannot talk to {where}: {err.strerror or err}")
        return JobberError(f"{where} broke the connection: {type(err).__name__} {err}")

    def _refused(self, how: str) -> str:
        return (f"the jobber server at {self.url} does not accept this certificate ({self._cert_path}): {how}. "
                "Check that its CA (or the certificate itself) is in the server's pool and that it has not expired")

    def _api_error(self, status: int, data: bytes, job_id: int | None) -> JobberError:
        try:
            body = json.loads(data)
            message, kind = str(body["error"]), body.get("type")
            job_id = body.get("job_id", job_id)
        except (ValueError, KeyError, TypeError):
            message, kind = f"HTTP {status}: {data[:200].decode(errors='replace')}", None
        if status >= 500:
            return JobberError(f"the jobber server at {self.url} failed (HTTP {status}): {message}")
        if kind == "JobNotFound" or status == 404 and kind is None:
            return JobNotFound(job_id if job_id is not None else -1, message)
        if kind == "LimitError":
            return LimitError(message, job_id=job_id)
        if kind == "CertificateError" or status == 403:
            return CertificateError(message)
        if kind == "JobError" or status in (409, 413):
            return JobError(message, job_id=job_id)
        return JobberError(message)


class RemoteJob:
    """A job on a jobber server; the same methods and exceptions as ``jobber.Job``."""

    def __init__(self, session: RemoteSession, data: dict[str, Any]) -> None:
        self._session = session
        self.id: int = data["id"]
        self.command: str = data["command"]
        self.limits = Limits.from_dict(data.get("limits") or {})

    def __repr__(self) -> str:
        return f"<jobber.RemoteJob {self.id} {self.command!r} on {self._session.url}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteJob) and (other._session.url, other.owner, other.id) == (
            self._session.url, self.owner, self.id)

    def __hash__(self) -> int:
        return hash((self._session.url, self.owner, self.id))

    @property
    def owner(self) -> str:
        """The SHA-256 of the owner's certificate."""
        return self._session.hash()

    def _path(self, action: str = "") -> str:
        return f"/v1/jobs/{self.id}{action}"

    def start(self, *, user: str | None = None, cwd: str | None = None) -> None:
        """Start the job on the server.

        Args:
            user: not available remotely (the server's operator picks it: ``--job-user``).
            cwd: not available remotely either.

        Raises:
            JobError: already started, ``user``/``cwd`` given, or the server could not start it.
        """
        if user is not None or cwd is not None:
            raise JobError("user and cwd are chosen by the server's operator (jobber serve --job-user), "
                           "not by the client: leave them out", job_id=self.id)
        self._session._json("POST", self._path("/start"), {}, job_id=self.id)

    def status(self) -> JobStatus:
        """The job's state on the server (``backend`` is "remote").

        Raises:
            JobNotFound: the job is gone. JobberError: the server is unreachable.
        """
        return _status(self._session._json("GET", self._path(), job_id=self.id))

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the whole job: SIGTERM, then SIGKILL after ``grace`` seconds.

        Returns:
            The final status.

        Raises:
            JobError: the job was never started, or could not be killed.
        """
        timeout = self._session.timeout + float(grace) + 10.0  # the server's SIGKILL wait
        return _status(self._session._json("POST", self._path("/stop"), {"grace": grace}, job_id=self.id, timeout=timeout))

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job has ended, or ``timeout`` seconds have passed.

        Returns:
            The status: final, or still "running"/"created" if the timeout came first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE_S if deadline is None else max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))
            data = self._session._json("GET", f"{self._path()}?wait={left:.3f}", job_id=self.id,
                                       timeout=self._session.timeout + left)
            status = _status(data)
            if status.ended or (deadline is not None and time.monotonic() >= deadline):
                return status

    def tail(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Copy log bytes from ``offset`` into ``buf`` (readinto semantics).

        Args:
            buf: where to copy; at most ``len(buf)`` bytes are copied.
            offset: byte offset in the log; negative counts back from the current end.

        Returns:
            The number of bytes copied.
        """
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise JobError(f"offset must be an int, not {type(offset).__name__}")
        try:
            view = memoryview(buf).cast("B")
        except TypeError as err:
            raise JobError(f"buf must be a writable buffer such as a bytearray, not {type(buf).__name__}") from err
        if view.readonly:
            raise JobError("buf is read-only: pass a bytearray or a writable memoryview")
        copied = 0
        query: dict[str, int] = {"tail": -offset} if offset < 0 else {"offset": offset}
        while copied < len(view):
            want = min(len(view) - copied, _MAX_READ)
            status, headers, data = self._session._request("GET", f"{self._path('/log')}?{urlencode({**query, 'length': want})}")
            if status != 200:
                raise self._session._api_error(status, data, self.id)
            view[copied : copied + len(data)] = data
            copied += len(data)
            if len(data) < want:
                break
            query = {"offset": int(headers.get("X-Jobber-Offset", 0)) + len(data)}
        return copied

    def follow(self, offset: int = 0, *, heartbeat: float | None = None) -> Iterator[bytes]:
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
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise JobError(f"offset must be an int, not {type(offset).__name__}")
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
        lost_since: float | None = None
        pause = 0.05
        while True:
            if position is not None:
                query: dict[str, Any] = {"follow": 1, "offset": position}
            else:
                query = {"follow": 1, **({"tail": -offset} if offset < 0 else {"offset": offset})}
            if stop is not None and stop.is_set():
                return
            try:
                conn, response = session._stream(self._path("/log"), query)
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
                    position += len(chunk)
                    yield chunk
            except _Lost:
                lost_since = time.monotonic()
            finally:
                conn.close()


_END = object()


def _status(data: dict[str, Any]) -> JobStatus:
    return JobStatus.from_dict({**data["status"], "backend": "remote"})


def _client_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as err:
        missing = err.filename or (cert if not _exists(cert) else key)
        raise CertificateError(f"cannot read {missing}: no such file", path=missing) from err
    except (ssl.SSLError, OSError) as err:
        raise CertificateError(
            f"cannot use the client certificate {cert} with the key {key}: {getattr(err, 'reason', None) or err}; "
            "pass the PEM certificate and its unencrypted private key", path=cert) from err
    try:
        if ca is not None:
            context.load_verify_locations(ca)
        else:
            context.load_default_certs()
    except FileNotFoundError as err:
        raise CertificateError(f"cannot read the server CA {ca}: no such file", path=ca) from err
    except (ssl.SSLError, OSError) as err:
        raise CertificateError(f"cannot use the server CA {ca}: {err}; pass a PEM CA certificate", path=ca) from err
    return context


def _exists(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False

