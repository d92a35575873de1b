"""Bounded clients: how many connections the server holds, and how long each may dawdle.

The server listens on plain TCP and takes each connection through ``ConnectionGate``:

1. **Admission**, as ``accept()`` returns the socket (the gate runs its own accept loop:
   asyncio's takes up to its backlog, 1,024, sockets a turn and only then asks the
   protocol, so a flood held thousands of descriptors beyond the cap). Over
   ``max_connections`` in all, or ``max_per_peer`` from one address, the socket is closed
   there and then. When the total is full, the oldest connection that has not finished
   its TLS handshake yet (and is at least a second old) is closed to make room instead,
   so that a flood of idle sockets cannot lock tenants out. A connection counts until its
   socket is closed, not until it is told to close: what the server holds stays within
   ``max_connections`` plus the ``_ACCEPT_BATCH`` of one turn being closed.
2. **Until its first byte** a connection costs a socket and a small object: TLS starts
   (``asyncio.sslproto.SSLProtocol``, with its buffers) only when the client speaks.
   The handshake must be done ``handshake_timeout`` seconds after the accept, and at
   most ``max_handshakes`` are under way at once (OpenSSL's state is some 90 KiB each):
   beyond, the oldest is closed if it is a second old, else the newcomer.
3. **Over TLS** (``over_tls.OverTls``, between TLS and aiohttp's handler): a request's
   line and headers must have arrived ``header_timeout`` seconds after its first byte; a
   connection idle between requests is closed after ``keepalive_timeout`` (aiohttp's own
   timer, set by ``app.py``); a response the client does not read for
   ``over_tls.WRITE_TIMEOUT_S`` is cut.

Nothing of this logs a line per connection: refusals and expiries are counted and told in
one summary line per ``SUMMARY_S`` (``log_limits.Tally``). The caps and deadlines are a
``connection_limits.ConnectionLimits``, fitted to the process's file descriptors there.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import errno
import logging
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from jobber._server.connection_limits import ConnectionLimits
from jobber._server.log_limits import SUMMARY_S, Tally
from jobber._server.over_tls import OverTls

__all__ = ["ConnectionGate"]

log = logging.getLogger("jobber.server")

# Sockets taken from the kernel's queue in one turn of the event loop. Each may evict a
# connection whose socket closes in the next turn: the most held beyond max_connections.
_ACCEPT_BATCH = 32
# accept() out of descriptors or memory: wait this long before accepting again (asyncio's).
_ACCEPT_RETRY_S = 1.0
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
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


class ConnectionGate:
    """The listening socket's accept loop: admission, then TLS, then the handler.

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
        self._connecting: set[asyncio.Task[Any]] = set()
        self._listener: socket.socket | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._peak = 0
        self._trimmed_at = 0.0

    def listen(self, sock: socket.socket) -> None:
        """Accept the connections of ``sock`` (a listening socket) until :meth:`close`."""
        sock.setblocking(False)
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        """Take up to a batch of waiting sockets off the kernel's queue, each admitted or closed now."""
        listener = self._listener
        if listener is None:
            return
        for _ in range(_ACCEPT_BATCH):
            if self.total >= self.limits.max_connections + _ACCEPT_BATCH:
                return  # those evicted close in the next turn; the rest wait in the kernel's queue
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as err:
                if err.errno not in _RESOURCE_ERRORS:
                    self.tally.add(f"accept() failed: {err.strerror or err}")
                    return
                # Linux keeps saying the socket is readable: stop listening a while (as asyncio does).
                self.tally.add(f"accept() failed ({err.strerror or err}): accepting paused for {_ACCEPT_RETRY_S:g} s")
                self._loop.remove_reader(listener.fileno())
                self._retry = self._loop.call_later(_ACCEPT_RETRY_S, self._resume)
                return
            self._take(sock, address)

    def _resume(self) -> None:
        self._retry = None
        if self._listener is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _take(self, sock: socket.socket, address: Any) -> None:
        peer = str(address[0]) if isinstance(address, tuple) and address else "?"
        if self._per_peer.get(peer, 0) >= self.limits.max_per_peer:
            self.tally.add(f"refused over --max-connections-per-peer ({self.limits.max_per_peer})")
            sock.close()
            return
        if self.total >= self.limits.max_connections and not self._evict():
            self.tally.add(f"refused over --max-connections ({self.limits.max_connections})")
            sock.close()
            return
        conn = _Pending(self, peer)
        self.total += 1
        self._peak = max(self._peak, self.total)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._pending[conn] = self._loop.time()
        self._open.add(conn)
        task = self._loop.create_task(self._connect(conn, sock))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: _Pending, sock: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: conn, sock)
        except OSError:  # gone before its transport was made
            sock.close()
            conn.connection_lost(None)

    def peer_count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    @property
    def pending(self) -> int:
        """Connections accepted that have not finished their TLS handshake."""
        return len(self._pending) + len(self._handshaking)

    def _evict(self) -> bool:
        """Close the oldest connection still before its handshake's end, if one is old enough."""
        for queue in (self._pending, self._handshaking):
            for oldest, since in queue.items():
                if self._loop.time() - since >= _EVICTABLE_AFTER_S:
                    self.tally.add("closed before their TLS handshake ended, to make room under --max-connections")
                    oldest.abort()  # its slot is free once its socket is closed, in the next turn
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

    def _closing(self, conn: _Pending) -> None:
        """Told to close: never chosen to make room again (it still counts until closed)."""
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
        if now - self._trimmed_at < SUMMARY_S:
            return
        self._trimmed_at, self._peak = now, self.total
        if _malloc_trim is not None:
            self._loop.call_soon(_malloc_trim, 0)

    def close(self) -> None:
        """Stop accepting; abort every connection still before its handshake (the rest close
        with aiohttp)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener = None
        for conn in [*self._pending, *self._handshaking]:
            conn.abort()
        self.tally.close()


class _Pending(asyncio.Protocol):
    """A connection until its first byte; then it hands the socket to TLS."""

    __slots__ = ("_gate", "transport", "peer", "_timer", "_deadline", "_tls", "_closing")

    def __init__(self, gate: ConnectionGate, peer: str) -> None:
        self._gate = gate
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._tls: _TLS | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admitted at the accept already: the handshake deadline starts."""
        assert isinstance(transport, asyncio.Transport)
        if self._closing:  # told to close before its transport was made
            transport.abort()
            return
        self.transport = transport
        loop = self._gate._loop
        self._deadline = loop.time() + self._gate.limits.handshake_timeout
        self._timer = loop.call_at(self._deadline, self._expire)

    def data_received(self, data: bytes) -> None:
        """The client spoke: TLS takes the socket over, and what it sent first."""
        if self.transport is None or self._tls is not None or self._closing:
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
        http = OverTls(gate._handler_factory(), loop, gate.tally, gate.limits.header_timeout)
        tls = _TLS(loop, http, gate._ssl_context, None, server_side=True,
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
        """Close the connection now; it counts against the caps until its socket is closed."""
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate._closing(self)
        if self.transport is not None:
            self.transport.abort()  # else connection_made, still to come, aborts it

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None and self._tls is None and not self._closing:
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
