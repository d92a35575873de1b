"""The server's log under a flood: a summary line for many events, never a line each.

``Tally`` counts what the connection gate refuses and closes, and tells it once per
period; ``LogRateLimit`` caps the lines of one kind any logger of the server writes;
``exception_handler`` puts the event loop's errors through that cap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

__all__ = ["SUMMARY_S", "Tally", "LogRateLimit", "exception_handler"]

log = logging.getLogger("jobber.server")

SUMMARY_S = 10.0


class Tally:
    """Counts of things not worth a log line each, told in one line per period.

    The first event of a kind in a period is logged at once; the repeats are summed up
    in one line at the period's end.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float = SUMMARY_S) -> None:
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


class LogRateLimit(logging.Filter):
    """At most ``burst`` log lines of one kind per ``period`` seconds; the rest are counted.

    A kind is the record's message template (``rate_key`` when the record has one; the
    message itself when the template is a bare "%s"), so a flood of refused TLS clients
    or of one event loop error cannot fill the log; the count of what was left out is
    logged with the next line after the period. Templates in ``exempt`` (the one line
    per request) always pass.
    """

    def __init__(self, burst: int = 20, period: float = SUMMARY_S, exempt: tuple[str, ...] = ()) -> None:
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
