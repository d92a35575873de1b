"""Requests aiohttp cannot parse, answered as the API answers everything: a JSON error.

aiohttp answers a request whose framing is broken (a line or header over
``MAX_LINE_BYTES``, more than ``MAX_HEADERS`` headers, bad chunking, a Content-Length
beside a Transfer-Encoding, a request line that is not HTTP/1.x) before any middleware
runs, in ``RequestHandler.handle_error``: as ``text/plain``, with an ERROR traceback in the
log. It has no hook for it (aio-libs/aiohttp#3287, #9882), so ``JsonFramingErrors``
overrides that method: a 400 with the API's ``{"error", "type"}`` body, the connection
closed, and one warning line (rate-limited by kind, as every line of the server's log).

A framing error inside a body the app is already reading is aiohttp's too: its C parser
queues it as the next request and leaves the body waiting for bytes that never come
(the client got a 408 after ``--header-timeout``). ``data_received`` ends that body with
``RequestPayloadError`` (``body_error`` says what went wrong), which the routes answer as
a 400; ``close_after_broken_body`` then closes the connection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadStatusLine,
    HttpProcessingError,
    LineTooLong,
    TransferEncodingError,
)

from jobber._server.errors import error_response

__all__ = ["MAX_HEADERS", "MAX_LINE_BYTES", "JsonFramingErrors", "body_error", "close_after_broken_body",
           "framing_message", "handler_factory"]

log = logging.getLogger("jobber.server")

# The request line, and each header, at most this long; at most this many headers (the
# same on every aiohttp version: 3.9 took 32,768 headers, 3.14 takes 128).
MAX_LINE_BYTES = 8190
MAX_HEADERS = 100
_MALFORMED = "%s: %s (answered %d)"
_CODE_PREFIX = re.compile(r"^\d{3}, message:\s*")  # str() of aiohttp's HttpProcessingError
# What the middleware sets on a request once answered: a broken body after that only ends it.
ANSWERED = "jobber.answered"


def framing_message(exc: BaseException | None, fallback: str | None = None) -> str:
    """What is wrong with a request's framing, and what to send instead (one line)."""
    detail = _CODE_PREFIX.sub("", str(getattr(exc, "message", None) or exc or fallback or ""))
    # aiohttp's messages end with a quote of the bytes after an empty line: never logged.
    said = []
    for line in detail.splitlines():
        if not line.strip():
            break
        said.append(line.strip().rstrip(":."))
    reason = ": ".join(part for part in said if part)[:200] or "unreadable request"
    if isinstance(exc, LineTooLong) or "more than" in reason and "bytes" in reason:
        return (f"a request line or header is over {MAX_LINE_BYTES} bytes: keep each under that "
                "(a job's command, environment and limits go in the JSON body)")
    if "many headers" in reason.lower():
        return f"more than {MAX_HEADERS} headers: send fewer"
    if isinstance(exc, TransferEncodingError) or "chunk" in reason.lower():
        return f"the chunked body is malformed ({reason}): send well-formed chunks, or a Content-Length"
    if isinstance(exc, BadStatusLine) or "method" in reason.lower():
        return f"not an HTTP/1.1 request ({reason}): send METHOD /path HTTP/1.1 over this TLS connection"
    return f"{reason}: send a well-formed HTTP/1.1 request"


class JsonFramingErrors(web.RequestHandler):
    """aiohttp's HTTP protocol, with framing errors answered as the API's JSON errors."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Answer a request aiohttp could not parse (or, with 500, could not handle)."""
        if status >= 500:
            log.error("bug: a request from %s failed outside the app", request.remote, exc_info=exc)
            text = "internal server error: the server's log has the details; please report it"
        else:
            text = f"malformed HTTP request: {framing_message(exc, message)}"
            log.warning(_MALFORMED, request.remote, text, status)
        if request.writer.output_size > 0:  # a response had begun: nothing else can be said
            raise ConnectionError("a response was under way when the request turned out malformed")
        response = error_response(status, text)
        response.force_close()
        return response

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp; a framing error in a body being read ends that body at once."""
        messages = getattr(self, "_messages", None)
        queued = len(messages) if messages is not None else 0
        super().data_received(data)
        if not messages or len(messages) <= queued:
            return
        error = getattr(messages[-1][0], "exc", None)
        current = getattr(self, "_current_request", None)
        if not isinstance(error, (HttpProcessingError, BadHttpMessage)) or current is None:
            return
        body = current.content
        if body.exception() is None and not body.is_eof():
            if not current.get(ANSWERED):  # the app may be reading it: it learns why it ends
                body.set_exception(web.RequestPayloadError(getattr(error, "message", None) or str(error)))
            body.feed_eof()  # aiohttp reads what is left of an unread body before the next request


def body_error(err: BaseException) -> str:
    """The 400's message for a body whose framing broke while it was read."""
    return f"malformed HTTP request: {framing_message(err)}"


@web.middleware
async def close_after_broken_body(request: web.Request, handler: Any) -> web.StreamResponse:
    """The outermost middleware: a request whose body broke is answered, then its connection
    closed (nothing after it can be read), without aiohttp reading on into the error.

    It also refuses a request of more than ``MAX_HEADERS`` headers that reached the app:
    aiohttp 3.9's parser takes them whatever ``max_headers`` says (make test-oldest; newer ones
    refuse them before any middleware, in ``handle_error``), with the same one line."""
    if len(request.raw_headers) > MAX_HEADERS:
        request[ANSWERED] = True
        text = f"malformed HTTP request: {framing_message(None, 'too many headers')}"
        log.warning(_MALFORMED, request.remote, text, 400)
        response = error_response(400, text)
        response.force_close()
        return response
    try:
        response = await handler(request)
    finally:
        request[ANSWERED] = True
    body = request.content
    if body.exception() is not None:
        if not body.is_eof():
            body.feed_eof()
        response.force_close()
    return response


def handler_factory(server: web.Server, loop: Any, **options: Any) -> Callable[[], JsonFramingErrors]:
    """What makes the HTTP protocol of each connection of ``server`` (in place of ``server()``).

    Args:
        server: aiohttp's server (an ``AppRunner``'s), which tracks the connections.
        loop: the event loop.
        **options: more of ``RequestHandler``'s options (``keepalive_timeout``, ...).
    """
    return lambda: JsonFramingErrors(server, loop=loop, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES,
                                     max_headers=MAX_HEADERS, **options)
