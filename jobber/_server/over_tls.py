"""A connection once TLS is up: aiohttp's HTTP protocol, with deadlines of its own.

A request's line and headers must have arrived ``header_timeout`` seconds after its first
byte, and a response the client takes nothing of for ``WRITE_TIMEOUT_S`` is cut. The
app's middleware tells when a request's head is in (``request_began``) and when it is
answered (``request_ended``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobber._server.log_limits import Tally

__all__ = ["OverTls", "WRITE_TIMEOUT_S", "request_began", "request_ended"]

# A response the client has not taken any of for this long is cut (as a stuck follower is).
WRITE_TIMEOUT_S = 60.0


class OverTls(asyncio.Protocol):
    """The protocol under TLS: aiohttp's handler, with the request head and write deadlines.

    A request is "begun" once the app's middleware sees it (its head was parsed) and
    "ended" when the middleware is done; bytes that arrive in between are its body.
    """

    def __init__(self, handler: asyncio.Protocol, loop: asyncio.AbstractEventLoop, tally: Tally,
                 header_timeout: float) -> None:
        self._handler = handler
        self._loop = loop
        self._tally = tally
        self._header_timeout = header_timeout
        self._busy = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data and not self._busy and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_too_slow)
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
            self._tally.add(f"closed with a request's headers unfinished after --header-timeout "
                                 f"({self._header_timeout:g} s)")
            self.transport.abort()

    def _write_too_slow(self) -> None:
        self._write_timer = None
        if self.transport is not None:
            self._tally.add(f"cut after taking nothing of a response for {WRITE_TIMEOUT_S:g} s")
            self.transport.abort()


def _connection_of(transport: Any) -> OverTls | None:
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, OverTls) else None


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
