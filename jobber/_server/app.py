"""The jobber server: the jobs API over HTTPS, TLS 1.3 only, client certificate required.

    serve("127.0.0.1", 8443, "server.pem", "server.key", root="~/.jobber")

Who calls is the SHA-256 of the client certificate, checked by the TLS handshake and
again by ``Certificate.from_pem`` on every request (``tls.py``); a caller sees and
acts on ``JobStore(hash)`` only (``routes.py``). Every failure is answered as JSON
``{"error": ...}``; an unexpected one is logged whole and answered as a generic 500.

Jobs live on disk (``$JOBBER_JOBS_DIR``), never in the server: a restarted server sees
every job again, running or not, and followers resume from an offset.

What a client may hold is bounded: connections and their deadlines (``connections.py``),
each certificate's jobs and requests in flight, and its turn in the worker threads
(``quotas.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from jobber._backends.context import DEFAULT_NOFILE, job_nofile
from jobber._certificates import default_root
from jobber._errors import CertificateError, JobberError
from jobber._server.connection_limits import ConnectionLimits, fit_limits, raise_nofile_limit
from jobber._server.connections import ConnectionGate
from jobber._server.errors import ApiError, error_response, public_message
from jobber._server.framing import close_after_broken_body, handler_factory
from jobber._server.interpreters import Interpreters, allowed_from_env
from jobber._server.log_limits import LogRateLimit, exception_handler
from jobber._server.openapi import MAX_BODY_BYTES
from jobber._server.over_tls import request_began, request_ended
from jobber._server.quotas import QuotaExceeded, Quotas
from jobber._server.routes import add_routes
from jobber._server.state import CONFIG, HUB, VERDICTS, ServerConfig
from jobber._server.tenancy import Tenancy, resolve_job_user, resolve_tenancy
from jobber._server.tls import (
    Identity,
    Verdicts,
    make_ssl_context,
    peer_chain_pem,
    reload_ssl_context,
    send_tls_alerts,
    unverified_identity,
)
from jobber._server.watch import WatchHub

__all__ = ["serve", "make_app", "make_ssl_context", "resolve_job_user"]

log = logging.getLogger("jobber.server")

# In-flight requests get this long to finish on SIGTERM; followers are cut (their clients
# resume from an offset against the next server).
_SHUTDOWN_GRACE_S = 2.0
_SWITCH_INTERVAL_S = 0.001
# The one line per request: never rate-limited (LogRateLimit), unlike the rest.
_REQUEST_LINE = '%s "%s %s" %s %.1fms'


@web.middleware
async def _log_and_contain(request: web.Request, handler: Any) -> web.StreamResponse:
    """Log one line per request; turn every failure into a JSON error, never a traceback."""
    started = time.perf_counter()
    status: int | str = "-"
    request_began(request.transport)  # its head is in: the connection's header deadline is off
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as err:
        status = err.status
        log.debug("%s %s: %s", request.method, request.path, err)
        return error_response(err.status, str(err), err.kind, err.job_id, err.headers, err.extra)
    except QuotaExceeded as err:
        status = 429
        return error_response(429, str(err), "JobError", extra={"quota": err.quota, "limit": err.limit},
                              headers={"Retry-After": "1"} if err.quota == "max_requests_in_flight" else None)
    except web.HTTPException as exc:
        status = exc.status
        return _http_error(request, exc)
    except asyncio.CancelledError:
        status = "client gone"
        raise
    except ConnectionError:
        status = "client gone"
        raise
    except Exception:  # noqa: BLE001 - the one catch-all: every 5xx is a bug, logged whole
        status = 500
        log.exception("bug: %s %s failed", request.method, request.raw_path[:200])
        return error_response(500, "internal server error: the server's log has the details; please report it")
    finally:
        request_ended(request.transport)
        identity = request.get("identity")
        who = identity.label if identity else "-"
        elapsed = (time.perf_counter() - started) * 1000
        # raw_path: as sent, still percent-encoded, so "%0a" cannot forge a log line.
        log.info(_REQUEST_LINE, who, request.method, request.raw_path[:200], status, elapsed)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, f"no such endpoint: {request.method} {request.path[:200]}; the API is described at GET /v1/openapi.json")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, f"{request.method} is not allowed on {request.path[:200]}; use {allowed}", headers={"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, f"the request body is over {MAX_BODY_BYTES} bytes: a job's command and limits fit in far less")
    if exc.status >= 500:
        log.error("bug: %s %s answered %s: %s", request.method, request.raw_path[:200], exc.status, exc.text)
        return error_response(500, "internal server error: the server's log has the details; please report it")
    return error_response(exc.status, exc.reason)


@web.middleware
async def _identify(request: web.Request, handler: Any) -> web.StreamResponse:
    """Run ``Certificate.from_pem`` on the client's certificate: its hash owns the jobs."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    pem = peer_chain_pem(ssl_object) if ssl_object is not None else None
    if pem is None:
        raise ApiError(403, "no client certificate: connect with --cert and --key", "CertificateError")
    try:
        cert = request.app[VERDICTS].certificate(pem)
    except CertificateError as err:
        request["identity"] = unverified_identity(ssl_object)
        log.warning("%s: refused a certificate that passed TLS: %s", request["identity"].label, err)
        raise ApiError(403, f"the server does not accept this certificate: {public_message(str(err))}",
                       "CertificateError") from None
    request["identity"] = Identity(cert.hash(), cert.subject, cert.common_name)
    return await handler(request)


@web.middleware
async def _admit(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count the request against its certificate's requests in flight (429 over the cap)."""
    tenants = request.app[CONFIG].tenants
    tenant = tenants.get(request["identity"].hash)
    tenants.enter(tenant)
    try:
        return await handler(request)
    finally:
        tenants.leave(tenant)


def make_app(root: str | os.PathLike[str] | None = None, job_user: str | None = None, *,
             single_tenant: bool = False, uid_range: str | None = None, state_dir: str | None = None,
             private_tmp: bool = True, tenancy: Tenancy | None = None, quotas: Quotas | None = None,
             body_timeout: float | None = None, pythons: list[str] | None = None) -> web.Application:
    """The aiohttp application (routes, middlewares, worker threads), without TLS.

    Args:
        root: the jobber root whose pool identifies callers (see ``default_root``).
        job_user, single_tenant, uid_range, state_dir, private_tmp: who runs the jobs
            (``tenancy.resolve_tenancy``), unless ``tenancy`` is given.
        quotas: the caps per certificate (default ``Quotas()``).
        body_timeout: seconds a request body may take to arrive (default: the
            header timeout of ``ConnectionLimits()``).
        pythons: interpreters function jobs may name by path (``interpreters.py``;
            default ``$JOBBER_SERVE_PYTHON``).

    Raises:
        JobberError: the job user is unusable, or tenants' jobs would share one uid
            without ``single_tenant``.
    """
    if tenancy is None:
        tenancy = resolve_tenancy(single_tenant=single_tenant, job_user=job_user, uid_range=uid_range,
                                  state_dir=state_dir, private_tmp=private_tmp)
    config = ServerConfig(Path(os.path.abspath(default_root(root))), tenancy)
    if quotas is not None:
        config.quotas = config.tenants.quotas = quotas
    config.body_timeout = body_timeout if body_timeout is not None else ConnectionLimits().header_timeout
    config.interpreters = Interpreters(allowed_from_env(pythons))
    app = web.Application(middlewares=[close_after_broken_body, _log_and_contain, _identify, _admit],
                          client_max_size=MAX_BODY_BYTES)
    app[CONFIG] = config
    app[VERDICTS] = Verdicts(config.root)
    add_routes(app)

    async def open_hub(app: web.Application) -> Any:
        app[HUB] = WatchHub(asyncio.get_running_loop())
        yield
        app[HUB].close()
        config.close()

    async def end_followers(app: web.Application) -> None:
        # Before aiohttp's graceful wait: a follow would hold it for its whole length.
        app[HUB].close()

    app.cleanup_ctx.append(open_hub)
    app.on_shutdown.append(end_followers)
    return app


def _nofile_note() -> str:
    """Said at start-up when jobs get fewer descriptors than jobber's default."""
    nofile = job_nofile()
    if nofile == DEFAULT_NOFILE:
        return ""
    return (f"; jobs get ulimit -n {nofile[0]} (hard {nofile[1]}), below the default {DEFAULT_NOFILE[0]} "
            f"(hard {DEFAULT_NOFILE[1]}): this server's hard limit is {nofile[1]} (ulimit -Hn, LimitNOFILE=)")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as err:
        raise JobberError(f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port or --host") from err


def _setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise JobberError(f"--log-level {level!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(LogRateLimit(exempt=(_REQUEST_LINE,)))  # no flood of one kind of line
    for name in ("jobber.server", "aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(numeric)
        logger.propagate = False


async def _run(app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext, banner: str,
               limits: ConnectionLimits | None = None) -> None:
    limits = limits or ConnectionLimits()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(exception_handler)
    # The event loop's thread gets the GIL back within 1 ms, not 5, while worker threads
    # encode a long listing: one tenant's load costs another's requests less latency.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    # handler_cancellation: a follower whose client went away is cancelled at once, which
    # closes its log and its inotify subscription.
    protocol_options = {"access_log": None, "keepalive_timeout": limits.keepalive_timeout}
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE_S,
                           **protocol_options)
    await runner.setup()
    assert runner.server is not None
    # Plain TCP: the gate admits each connection, then hands it to TLS and aiohttp's
    # protocol (which answers a request it cannot parse as JSON too: framing.py).
    gate = ConnectionGate(limits, ssl_context, handler_factory(runner.server, loop, **protocol_options), loop)
    gate.listen(sock)
    try:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_ssl_context, ssl_context)  # a renewed certificate, now
        print(banner, file=sys.stderr, flush=True)  # after the handlers: a SIGTERM at once is a clean stop
        await stop.wait()
        log.info("stopping: jobs keep running; a new server picks them up")
    finally:
        gate.close()
        await runner.cleanup()


def serve(host: str, port: int, cert: str, key: str, root: str | os.PathLike[str] | None = None,
          job_user: str | None = None, log_level: str = "info", *, single_tenant: bool = False,
          uid_range: str | None = None, state_dir: str | None = None, private_tmp: bool = True,
          limits: ConnectionLimits | None = None, quotas: Quotas | None = None,
          pythons: list[str] | None = None) -> None:
    """Serve the jobs API over HTTPS until SIGINT or SIGTERM.

    Prints ``jobber server: listening on https://HOST:PORT/ ...`` to stderr once ready
    (with the real port when ``port`` is 0), and one log line per request.

    Args:
        host: the address to listen on.
        port: the TCP port (0: any free one).
        cert: the server's certificate (PEM, with its chain).
        key: its private key (PEM, unencrypted).
        root: the jobber root; clients are checked against ``<root>/pool/*.pem``.
        job_user: with ``single_tenant``, run every job as this user (default: nobody
            when root, else the server's user).
        log_level: debug, info, warning or error.
        single_tenant: run every certificate's jobs as one user (refused otherwise
            when not root, or with ``job_user``).
        uid_range: ``"LOW-HIGH"``, the uids tenants get (default: a free range found at start).
        state_dir: the tenants' registry and homes (default /var/lib/jobber).
        private_tmp: give each job a private /tmp and /proc where the host allows.
        limits: connection caps and deadlines (default ``ConnectionLimits()``); the soft
            file descriptor limit is raised to the hard one, and the caps lowered to fit.
        quotas: the caps per certificate (default ``Quotas()``).
        pythons: interpreters function jobs may name by path (``--python``).

    Raises:
        JobberError: the pool is empty, the certificate or key unusable (or readable by
            tenants' jobs), the port taken, the job user unusable, or tenants' jobs
            would share one uid without ``single_tenant``.
    """
    _setup_logging(log_level)
    send_tls_alerts()
    limits = fit_limits(limits or ConnectionLimits(), raise_nofile_limit())
    root_path = Path(os.path.abspath(default_root(root)))
    # Who runs the jobs is settled first: a refusal must not wait on the certificates.
    tenancy = resolve_tenancy(single_tenant=single_tenant, job_user=job_user, uid_range=uid_range,
                              state_dir=state_dir, private_tmp=private_tmp)
    tenancy.check_secret(key, "the server's key")
    ssl_context = make_ssl_context(cert, key, root_path)
    app = make_app(root_path, tenancy=tenancy, quotas=quotas, body_timeout=limits.header_timeout, pythons=pythons)
    config = app[CONFIG]
    sock = _listen(host, port)
    try:
        tenancy.setup()  # the state directory, once nothing else stands in the way
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    from jobber._jobs.store import jobs_dir

    banner = (f"jobber server: listening on https://{shown}:{bound[1]}/ (TLS 1.3, client certificates "
              f"checked against {root_path / 'pool'}; jobs run as {config.tenancy.label}, stored in {jobs_dir()}"
              f"{_nofile_note()})")
    quota = config.quotas
    log.info("limits: %d connections (%d per peer address), TLS handshake within %g s, request headers within %g s, "
             "idle connections closed after %g s; per certificate: %d running jobs, %d jobs kept, %d requests in flight",
             limits.max_connections, limits.max_per_peer, limits.handshake_timeout, limits.header_timeout,
             limits.keepalive_timeout, quota.max_running_jobs, quota.max_jobs, quota.max_requests_in_flight)
    try:
        asyncio.run(_run(app, sock, ssl_context, banner, limits))
    finally:
        sock.close()
