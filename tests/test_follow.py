"""The one follow reader (``jobber._jobs.follow``) and its blocking driver (``_jobs/logs.py``).

``TestDecisions`` walks the reader, which does no I/O, through every decision from a table.
``TestFollowers`` runs the same job histories, written by hand in a real directory (no
process, no timing: ``handmade_job.py``), through both drivers, ``Job.follow``'s blocking
one and the server's asyncio one, which must give the same bytes.
"""

from __future__ import annotations

import os

import pytest

from handmade_job import BLOCK, Blocking, HandMadeJob, Streaming, marker
from jobber import JobError
from jobber._jobs import logcut, logs
from jobber._jobs.follow import (
    LIVENESS_CHECK_S,
    Done,
    Emit,
    FollowReader,
    JobFacts,
    Look,
    NextAttempt,
    Open,
    Read,
    Wait,
    attempt_marker,
)
from jobber._jobs.status import JobStatus

C = 100  # the reader's chunk in the table
W = Wait(LIVENESS_CHECK_S)
RUNNING = JobFacts(ended=False)
ENDED = JobFacts(ended=True)
PENDING = JobFacts(ended=False, pending=True, note="in queue q")  # waits to start attempt 1
PENDING_2 = JobFacts(ended=False, attempt=2, pending=True, note="attempt 1 of 2 failed")
RUNNING_2 = JobFacts(ended=False, attempt=2)
RUNNING_3 = JobFacts(ended=False, attempt=3)
ENDED_2 = JobFacts(ended=True, attempt=2)

# Each script: what the driver tells the reader (tuples: a method and its arguments) and
# what the reader must answer then (actions), in order.
DECISIONS = {
    "a new follower looks at the status first": ({}, [Look()]),
    "offset 0 starts at the first attempt": ({}, [("saw", RUNNING_3), Open(1, 0)]),
    "offset 0 in the current attempt when told so": ({"from_first_attempt": False}, [("saw", RUNNING_3), Open(3, 0)]),
    "another offset is in the current attempt": ({"offset": 7}, [("saw", RUNNING_3), Open(3, 7)]),
    "a negative offset is resolved by the open": ({"offset": -4}, [("saw", RUNNING_2), Open(2, -4)]),
    "the attempt is chosen once": ({"offset": 7}, [("saw", RUNNING), ("saw", RUNNING_2), Open(1, 7)]),
    "nothing is opened while the attempt waits to start": ({}, [("saw", PENDING), W, W]),
    "an attempt before the pending one is read": ({}, [("saw", PENDING_2), Open(1, 0)]),
    "the log is opened once the attempt started": ({}, [("saw", PENDING), W, ("woke", {b"status.json"}), Look(),
                                                        ("saw", RUNNING), Open(1, 0)]),
    "no log yet: wait, then open again": ({}, [("saw", RUNNING), Open(1, 0), ("missing",), W,
                                               ("woke", {b"log"}), Open(1, 0)]),
    "no log and the job ended: done": ({}, [("saw", ENDED), Open(1, 0), ("missing",), Done(), Done()]),
    "no log and a later attempt: next attempt": ({}, [("saw", PENDING_2), Open(1, 0), ("missing",), NextAttempt(1)]),
    "the part of a cut's marker still to give comes first": (
        {}, [("saw", RUNNING), Open(1, 0), ("opened", b"ker]\n", 4096), Emit(b"ker]\n"), Read(4096, C)]),
    "a full read: read on at once": ({}, [("saw", RUNNING), ("opened", b"", 0), ("read", C, None), Read(C, C)]),
    "a short read while the job runs: wait": ({}, [("saw", RUNNING), ("opened", b"", 0), ("read", 5, None), W]),
    "a short read after the end: read again": ({}, [("saw", ENDED), ("opened", b"", 0), ("read", 5, None), Read(5, C)]),
    "nothing read while the job runs: wait": ({}, [("saw", RUNNING), ("opened", b"", 0), ("read", 0, None), W]),
    "nothing read after the end: done": ({}, [("saw", ENDED), ("opened", b"", 0), ("read", 0, None), Done()]),
    "a later attempt exists: its log is read to the end first": (
        {}, [("saw", RUNNING_2), ("opened", b"", 0), ("read", 3, None), Read(3, C), ("read", 0, None), NextAttempt(1)]),
    "the next attempt after the line saying why": (
        {}, [("saw", RUNNING_2), ("opened", b"", 0), ("read", 0, None), NextAttempt(1), ("next_attempt", "why"),
             Emit(attempt_marker("why")), Open(2, 0)]),
    "without an archived note, the status's note says why": (
        {}, [("saw", PENDING_2), ("missing",), NextAttempt(1), ("next_attempt", ""),
             Emit(attempt_marker("attempt 1 of 2 failed")), W]),
    "the last attempt ends the follow": (
        {}, [("saw", ENDED_2), ("opened", b"", 0), ("read", 0, None), NextAttempt(1), ("next_attempt", "n"),
             Emit(attempt_marker("n")), Open(2, 0), ("opened", b"", 0), ("read", 0, None), Done()]),
    "behind by whole attempts: each in turn": (
        {}, [("saw", RUNNING_3), Open(1, 0), ("missing",), NextAttempt(1), ("next_attempt", "1"), Emit(attempt_marker("1")),
             Open(2, 0), ("opened", b"", 0), ("read", 0, None), NextAttempt(2), ("next_attempt", "2"),
             Emit(attempt_marker("2")), Open(3, 0), ("opened", b"", 0), ("read", 0, None), W]),
    "outrun by the cap: a marker, then the kept bytes": (
        {}, [("saw", RUNNING), ("opened", b"", 40), ("read", 0, 100), Emit(logcut.marker(60)), Read(100, C)]),
    "a timeout: look again": ({}, [("saw", RUNNING), ("opened", b"", 0), ("read", 0, None), W, ("woke", None), Look()]),
    "a timeout with a heartbeat: b'' first": (
        {"heartbeat": 0.2}, [("saw", RUNNING), ("missing",), Wait(0.2), ("woke", []), Emit(b""), Look()]),
    "a heartbeat never waits longer than the liveness check": ({"heartbeat": 60}, [("saw", RUNNING), ("missing",), W]),
    "a change of the log: read, without a look": (
        {}, [("saw", RUNNING), ("opened", b"", 0), ("read", 0, None), ("woke", {b"log"}), Read(0, C)]),
    "a change of the status: look, then read": (
        {}, [("saw", RUNNING), ("opened", b"", 0), ("read", 0, None), ("woke", {b"log", b"status.json"}), Look(),
             ("saw", ENDED), Read(0, C)]),
}


class TestDecisions:
    @pytest.mark.parametrize("options, script", DECISIONS.values(), ids=DECISIONS.keys())
    def test_decision(self, options, script):
        reader = FollowReader(options.pop("offset", 0), chunk=C, **options)
        for number, step in enumerate(script):
            if isinstance(step, tuple):
                getattr(reader, step[0])(*step[1:])
            else:
                assert reader.next_action() == step, f"step {number}"

    def test_facts_of_a_status(self):
        assert JobFacts.of(JobStatus("pending", attempt=2, note="why")) == JobFacts(False, 2, True, "why")
        assert JobFacts.of(JobStatus("failed", attempt=3)) == JobFacts(True, 3, False, "")

    def test_the_attempt_marker(self):
        assert attempt_marker("attempt 1 of 2 failed") == b"\n[jobber: attempt 1 of 2 failed]\n"


@pytest.fixture(params=[Blocking, Streaming], ids=lambda kind: kind.name)
def follower(request):
    """Start a follower of a hand-made job, with the driver of this run; closed after."""
    made = []

    def start(job: HandMadeJob, offset: int = 0, **options) -> Blocking:
        made.append(request.param(job, offset, **options))
        return made[-1]

    yield start
    for one in made:
        one.close()


@pytest.fixture
def job(tmp_path) -> HandMadeJob:
    return HandMadeJob(tmp_path / "job")


class TestFollowers:
    def test_output_as_it_is_written_until_the_end(self, job, follower):
        job.write(b"one\n")
        follow = follower(job)
        follow.until(b"one\n")
        job.write(b"two\n")
        follow.until(b"one\ntwo\n")
        job.write(b"three\n")  # written before the end is recorded: drained after it
        job.set("exited")
        assert follow.rest() == b"one\ntwo\nthree\n"

    def test_every_attempt_with_the_archived_note_between(self, job, follower):
        job.write(b"first\n")
        follow = follower(job)
        follow.until(b"first\n")
        job.retry(1, "attempt 1 of 2 failed; attempt 2 starts in 1 s")
        expected = b"first\n" + marker("attempt 1 of 2 failed; attempt 2 starts in 1 s")
        follow.until(expected)
        job.write(b"second\n")
        job.set("running", 2)
        follow.until(expected + b"second\n")
        job.set("exited", 2)
        assert follow.rest() == expected + b"second\n"

    def test_a_follower_behind_by_whole_attempts_reads_them_in_order(self, job, follower):
        job.write(b"a1\n")
        follow = follower(job)
        follow.until(b"a1\n")
        job.write(b"more of a1\n")
        job.retry(1, "n1")
        job.write(b"a2\n")
        job.retry(2, "n2")
        job.write(b"a3\n")
        job.set("failed", 3)
        assert follow.rest() == b"a1\nmore of a1\n" + marker("n1") + b"a2\n" + marker("n2") + b"a3\n"

    def test_a_follower_that_starts_after_the_end_reads_every_attempt(self, job):
        job.write(b"a1\n")
        job.retry(1, "n1")
        job.write(b"a2\n")
        job.set("exited", 2)
        every = b"a1\n" + marker("n1") + b"a2\n"
        assert Blocking(job, 0).rest() == every
        assert Blocking(job, 1).rest() == b"2\n"  # another offset: in the current attempt's log
        assert Blocking(job, -2).rest() == b"2\n"

    def test_a_negative_offset_counts_back_from_the_end(self, job, follower):
        job.write(b"0123456789")
        follow = follower(job, -3)
        follow.until(b"789")
        job.set("exited")
        assert follow.rest() == b"789"

    def test_a_cut_log_reads_head_marker_and_tail(self, job, follower):
        job.write(b"a" * BLOCK + b"b" * BLOCK + b"c" * BLOCK)
        job.punch(BLOCK, BLOCK)
        job.set("exited")
        cut = logcut.marker(BLOCK)
        assert follower(job).rest() == b"a" * BLOCK + cut + b"c" * BLOCK
        assert follower(job, BLOCK + 5).rest() == cut[5:] + b"c" * BLOCK  # from inside the marker

    def test_a_follower_outrun_by_the_cap_says_how_much_it_missed(self, job, follower):
        job.write(b"a" * BLOCK)
        follow = follower(job)
        follow.until(b"a" * BLOCK)
        job.write(b"b" * 2 * BLOCK + b"c" * BLOCK)
        job.punch(BLOCK, 2 * BLOCK)  # what the follower was about to read
        job.set("exited")
        assert follow.rest() == b"a" * BLOCK + logcut.marker(2 * BLOCK) + b"c" * BLOCK

    def test_a_job_that_waits_is_followed_once_it_runs(self, job):
        job.set("pending", 1, "in queue q")
        follow = Blocking(job, 0, heartbeat=0.01)
        assert follow.next() == b""  # waiting, with heartbeats
        job.write(b"ran\n")
        job.set("running")
        follow.until(b"ran\n")
        job.set("exited")
        assert follow.rest() == b"ran\n"

    def test_a_log_that_does_not_exist_yet_is_waited_for(self, job):
        follow = Blocking(job, 0, heartbeat=0.01)
        assert follow.next() == b""
        job.write(b"late\n")
        follow.until(b"late\n")
        job.set("exited")
        assert follow.rest() == b"late\n"

    def test_a_silent_job_gets_heartbeats_and_no_bytes(self, job):
        job.write(b"x")
        follow = Blocking(job, 0, heartbeat=0.01)
        follow.until(b"x")
        assert [follow.next() for _ in range(3)] == [b"", b"", b""]

    def test_closing_a_follower_closes_its_log(self, job, follower):
        job.write(b"x")
        before = len(os.listdir("/proc/self/fd"))
        follow = follower(job)
        follow.until(b"x")
        follow.close()
        assert len(os.listdir("/proc/self/fd")) == before


class TestOneLog:
    """``logs.follow``: one log without attempts (Slurm's), the end from a callable."""

    def test_reads_until_ended_then_drains(self, tmp_path):
        log = tmp_path / "log"
        log.write_bytes(b"abc")
        ended = [False]
        chunks = logs.follow(log, 1, lambda: ended[0])
        assert next(chunks) == b"bc"
        with open(log, "ab") as f:
            f.write(b"def")
        ended[0] = True
        (tmp_path / "status.json").write_bytes(b"{}")  # the event that makes it look again
        assert b"".join(chunks) == b"def"

    def test_the_offset_is_checked(self, tmp_path):
        with pytest.raises(JobError, match="offset must be an int, not str"):
            next(logs.follow(tmp_path / "log", "0", lambda: True))  # type: ignore[arg-type]
        with pytest.raises(JobError, match="offset must be an int, not bool"):
            next(logs.follow_job(tmp_path, True, lambda: JobStatus("exited")))  # type: ignore[arg-type]


class TestAttemptFiles:
    def test_an_attempt_log_is_read_where_the_retry_moved_it(self, job):
        job.write(b"a1")
        fd = logs.open_attempt_log(job.log_path, 1)
        job.retry(1, "n1")
        job.write(b"a2")
        moved = logs.open_attempt_log(job.log_path, 1)  # the log is attempt 2's now
        current = logs.open_attempt_log(job.log_path, 2)
        try:
            assert [os.pread(f, 10, 0) for f in (fd, moved, current)] == [b"a1", b"a1", b"a2"]
        finally:
            for f in (fd, moved, current):
                os.close(f)

    def test_no_log_yet(self, job):
        assert logs.open_attempt_log(job.log_path, 1) == -1

    def test_the_retry_note(self, job):
        job.write(b"a1")
        assert logs.retry_note(job.path, 1) == ""
        job.retry(1, "why")
        assert logs.retry_note(job.path, 1) == "why"
        (job.path / "attempts" / "1" / "status.json").write_text("{")
        with pytest.raises(JobError, match="unreadable status of attempt 1"):
            logs.retry_note(job.path, 1)
