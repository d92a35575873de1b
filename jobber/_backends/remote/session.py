"""The remote session: a jobber server's jobs, behaving like local ones (standard library only).

    session = jobber.connect("https://jobs.example.org:8443", cert="me.pem", key="me.key", ca="ca.pem")
    job = session.new_job("python train.py", jobber.Limits(memory="2G"))
    job.start()
    for chunk in job.follow():
        ...

``RemoteSession`` has the job methods of a ``Certificate``, and its jobs are ``jobber.Job``
instances holding a ``RemoteBackend``, with the same exceptions, so the CLI and the
magics need no special cases.
This module is the one boundary where network and TLS errors (``OSError``, ``ssl.SSLError``,
``http.client.HTTPException``) become ``JobberError`` naming the server and the cause, and
where the server's JSON errors become jobber's exception classes again.

Connections are kept alive, one per thread; each follow has its own, and resumes from its
offset when the server restarts (jobs outlive the server).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jobber._backends.context import check_env
from jobber._backends.remote.backend import RemoteBackend
from jobber._errors import CertificateError, JobberError, JobError, JobNotFound, LimitError
from jobber._jobs.job import Job
from jobber._jobs.options import check_lifecycle
from jobber._jobs.queues import check_after, check_queue
from jobber._jobs.store import validate_job_id
from jobber._limits import Limits

__all__ = ["RemoteSession"]

_IDLE_REUSE_S = 20.0  # the server closes idle connections after 75 s: never race it
_PAGE = 500  # jobs per listing request (the server allows up to 1000)
# What Job.rerun may change remotely (cwd and backend options are the server's to choose).
_RERUN_FIELDS = ("command", "limits", "env", "label", "timeout", "log_max", "retries", "retry_on", "oom_growth")
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

    def get_job(self, job_id: int) -> Job:
        """One job of this identity.

        Raises:
            JobNotFound: the identity has no such job (another identity's look the same).
        """
        job_id = validate_job_id(job_id)
        return Job(RemoteBackend(self, self._json("GET", f"/v1/jobs/{job_id}", job_id=job_id)))

    def new_job(self, command: str, limits: Limits | None = None, *, env: Mapping[str, str] | None = None,
                cwd: str | None = None, label: str | None = None, timeout: float | str | None = None,
                log_max: int | str | None = None, retries: int = 0, retry_on: Sequence[str] = ("failed",),
                oom_growth: Any = None, queue: str | None = None, after: Any = None, **options: Any) -> Job:
        """Create a job on the server (state "created"); ``start()`` starts it.

        Args:
            command: the shell command.
            limits: resource limits.
            env: environment variables to set for the job on the server.
            cwd: not available remotely: the server's operator chooses where jobs run.
            label, timeout, log_max, retries, retry_on, oom_growth: as for a local job
                (``Certificate.new_job``); the server enforces them.
            queue: one of this certificate's queues on the server (``set_queue``).
            after: ids (or Jobs) of this certificate's jobs on the server that must end
                first: alone they must exit 0, ``(id, "any")`` may end any way.
            **options: backend options; a server runs its jobs on its own host, so only
                ``backend="local"`` is accepted remotely.

        Raises:
            JobError: the command is empty or has a NUL byte, a bad ``env`` or lifecycle
                option, ``cwd`` given, or options other than the local backend.
            LimitError: a bad ``log_max``, or the server refuses a limit.
        """
        _check_remote_options(options, cwd)
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        lifecycle = {"label": label, "timeout": timeout, "log_max": log_max, "retries": retries, "retry_on": retry_on,
                     "oom_growth": oom_growth}
        body: dict[str, Any] = {"command": command, "limits": None if limits is None else limits.to_dict(), "start": False,
                                **_lifecycle_body(lifecycle)}
        if env:
            body["env"] = check_env(env)
        if queue is not None:
            body["queue"] = check_queue(queue)
        if after is not None:
            body["after"] = check_after(after)
        return Job(RemoteBackend(self, self._json("POST", "/v1/jobs", body)))

    def set_queue(self, name: str, *, parallel: int | None = None, memory: int | str | None = None,
                  cpus: float | None = None, gpus: int | None = None) -> dict[str, Any]:
        """Set one of this certificate's queues on the server (as ``Certificate.set_queue``).

        Returns:
            The queue's settings now, with its jobs ``running`` and ``waiting``.

        Raises:
            JobError: a malformed name or value (the server's message).
        """
        body = {key: value for key, value in (("parallel", parallel), ("memory", memory), ("cpus", cpus),
                                              ("gpus", gpus)) if value is not None}
        return dict(self._json("PUT", f"/v1/queues/{quote(check_queue(name), safe='')}", body))

    def queues(self) -> dict[str, dict[str, Any]]:
        """This certificate's queues on the server: name -> settings, ``running``, ``waiting``."""
        return dict(self._json("GET", "/v1/queues")["queues"])

    def sweep(self, command_template: str, **params: Any) -> Any:
        """One job per combination of the parameters' values, on the server (as
        ``Certificate.sweep``): a list of Job with ``.params``, ``.table()``, ``.stop()``.

        Raises:
            JobError: no parameters, one the template does not use, or a job the server
                refuses (then the ones already made are removed).
        """
        from jobber._jobs.sweeps import sweep

        return sweep(self, command_template, **params)

    def get_jobs(self, label: str | None = None) -> list[Job]:
        """Every job of this identity on the server, by id (with this label, if given).

        Raises:
            JobberError: the server is unreachable or failed.
        """
        jobs = []
        after: int | None = 0
        while after is not None:  # the server answers a page at a time
            query: dict[str, Any] = {"limit": _PAGE, "after": after, **({} if label is None else {"label": label})}
            page = self._json("GET", f"/v1/jobs?{urlencode(query)}")
            jobs += [Job(RemoteBackend(self, data)) for data in page["jobs"]]
            after = page.get("next_after")
        return jobs

    def find_job(self, ref: int | str) -> Job:
        """The job with this id, or the newest job with this label.

        Raises:
            JobNotFound: no job has that id or label.
        """
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            return self.get_job(ref)
        if not isinstance(ref, str) or not ref.strip():
            raise JobNotFound(-1, f"{ref!r} is neither a job id nor a label")
        labelled = self.get_jobs(label=ref.strip())
        if not labelled:
            raise JobNotFound(-1, f"no job is labelled {ref.strip()!r} on {self.url}")
        return labelled[-1]

    def rerun(self, job: Job, **overrides: Any) -> Job:
        """A new job on the server like ``job``, with ``overrides`` applied (``Job.rerun``).

        The server copies the job's command, limits, environment and lifecycle options,
        changes those given, and records ``rerun_of``; the original is untouched.

        Raises:
            JobError: an override the server refuses, or one it does not take remotely
                (``cwd``, backend ``options``).
        """
        unknown = set(overrides) - {*_RERUN_FIELDS, "cwd", "options"}
        if unknown:
            raise JobError(f"rerun: {', '.join(sorted(unknown))} cannot be changed; change "
                           f"{', '.join(sorted(_RERUN_FIELDS))}", job_id=job.id)
        _check_remote_options(overrides.pop("options", None) or {}, overrides.pop("cwd", None))
        body: dict[str, Any] = {"rerun_of": job.id, "start": False}
        if "command" in overrides:
            body["command"] = overrides["command"]
        if "limits" in overrides:
            limits = overrides["limits"]
            if limits is not None and not isinstance(limits, Limits):
                raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}", job_id=job.id)
            body["limits"] = None if limits is None else limits.to_dict()
        if "env" in overrides:
            body["env"] = check_env(overrides["env"]) if overrides["env"] else None
        body.update(_lifecycle_body({k: v for k, v in overrides.items() if k in _LIFECYCLE}, defaults_too=True))
        return Job(RemoteBackend(self, self._json("POST", "/v1/jobs", body, job_id=job.id)))

    def prune(self, *, older_than: float | str | None = None, states: str | Iterable[str] | None = None,
              keep_last: int | None = None, dry_run: bool = False) -> list[int]:
        """Remove ended jobs on the server (their directories and logs); running jobs are never touched.

        Args:
            older_than: only jobs that ended at least this long ago: seconds or "7d", "12h".
            states: only jobs in these final states, e.g. ("exited", "failed").
            keep_last: of the matching jobs, keep the newest this many.
            dry_run: only say which would be removed.

        Returns:
            The ids removed (or that would be), oldest first.

        Raises:
            JobError: a malformed argument.
        """
        if isinstance(states, (str, type(None))):
            chosen: Any = states
        elif isinstance(states, Iterable):
            chosen = list(states)
        else:
            raise JobError(f"states {states!r}: give final states, e.g. ('exited', 'failed')")
        body = {"older_than": older_than, "states": chosen, "keep_last": keep_last, "dry_run": dry_run}
        try:
            json.dumps(body)
        except (TypeError, ValueError):
            raise JobError(f"prune: {body!r} holds a value that is neither a number nor text: give older_than as "
                           "seconds or '7d', states as names, keep_last as a whole number") from None
        return list(self._json("POST", "/v1/jobs:prune", body)["removed"])

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
        if status == 429:  # a cap of this certificate on the server: the message names it and its value
            return JobError(message, job_id=job_id)
        if kind == "JobError" or status in (409, 413):
            return JobError(message, job_id=job_id)
        return JobberError(message)


_LIFECYCLE = ("label", "timeout", "log_max", "retries", "retry_on", "oom_growth")


def _check_remote_options(options: Mapping[str, Any], cwd: Any) -> None:
    """Refuse what a server chooses itself: where jobs run and in which directory."""
    if options and dict(options) != {"backend": "local"}:
        raise JobError(
            f"a jobber server runs jobs on its own host: {', '.join(sorted(options))} cannot be used "
            "remotely (run Slurm jobs from a host with sbatch)"
        )
    if cwd is not None:
        raise JobError("cwd is a directory on the server, chosen by its operator (jobber serve --job-user): "
                       "leave it out, or cd inside the command (`cd data && python train.py`)")


def _lifecycle_body(given: dict[str, Any], *, defaults_too: bool = False) -> dict[str, Any]:
    """The lifecycle options as JSON fields, each checked here first with the local rules
    (so a malformed one fails as it would locally, before any request); null stands for
    the default. ``defaults_too``: keep the fields given their default value (a re-run's
    overrides), else leave them out."""
    body: dict[str, Any] = {}
    for name, value in given.items():
        if value is not None:
            check_lifecycle(**{name: value})
        if isinstance(value, (tuple, list, set, frozenset)):
            value = list(value)
        default = value is None or (name == "retries" and value == 0) or (name == "retry_on" and value in ("failed", ["failed"]))
        if defaults_too or not default:
            body[name] = value
    return body


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

