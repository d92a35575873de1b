"""What a log follower does next: the one follow reader, with no I/O of its own.

A follower yields a job's log as it is written, until the job has ended; a retried job's
log is each attempt's log in turn, with a marker line between. The decisions live here,
once. Two drivers do the I/O: ``_jobs/logs.py`` (blocking, for ``Job.follow``) and
``_server/watch.py`` (asyncio, the server's follow endpoint). Each asks
:meth:`FollowReader.next_action`, does it, and tells the reader what it found; they
differ only in how they wait. Standard library only, and no clock: the tests walk it
through every decision from a table.

The rules:

- The end is decided from the job's status, never from EOF (an orphan may hold the log
  open), and the log is read to its end once more after the end is seen: the last bytes
  may land between a read and the status write.
- Offset 0 is the job's first byte, in the first attempt's log however many attempts
  have run since (a follower started just after ``start()`` must not lose an attempt that
  ended before it looked); any other offset is a place in the current attempt's log.
- Attempts are followed by number: attempt ``n``'s log until attempt ``n`` is over (the
  job ended, or a later attempt exists), then the marker that says why the next one
  started, then attempt ``n + 1``'s log from its start. A follower that falls behind, by a
  little or by whole attempts, still reads every byte in order.
- While the job waits ("pending": in a queue, for jobs it comes after, for GPUs, or
  between two attempts) to start the attempt followed, nothing is opened.
- A wait ends on a change in the job's directory or after :data:`LIVENESS_CHECK_S`; the
  status is looked at again after a timeout or a change of ``status.json`` (a supervisor
  that died without writing its final status cannot send an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobber._jobs import logcut

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobber._jobs.status import JobStatus

__all__ = ["FollowReader", "JobFacts", "Action", "Look", "Open", "Read", "Emit", "Wait", "NextAttempt", "Done",
           "LIVENESS_CHECK_S", "attempt_marker", "news"]

# Events wake a follower at once; this only bounds how soon it notices a supervisor that
# died without writing its final status (it cannot send an event).
LIVENESS_CHECK_S = 1.0
_STATUS = b"status.json"
# What a follower acts on: its log (written, or made anew by the next attempt), the status,
# and the directory itself (b"": it was removed).
_NEWS = frozenset({b"log", _STATUS, b""})


def news(names: Iterable[bytes] | None) -> set[bytes]:
    """Of the names a wait saw change in a job's directory, those that are news to a
    follower. The supervisor's usage samples (twice a second), a function's result and
    the like are not: a driver waits on through them, so that a quiet job's heartbeat
    still comes when it is due."""
    return {name for name in names or () if name in _NEWS}


@dataclass(frozen=True)
class JobFacts:
    """What the reader needs of a job's status (a job without attempts is at attempt 1).

    Attributes:
        ended: the job's state is final.
        attempt: the attempt that runs, ran last, or waits to start.
        pending: the job waits to start ``attempt``.
        note: the status's note (why a "pending" attempt waits).
    """

    ended: bool
    attempt: int = 1
    pending: bool = False
    note: str = ""

    @classmethod
    def of(cls, status: JobStatus) -> JobFacts:
        """The facts of a :class:`~jobber.JobStatus`."""
        return cls(status.ended, status.attempt, status.state == "pending", status.note)


@dataclass(frozen=True)
class Look:
    """Read the job's status; answer :meth:`FollowReader.saw`."""


@dataclass(frozen=True)
class Open:
    """Open ``attempt``'s log, wherever it is now, and map logical ``offset`` (negative:
    back from its end) with ``logcut.locate``; answer :meth:`FollowReader.opened`, or
    :meth:`FollowReader.missing` when it does not exist (yet)."""

    attempt: int
    offset: int


@dataclass(frozen=True)
class Read:
    """Read up to ``size`` bytes at file offset ``pos`` with ``logcut.read_kept``, yield
    what was read, and answer :meth:`FollowReader.read`."""

    pos: int
    size: int


@dataclass(frozen=True)
class Emit:
    """Yield ``data``: a marker line, or ``b""`` for a heartbeat."""

    data: bytes


@dataclass(frozen=True)
class Wait:
    """Wait for a change in the job's directory, ``timeout`` seconds at most; answer
    :meth:`FollowReader.woke`."""

    timeout: float


@dataclass(frozen=True)
class NextAttempt:
    """``attempt``'s log is read to its end and a later attempt exists: close the log, read
    the note archived with ``attempt`` (why the next one started) and answer
    :meth:`FollowReader.next_attempt`."""

    attempt: int


@dataclass(frozen=True)
class Done:
    """The job has ended and its log is drained: close the log and end the follow."""


Action = Look | Open | Read | Emit | Wait | NextAttempt | Done
_LOOK, _DONE = Look(), Done()


def attempt_marker(note: str) -> bytes:
    """The line between two attempts' logs, saying why the next attempt started."""
    return f"\n[jobber: {note}]\n".encode()


class FollowReader:
    """One follow of one job's log: what to do next, from what the driver found.

    Args:
        offset: where to start: logical, as ``logcut`` defines it; negative counts back
            from the end of the log when it is opened.
        chunk: the most bytes to read at once (the driver's buffer).
        heartbeat: if set, emit ``b""`` after every wait of this many seconds without a
            change.
        from_first_attempt: offset 0 means the first attempt's first byte (``Job.follow``).
            False: the current attempt's, for a driver whose offsets were resolved against
            the current log before it followed.
    """

    def __init__(self, offset: int, *, chunk: int, heartbeat: float | None = None,
                 from_first_attempt: bool = True) -> None:
        self.chunk = chunk
        self.heartbeat = heartbeat
        self._first = from_first_attempt
        self.offset = offset  # logical until the log is opened, then a file offset
        self.attempt: int | None = None  # the attempt followed, known from the first look
        self.opened_log = False
        self._facts: JobFacts | None = None
        self._look = True
        self._out: list[bytes] = []
        # What the last read (or open) said: "" more may be there now, "short" a short
        # read (the end for now), "empty" nothing at all (a read of 0, or no log).
        self._idle = ""
        self._done = False

    @property
    def wait_s(self) -> float:
        """How long one wait lasts at most."""
        return LIVENESS_CHECK_S if self.heartbeat is None else min(self.heartbeat, LIVENESS_CHECK_S)

    def next_action(self) -> Action:
        """What to do next: each :class:`Emit` is given once, any other action until answered."""
        if self._out:
            return Emit(self._out.pop(0))
        if self._done:
            return _DONE
        facts = self._facts
        if facts is None or self._look:
            return _LOOK
        assert self.attempt is not None
        over = facts.ended or facts.attempt > self.attempt
        if not self.opened_log and facts.pending and facts.attempt == self.attempt:
            return Wait(self.wait_s)  # the attempt has not started: its log is not there yet
        if self._idle == "empty" and over:
            if facts.attempt > self.attempt:
                return NextAttempt(self.attempt)
            self._done = True
            return _DONE
        if self._idle and not over:
            return Wait(self.wait_s)  # a write since the read is an event: the wait sees it
        if not self.opened_log:
            return Open(self.attempt, self.offset)
        return Read(self.offset, self.chunk)

    def saw(self, facts: JobFacts) -> None:
        """Answer :class:`Look`: the job's status now."""
        if self.attempt is None:
            self.attempt = 1 if self._first and self.offset == 0 else facts.attempt
        self._facts = facts
        self._look = False

    def opened(self, pending: bytes, pos: int) -> None:
        """Answer :class:`Open`: the log is open; ``logcut.locate`` gave the part of a cut's
        marker still to give (``pending``) and the file offset to read on from."""
        self.opened_log = True
        self.offset = pos
        self._idle = ""
        if pending:
            self._out.append(pending)

    def missing(self) -> None:
        """Answer :class:`Open`: the attempt's log does not exist (yet)."""
        self._idle = "empty"

    def read(self, n: int, resume: int | None) -> None:
        """Answer :class:`Read` with what ``logcut.read_kept`` returned."""
        if resume is not None:
            # The cap dropped bytes this follower had not read yet (the writer outran
            # it): say how many, and go on from the kept bytes.
            self._out.append(logcut.marker(resume - self.offset))
            self.offset = resume
            self._idle = ""
        elif n:
            self.offset += n
            self._idle = "" if n >= self.chunk else "short"
        else:
            self._idle = "empty"

    def woke(self, names: Iterable[bytes] | None) -> None:
        """Answer :class:`Wait`: the names of the files that changed, none on a timeout."""
        names = set(names or ())
        if not names and self.heartbeat is not None:
            self._out.append(b"")
        if not names or _STATUS in names:
            # After the end is seen, the log is read once more: the last bytes may have
            # landed between the read and the status write.
            self._look = True
        self._idle = ""

    def next_attempt(self, note: str) -> None:
        """Answer :class:`NextAttempt` with the note archived with the attempt that ended
        ("" when there is none: the status's note says it then)."""
        assert self.attempt is not None and self._facts is not None
        self._out.append(attempt_marker(note or self._facts.note))
        self.attempt += 1
        self.offset = 0
        self.opened_log = False
        self._idle = ""
