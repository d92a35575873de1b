"""``jobber._server.watch``: the server's one inotify, its subscriptions, and the follows
and waits on it, on a real event loop over real directories (no server, no process).

What a follow reads is ``test_follow.py``'s (both drivers); here is what is the server's
own: sharing one watch per directory, waking subscribers, shutting down, and the offsets.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from handmade_job import BLOCK, HandMadeJob, Streaming, marker
from jobber._jobs import logcut
from jobber._server.watch import ServerClosing, WatchHub, follow_log, resolve_offset, wait_for_end


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def hub(loop):
    hub = WatchHub(loop)
    yield hub
    hub.close()


@pytest.fixture
def job(tmp_path) -> HandMadeJob:
    return HandMadeJob(tmp_path / "job")


class TestWatchHub:
    def test_one_watch_per_directory_however_many_subscribe(self, hub, tmp_path):
        first, second = hub.subscribe(tmp_path), hub.subscribe(tmp_path)
        assert hub.watch_count == 1
        hub.unsubscribe(first)
        assert hub.watch_count == 1
        hub.unsubscribe(second)
        assert hub.watch_count == 0

    def test_every_subscriber_of_a_directory_is_told_what_changed(self, hub, loop, tmp_path):
        other = tmp_path / "other"
        other.mkdir()
        subs = [hub.subscribe(tmp_path), hub.subscribe(tmp_path), hub.subscribe(other)]
        (tmp_path / "log").write_bytes(b"x")
        (tmp_path / "status.json").write_bytes(b"{}")
        names = [loop.run_until_complete(sub.wait(30)) for sub in subs[:2]]
        assert names == [{b"log", b"status.json"}] * 2
        assert loop.run_until_complete(subs[2].wait(0)) is None  # nothing changed there

    def test_a_change_while_busy_is_kept_for_the_next_wait(self, hub, loop, tmp_path):
        sub = hub.subscribe(tmp_path)
        (tmp_path / "log").write_bytes(b"x")
        for _ in range(10_000):  # the loop runs until the hub has read the event; nobody waits
            if sub.names:
                break
            loop.run_until_complete(asyncio.sleep(0))
        assert loop.run_until_complete(sub.wait(0)) == {b"log"}
        assert loop.run_until_complete(sub.wait(0)) is None  # each change is told once

    def test_a_wait_without_a_change_times_out(self, hub, loop, tmp_path):
        assert loop.run_until_complete(hub.subscribe(tmp_path).wait(0.01)) is None

    def test_a_removed_directory_wakes_its_subscribers_and_drops_its_watch(self, hub, loop, tmp_path):
        gone = tmp_path / "gone"
        gone.mkdir()
        sub = hub.subscribe(gone)
        gone.rmdir()
        assert b"" in loop.run_until_complete(sub.wait(30))
        assert hub.watch_count == 0
        hub.unsubscribe(sub)  # after the kernel dropped the watch: harmless

    def test_unsubscribing_twice_is_harmless(self, hub, tmp_path):
        sub = hub.subscribe(tmp_path)
        hub.unsubscribe(sub)
        hub.unsubscribe(sub)
        assert hub.watch_count == 0

    def test_a_missing_directory_cannot_be_subscribed(self, hub, tmp_path):
        with pytest.raises(FileNotFoundError):
            hub.subscribe(tmp_path / "missing")

    def test_close_wakes_every_subscriber_and_is_idempotent(self, hub, loop, tmp_path):
        sub = hub.subscribe(tmp_path)
        waiting = loop.create_task(sub.wait(30))
        loop.run_until_complete(asyncio.sleep(0))
        hub.close()
        assert loop.run_until_complete(waiting) == {b""}
        assert hub.closed and hub.watch_count == 0
        hub.close()


class TestFollowLog:
    def test_the_hub_closing_ends_a_waiting_follower(self, job, hub, loop):
        job.write(b"x")
        chunks = follow_log(hub, job, 0)
        assert loop.run_until_complete(chunks.__anext__()) == b"x"
        waiting = loop.create_task(chunks.__anext__())
        loop.run_until_complete(asyncio.sleep(0))
        hub.close()
        with pytest.raises(ServerClosing):
            loop.run_until_complete(waiting)

    def test_a_follower_leaves_no_watch_and_no_open_log(self, job, hub, loop):
        job.write(b"x")
        before = len(os.listdir("/proc/self/fd"))
        chunks = follow_log(hub, job, 0)
        assert loop.run_until_complete(chunks.__anext__()) == b"x"
        assert hub.watch_count == 1
        loop.run_until_complete(chunks.aclose())  # the client went away
        assert hub.watch_count == 0
        assert len(os.listdir("/proc/self/fd")) == before

    def test_a_follower_of_a_job_that_ended_leaves_no_watch(self, job, hub, loop):
        job.write(b"x")
        job.set("exited")

        async def everything():
            return b"".join([chunk async for chunk in follow_log(hub, job, 0)])

        assert loop.run_until_complete(everything()) == b"x"
        assert hub.watch_count == 0

    def test_offset_0_is_the_current_attempts_unless_told_the_first(self, job):
        # The server resolves a tail against the current log before it follows, so a 0
        # it is given may be that log's start: only the caller can say it meant the job's.
        job.write(b"a1\n")
        job.retry(1, "n1")
        job.write(b"a2\n")
        job.set("exited", 2)
        followers = [Streaming(job, 0), Streaming(job, 0, from_first_attempt=True)]
        try:
            assert [f.rest() for f in followers] == [b"a2\n", b"a1\n" + marker("n1") + b"a2\n"]
        finally:
            for f in followers:
                f.close()

    def test_chunks_are_at_most_follow_chunk(self, job, hub, loop):
        from jobber._server.watch import FOLLOW_CHUNK

        job.write(b"z" * (FOLLOW_CHUNK + 10))
        job.set("exited")

        async def sizes():
            return [len(chunk) async for chunk in follow_log(hub, job, 0)]

        assert loop.run_until_complete(sizes()) == [FOLLOW_CHUNK, 10]


class TestWaitForEnd:
    def test_returns_once_the_job_ended(self, job, hub, loop):
        waiting = loop.create_task(wait_for_end(hub, job, 30))
        loop.run_until_complete(asyncio.sleep(0))
        job.set("failed")
        assert loop.run_until_complete(waiting).state == "failed"
        assert hub.watch_count == 0

    def test_returns_the_status_at_the_timeout(self, job, hub, loop):
        assert loop.run_until_complete(wait_for_end(hub, job, 0.01)).state == "running"

    def test_returns_when_the_hub_closes(self, job, hub, loop):
        waiting = loop.create_task(wait_for_end(hub, job, 30))
        loop.run_until_complete(asyncio.sleep(0))
        hub.close()
        assert loop.run_until_complete(waiting).state == "running"


class TestResolveOffset:
    def test_a_positive_offset_is_kept(self, job):
        assert resolve_offset(job.log_path, 7) == 7  # even past the end, and with no log

    @pytest.mark.parametrize("offset, expected", [(-3, 7), (-10, 0), (-11, 0)])
    def test_a_negative_offset_counts_back_from_the_end(self, job, offset, expected):
        job.write(b"0123456789")
        assert resolve_offset(job.log_path, offset) == expected

    def test_no_log_yet_is_an_empty_log(self, job):
        assert resolve_offset(job.log_path, -3) == 0

    def test_a_cut_log_counts_its_marker(self, job):
        job.write(b"a" * BLOCK + b"b" * BLOCK + b"c" * BLOCK)
        job.punch(BLOCK, BLOCK)
        assert resolve_offset(job.log_path, -1) == 2 * BLOCK + len(logcut.marker(BLOCK)) - 1
