"""HTTPS to one jobber server with a client certificate: the remote client's transport.

    RemoteSession --holds--> Transport <--requests-- RemoteBackend (through its session)

``Transport`` sends requests (one kept-alive connection per thread, reopened when the
server closed it), and opens the log streams a follow reads, each on its own connection.
It is the one boundary where network and TLS errors (``OSError``, ``ssl.SSLError``,
``http.client.HTTPException``) become ``JobberError`` naming the server and the cause,
and where the server's JSON errors become jobber's exception classes again. Its public
methods are the whole seam between the remote client and the network: a test may put
any object with them in its place (as httpx tests replace a transport). Standard library
only.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import uuid
import weakref
from typing import Any
from urllib.parse import urlencode, urlsplit

from jobber._errors import CertificateError, JobberError, JobError, JobNotFound, LimitError

__all__ = ["Transport"]

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


class Transport:
    """Requests to a jobber server over HTTPS with a client certificate (TLS 1.3 only).

    Args:
        url: ``https://HOST:PORT`` (a path prefix is kept, for servers behind a proxy).
        cert: the client certificate (PEM file; intermediates may follow it).
        key: its private key (PEM file).
        ca: the CA file that signed the server's certificate (default: the system's CAs).
        timeout: seconds to wait for the server on each request.

    Raises:
        JobberError: ``url`` is not an https URL.
        CertificateError: the certificate, key or CA cannot be loaded.
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
        # Every thread's kept-alive connection, so that close() closes them all: a thread
        # that outlives the session (the executor's watcher) must not leak its socket.
        self._open: weakref.WeakSet[http.client.HTTPSConnection] = weakref.WeakSet()
        weakref.finalize(self, _close_all, self._open)  # a session dropped unclosed

    def json(self, method: str, path: str, body: Any = None, *, job_id: int | None = None,
             timeout: float | None = None) -> Any:
        """One request whose answer is JSON.

        Args:
            method: the HTTP method.
            path: the API path and query, e.g. ``/v1/jobs/7``.
            body: sent as JSON, if not None.
            job_id: the job the request is about, for the error when the answer does not name it.
            timeout: seconds to wait for this answer (default: the transport's timeout).

        Returns:
            The decoded answer.

        Raises:
            JobberError: the server cannot be reached or answers with something other than
                JSON; its error answers as jobber's classes (see `api_error`).
        """
        status, _headers, data = self.request(method, path, body, timeout=timeout)
        if status >= 300:
            raise self.api_error(status, data, job_id)
        try:
            return json.loads(data)
        except ValueError as err:
            raise JobberError(f"the jobber server at {self.url} answered {method} {path} with something other than JSON") from err

    def multipart(self, path: str, parts: list[tuple[str, str, bytes]], *, timeout: float | None = None) -> Any:
        """A POST of a multipart/form-data body whose answer is JSON (a function job's
        fields and call): each part's bytes are sent as they are, never copied into one.

        Args:
            path: the API path.
            parts: (name, content type, bytes) of each part, in order.
            timeout: seconds to wait for the answer.

        Returns:
            The decoded answer.

        Raises:
            JobberError: as `json`.
        """
        boundary = uuid.uuid4().hex
        while any(boundary.encode() in data for _name, _kind, data in parts):
            boundary = uuid.uuid4().hex
        pieces: list[bytes] = []
        for name, kind, data in parts:
            pieces += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                       f"Content-Type: {kind}\r\n\r\n".encode(), data, b"\r\n"]
        pieces.append(f"--{boundary}--\r\n".encode())
        status, _headers, data = self.request("POST", path, timeout=timeout,
                                              content=(f"multipart/form-data; boundary={boundary}", pieces))
        if status >= 300:
            raise self.api_error(status, data, None)
        try:
            return json.loads(data)
        except ValueError as err:
            raise JobberError(f"the jobber server at {self.url} answered POST {path} with something other than JSON") from err

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
                content: tuple[str, list[bytes]] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on this thread's kept-alive connection (retried once on a fresh one
        when the server closed it as it was reused).

        Args:
            method: the HTTP method.
            path: the API path and query.
            body: sent as JSON, if not None.
            timeout: seconds to wait for the answer (default: the transport's timeout).
            content: instead of ``body``, (its content type, the pieces of a body), sent in turn.

        Returns:
            The status, the headers and the body, whatever the status.

        Raises:
            JobberError: the server cannot be reached, or the connection broke.
        """
        payload: Any = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if content is not None:
            headers["Content-Type"], payload = content
            headers["Content-Length"] = str(sum(len(piece) for piece in payload))
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

    def stream(self, path: str, query: dict[str, Any]) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        """Open a follow on its own connection, read without a timeout; the caller closes it.

        Args:
            path: the API path, e.g. ``/v1/jobs/7/log``.
            query: its query parameters.

        Returns:
            The connection and the response, whose body is the stream.

        Raises:
            JobberError: the server cannot be reached; its error answers as jobber's classes.
        """
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
            raise self.api_error(response.status, data, None)
        # A quiet job may print nothing for hours: block without a timeout, and let TCP
        # keepalive notice a server that vanished without closing the connection.
        sock = conn.sock
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        return conn, response

    def api_error(self, status: int, data: bytes, job_id: int | None) -> JobberError:
        """The exception a server's error answer stands for (its JSON ``type``, else its status).

        Args:
            status: the HTTP status.
            data: the answer's body.
            job_id: the job the request was about, when the answer does not name one.

        Returns:
            The error, to raise: ``JobNotFound``, ``LimitError``, ``CertificateError``,
            ``JobError``, or ``JobberError`` (a 5xx says the server failed).
        """
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
        if status == 429:  # a cap of this certificate on the server: the message names it and its value
            return JobError(message, job_id=job_id)
        if kind == "JobError" or status in (409, 413):
            return JobError(message, job_id=job_id)
        return JobberError(message)

    def close(self) -> None:
        """Close every thread's kept-alive connection (a thread that asks again opens a new one)."""
        self._drop()
        _close_all(self._open)

    def _connection(self) -> tuple[http.client.HTTPSConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.used < _IDLE_REUSE_S:
            return conn, True
        self._drop()
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._context, timeout=self.timeout)
        self._local.conn, self._local.used = conn, time.monotonic()
        self._open.add(conn)
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

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


def _close_all(connections: weakref.WeakSet[http.client.HTTPSConnection]) -> None:
    for conn in list(connections):
        conn.close()
