"""Bounded clients: how many connections the server holds, and how long each may dawdle.

The server listens on plain TCP and takes each connection through ``ConnectionGate``:

1. **Admission.** Over ``max_connections`` in all, or ``max_per_peer`` from one address, a
   new connection is closed at once. When the total is full, the oldest connection that
   has not finished its TLS handshake yet (and is at least a second old) is closed to
   make room instead, so that a flood of idle sockets cannot lock tenants out.
2. **Until its first byte** a connection costs a socket and a small object: TLS starts
   (``asyncio.sslproto.SSLProtocol``, with its buffers) only when the client speaks.
   The handshake must be done ``handshake_timeout`` seconds after the accept, and at
   most ``max_handshakes`` are under way at once (OpenSSL's state is some 90 KiB each):
   beyond, the oldest is closed if it is a second old, else the newcomer.
3. **Over TLS** (``_Connection``, between TLS and aiohttp's handler): a request's line
   and headers must have arrived ``header_timeout`` seconds after its first byte; a
   connection idle between requests is closed after ``keepalive_timeout`` (aiohttp's own
   timer, set by ``app.py``); a response the client does not read for
   ``WRITE_TIMEOUT_S`` is cut.

Nothing of this logs a line per connection: refusals and expiries are counted and told in
one summary line per ``_SUMMARY_S`` (``Tally``). ``raise_nofile_limit`` and ``fit_limits``
keep the caps below the process's file descriptor limit.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ConnectionLimits", "ConnectionGate", "Tally", "LogRateLimit", "exception_handler", "raise_nofile_limit",
           "fit_limits", "WRITE_TIMEOUT_S", "request_began", "request_ended"]

log = logging.getLogger("jobber.server")

# A response the client has not taken any of for this long is cut (as a stuck follower is).
WRITE_TIMEOUT_S = 60.0
# Descriptors kept for everything but client sockets: the listening socket, inotify, log
# files being read, pipes of starts in progress, the pool, Python's own.
_RESERVED_FDS = 256
# The default cap per peer address is this share of --max-connections (512 of 4096).
_PER_PEER_SHARE = 8
_SUMMARY_S = 10.0
# A pending connection younger than this is not closed to make room for a new one: it
# may be a real client in the middle of its handshake.
_EVICTABLE_AFTER_S = 1.0
# TLS records are at most 16 KiB; asyncio's 256 KiB read buffer per connection is what
# made 20,000 connections cost gigabytes.
_TLS_READ_BUFFER = 32 * 1024
_TLS_SHUTDOWN_TIMEOUT_S = 5.0

# Python 3.11 rewrote asyncio's TLS protocol (a BufferedProtocol, with a state machine and
# a shutdown timeout); 3.10's takes bytes through data_received.
_STATE = getattr(asyncio.sslproto, "SSLProtocolState", None)
_TLS_OPTIONS: dict[str, Any] = {"ssl_shutdown_timeout": _TLS_SHUTDOWN_TIMEOUT_S} if _STATE is not None else {}

try:  # glibc: return freed heap memory to the system after a flood
    _malloc_trim: Callable[[int], int] | None = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


@dataclass(frozen=True)
class ConnectionLimits:
    """How many clients, and how long each may take (``jobber serve --max-connections ...``).

    Attributes:
        max_connections: connections held at once, TLS or not yet.
        max_per_peer: of those, from one IP address: at most half of ``max_connections``
            (so that one address can never hold every slot); None is an eighth of it
            (512 of 4096).
        handshake_timeout: seconds from the accept to the end of the TLS handshake.
        header_timeout: seconds from a request's first byte to the end of its headers
            (and for its body, once the headers are in).
        keepalive_timeout: seconds a connection may sit idle between requests.
        max_handshakes: TLS handshakes under way at once (real ones take milliseconds).
    """

    max_connections: int = 4096
    max_per_peer: int | None = None
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_handshakes: int = 256

    def __post_init__(self) -> None:
        if self.max_per_peer is None and _whole(self.max_connections):
            object.__setattr__(self, "max_per_peer", max(1, self.max_connections // _PER_PEER_SHARE))
        for name in ("max_connections", "max_per_peer", "max_handshakes"):
            value = getattr(self, name)
            if not _whole(value):
                raise ValueError(f"--{name.replace('_', '-').replace('per-peer', 'connections-per-peer')} must be a "
                                 f"whole number of at least 1, not {value!r}")
        half = _half(self.max_connections)
        if self.max_per_peer > half:
            raise ValueError(f"--max-connections-per-peer {self.max_per_peer} is more than half of --max-connections "
                             f"{self.max_connections}: one address could hold every slot and lock the others out; "
                             f"give at most {half}, or raise --max-connections")
        for name in ("handshake_timeout", "header_timeout", "keepalive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"--{name.replace('_', '-')} must be a number of seconds above 0 and at most 3600, "
                                 f"not {value!r}")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _half(max_connections: int) -> int:
    return max(1, max_connections // 2)


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses an "unlimited" descriptor count; 2**20 is its usual ceiling (fs.nr_open).
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= want:
        return soft
    if soft == resource.RLIM_INFINITY:
        return want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as err:
        log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, err)
        return soft
    return want


def fit_limits(limits: ConnectionLimits, nofile: int) -> ConnectionLimits:
    """The limits, with the connection caps lowered to fit ``nofile`` descriptors.

    A connection may hold two descriptors (its socket, and a log it follows), and
    ``_RESERVED_FDS`` stay for the rest of the server. The cap per peer address shrinks
    in proportion (512 of 4096 becomes 48 of 384): left as it was, one address could
    fill every slot of the smaller total.
    """
    fits = max(1, (nofile - _RESERVED_FDS) // 2)
    if limits.max_connections <= fits:
        return limits
    assert limits.max_per_peer is not None  # set by __post_init__
    per_peer = min(_half(fits), max(1, limits.max_per_peer * fits // limits.max_connections))
    log.warning("at most %d connections fit in this process's %d file descriptors (ulimit -n): "
                "--max-connections %d is lowered to that, and --max-connections-per-peer %d to %d; "
                "raise the hard limit to allow more", fits, nofile, limits.max_connections, limits.max_per_peer, per_peer)
    return replace(limits, max_connections=fits, max_per_peer=per_peer)


class Tally:
    """Counts of things not worth a log line each, told in one line per period.

    The first event of a kind in a period is logged at once; the repeats are summed up
    in one line at the period's end.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float = _SUMMARY_S) -> None:
        self._loop = loop
        self._period = period
        self._seen: set[str] = set()
        self._repeats: dict[str, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self.totals: dict[str, int] = {}

    def add(self, what: str) -> None:
        """Count one event; ``what`` is a phrase such as "refused over --max-connections"."""
        self.totals[what] = self.totals.get(what, 0) + 1
        if self._handle is None:
            self._handle = self._loop.call_later(self._period, self._flush)
        if what not in self._seen:
            self._seen.add(what)
            log.warning("connections: %s (told once per %.0f s at most)", what, self._period)
            return
        self._repeats[what] = self._repeats.get(what, 0) + 1

    def _flush(self) -> None:
        self._handle = None
        self._seen.clear()
        if self._repeats:
            repeats, self._repeats = self._repeats, {}
            log.warning("connections in the last %.0f s, besides those told: %s", self._period,
                        "; ".join(f"{n} more {what}" for what, n in sorted(repeats.items())))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ConnectionGate:
    """The protocol factory of the listening socket: admission, then TLS, then the handler.

    Args:
        limits: the caps and deadlines.
        ssl_context: the server's TLS context.
        handler_factory: makes the HTTP protocol of an admitted connection (aiohttp's
            ``web.Server``).
        loop: the event loop.
    """

    def __init__(self, limits: ConnectionLimits, ssl_context: ssl.SSLContext,
                 handler_factory: Callable[[], asyncio.Protocol], loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.tally = Tally(loop)
        self._ssl_context = ssl_context
        self._handler_factory = handler_factory
        self._loop = loop
        self.total = 0
        self._per_peer: dict[str, int] = {}
        # Connections that sent nothing yet, and those in their TLS handshake, oldest
        # first: the ones closed to make room.
        self._pending: OrderedDict[_Pending, float] = OrderedDict()
        self._handshaking: OrderedDict[_Pending, float] = OrderedDict()
        self._open: set[_Pending] = set()
        self._peak = 0
        self._trimmed_at = 0.0

    def __call__(self) -> _Pending:
        return _Pending(self)

    def peer_count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    @property
    def pending(self) -> int:
        """Connections accepted that have not finished their TLS handshake."""
        return len(self._pending) + len(self._handshaking)

    def _admit(self, conn: _Pending) -> bool:
        peer = conn.peer
        if self._per_peer.get(peer, 0) >= self.limits.max_per_peer:
            self.tally.add(f"refused over --max-connections-per-peer ({self.limits.max_per_peer})")
            return False
        if self.total >= self.limits.max_connections and not self._evict():
            self.tally.add(f"refused over --max-connections ({self.limits.max_connections})")
            return False
        self.total += 1
        self._peak = max(self._peak, self.total)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._pending[conn] = self._loop.time()
        self._open.add(conn)
        return True

    def _evict(self) -> bool:
        """Close the oldest connection still before its handshake's end, if one is old enough."""
        for queue in (self._pending, self._handshaking):
            for oldest, since in queue.items():
                if self._loop.time() - since >= _EVICTABLE_AFTER_S:
                    self.tally.add("closed before their TLS handshake ended, to make room under --max-connections")
                    oldest.abort()  # releases its slot at once
                    return True
                break
        return False

    def _may_handshake(self, conn: _Pending) -> bool:
        """Room for one more handshake under way (the oldest may be closed to make it)."""
        if len(self._handshaking) >= self.limits.max_handshakes:
            oldest, since = next(iter(self._handshaking.items()))
            if self._loop.time() - since < _EVICTABLE_AFTER_S:
                self.tally.add(f"closed as {self.limits.max_handshakes} TLS handshakes were under way")
                return False
            self.tally.add(f"closed in their TLS handshake to make room for another ({self.limits.max_handshakes} at once)")
            oldest.abort()
        self._pending.pop(conn, None)
        self._handshaking[conn] = self._loop.time()
        return True

    def _handshaken(self, conn: _Pending) -> None:
        self._pending.pop(conn, None)
        self._handshaking.pop(conn, None)

    def _release(self, conn: _Pending) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        self._pending.pop(conn, None)
        self._handshaking.pop(conn, None)
        self.total -= 1
        if self.total * 2 < self._peak and self._peak > 256:
            self._trim()
        left = self._per_peer[conn.peer] - 1
        if left:
            self._per_peer[conn.peer] = left
        else:
            del self._per_peer[conn.peer]

    def _trim(self) -> None:
        """Most connections went: give their memory back to the system (glibc keeps it)."""
        now = self._loop.time()
        if now - self._trimmed_at < _SUMMARY_S:
            return
        self._trimmed_at, self._peak = now, self.total
        if _malloc_trim is not None:
            self._loop.call_soon(_malloc_trim, 0)

    def close(self) -> None:
        """Abort every connection still before its handshake (the rest close with aiohttp)."""
        for conn in [*self._pending, *self._handshaking]:
            conn.abort()
        self.tally.close()


class _Pending(asyncio.Protocol):
    """A connection until its first byte; then it hands the socket to TLS."""

    __slots__ = ("_gate", "transport", "peer", "_timer", "_deadline", "_tls")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._tls: _TLS | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        gate = self._gate
        if not gate._admit(self):
            self.transport = None
            transport.abort()
            return
        loop = gate._loop
        self._deadline = loop.time() + gate.limits.handshake_timeout
        self._timer = loop.call_at(self._deadline, self._expire)

    def data_received(self, data: bytes) -> None:
        """The client spoke: TLS takes the socket over, and what it sent first."""
        if self.transport is None or self._tls is not None:
            return
        gate = self._gate
        loop = gate._loop
        left = self._deadline - loop.time()
        if left <= 0:
            self._expire()
            return
        if not gate._may_handshake(self):
            self.abort()
            return
        tls = _TLS(loop, _Connection(gate, gate._handler_factory()), gate._ssl_context, None, server_side=True,
                   ssl_handshake_timeout=left, **_TLS_OPTIONS)
        tls.on_handshake = self._handshaken
        tls.on_lost = self._lost
        tls.on_timeout = self._timed_out
        self._tls = tls
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)
        if not isinstance(tls, asyncio.BufferedProtocol):
            tls.data_received(data)
            return
        view = memoryview(data)
        while view and tls.transport_alive():
            buf = tls.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            tls.buffer_updated(n)
            view = view[n:]

    def eof_received(self) -> bool | None:
        return None  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def abort(self) -> None:
        """Close the connection now (the gate's slot is freed at once)."""
        transport = self.transport
        self._lost()
        if transport is not None:
            transport.abort()

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None and self._tls is None:
            self._gate.tally.add(f"closed after sending nothing for --handshake-timeout "
                                 f"({self._gate.limits.handshake_timeout:g} s)")
            self.abort()

    def _timed_out(self) -> None:
        self._gate.tally.add(f"closed with their TLS handshake unfinished after --handshake-timeout "
                             f"({self._gate.limits.handshake_timeout:g} s)")

    def _handshaken(self) -> None:
        self._gate._handshaken(self)

    def _lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        self._gate._release(self)


class _TLS(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS protocol with a smaller read buffer, reporting to its ``_Pending``."""

    max_size = _TLS_READ_BUFFER
    on_handshake: Callable[[], None] | None = None
    on_lost: Callable[[], None] | None = None
    on_timeout: Callable[[], None] | None = None

    def transport_alive(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is None and self.on_handshake is not None:
            self.on_handshake()
        super()._on_handshake_complete(handshake_exc)

    def _check_handshake_timeout(self) -> None:
        if _STATE is not None:
            in_handshake = self._state == _STATE.DO_HANDSHAKE
        else:
            in_handshake = getattr(self, "_in_handshake", False)
        if in_handshake and self.on_timeout is not None:
            self.on_timeout()
        super()._check_handshake_timeout()

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            on_lost = self.on_lost
            self.on_lost = self.on_handshake = self.on_timeout = None
            if on_lost is not None:
                on_lost()


class _Connection(asyncio.Protocol):
    """The protocol under TLS: aiohttp's handler, with the request head and write deadlines.

    A request is "begun" once the app's middleware sees it (its head was parsed) and
    "ended" when the middleware is done; bytes that arrive in between are its body.
    """

    def __init__(self, gate: ConnectionGate, handler: asyncio.Protocol) -> None:
        self._gate = gate
        self._handler = handler
        self._loop = gate._loop
        self._busy = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data and not self._busy and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._gate.limits.header_timeout, self._head_too_slow)
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self.transport = None
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(WRITE_TIMEOUT_S, self._write_too_slow)
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._handler.resume_writing()

    def began(self) -> None:
        self._busy += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def ended(self) -> None:
        self._busy = max(0, self._busy - 1)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._busy and self.transport is not None:
            self._gate.tally.add(f"closed with a request's headers unfinished after --header-timeout "
                                 f"({self._gate.limits.header_timeout:g} s)")
            self.transport.abort()

    def _write_too_slow(self) -> None:
        self._write_timer = None
        if self.transport is not None:
            self._gate.tally.add(f"cut after taking nothing of a response for {WRITE_TIMEOUT_S:g} s")
            self.transport.abort()


def _connection_of(transport: Any) -> _Connection | None:
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, _Connection) else None


def request_began(transport: Any) -> None:
    """The app saw a request on this transport: its head is complete."""
    conn = _connection_of(transport)
    if conn is not None:
        conn.began()


def request_ended(transport: Any) -> None:
    """The app is done with the request (the response is written or being written)."""
    conn = _connection_of(transport)
    if conn is not None:
        conn.ended()


class LogRateLimit(logging.Filter):
    """At most ``burst`` log lines of one kind per ``period`` seconds; the rest are counted.

    A kind is the record's message template (``rate_key`` when the record has one; the
    message itself when the template is a bare "%s"), so a flood of refused TLS clients
    or of one event loop error cannot fill the log; the count of what was left out is
    logged with the next line after the period. Templates in ``exempt`` (the one line
    per request) always pass.
    """

    def __init__(self, burst: int = 20, period: float = _SUMMARY_S, exempt: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._burst = burst
        self._period = period
        self._exempt = frozenset(exempt)
        self._started = time.monotonic()
        self._counts: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._summing_up = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self._summing_up or record.msg in self._exempt:
            return True
        key = getattr(record, "rate_key", None) or (record.getMessage() if record.msg == "%s" else record.msg)
        key = str(key)[:200]
        now = time.monotonic()
        if now - self._started >= self._period:
            dropped, self._dropped, self._counts, self._started = self._dropped, {}, {}, now
            if dropped:
                self._summing_up = True
                try:
                    log.warning("left out of this log in the last %.0f s: %s", self._period,
                                "; ".join(f"{n} more like {what!r}" for what, n in sorted(dropped.items())))
                finally:
                    self._summing_up = False
        seen = self._counts.get(key, 0) + 1
        self._counts[key] = seen
        if seen <= self._burst:
            return True
        self._dropped[key] = self._dropped.get(key, 0) + 1
        return False


def exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's error handler: into the server's log, kind by kind rate-limited.

    asyncio's default logs each with its traceback: an accept() failing for want of
    descriptors would log one every time it is retried.
    """
    message = str(context.get("message") or "unexpected error")
    exc = context.get("exception")
    log.error("event loop: %s", message, exc_info=exc if isinstance(exc, BaseException) else None,
              extra={"rate_key": f"event loop: {message}"})
