"""A job removed under its readers: status, wait and follow end with JobNotFound that says
so, never a raw FileNotFoundError (``inotify_add_watch``) nor a "created" job that never was.

The remover is another thread or another process (``jobber rm``), as in a notebook whose
clean-up cell removes jobs that live views still follow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from jobber import JobNotFound


def _remove_soon(job, started: threading.Event) -> threading.Thread:
    """Remove ``job`` from another thread once the follower has begun."""
    def remove():
        started.wait(10)
        job.remove()

    thread = threading.Thread(target=remove)
    thread.start()
    return thread


class TestStatus:
    def test_status_of_a_removed_job_says_it_was_removed(self, store):
        job = store.new_job("true")
        store.get_job(job.id).remove()  # another handle of the same job
        with pytest.raises(JobNotFound, match=rf"job {job.id} was removed") as caught:
            job.status()
        assert caught.value.job_id == job.id

    def test_removing_twice_is_harmless(self, store):
        job = store.new_job("true")
        job.remove()
        job.remove()
        with pytest.raises(JobNotFound):
            store.get_job(job.id)

    def test_wait_on_a_removed_job_says_it_was_removed(self, store):
        job = store.new_job("true")
        job.remove()
        with pytest.raises(JobNotFound, match="was removed"):
            job.wait(5)


class TestFollow:
    def test_following_a_removed_job_raises_job_not_found(self, store):
        job = store.new_job("echo hi")
        job.start()
        job.wait(30)
        job.remove()
        with pytest.raises(JobNotFound, match=rf"job {job.id} was removed \(its directory .* is gone"):
            next(job.follow(heartbeat=0.1))

    def test_a_job_removed_by_another_thread_ends_its_follow(self, store):
        job = store.new_job("echo never started")  # waits for a start that never comes
        chunks = job.follow(heartbeat=0.05)
        started = threading.Event()
        remover = _remove_soon(job, started)
        seen = []
        with pytest.raises(JobNotFound, match=rf"job {job.id} was removed"):
            for chunk in chunks:  # heartbeats until the removal is seen
                seen.append(chunk)
                started.set()
        remover.join(10)
        assert seen and not any(seen), "only heartbeats: the job never ran"

    def test_a_job_removed_by_another_process_ends_its_follow(self, identity, jobs_dir):
        job = identity.new_job("echo never started")
        chunks = job.follow(heartbeat=0.05)
        assert next(chunks) == b""  # following: the directory is watched
        removed = subprocess.run([sys.executable, "-m", "jobber", "rm", str(job.id)], capture_output=True,
                                 text=True, env=os.environ, timeout=60)
        assert removed.returncode == 0, removed.stderr
        with pytest.raises(JobNotFound, match=rf"job {job.id} was removed"):
            for _chunk in chunks:
                pass

    def test_an_ended_job_removed_mid_follow_ends_or_says_so(self, store):
        job = store.new_job("seq 1 100000")
        job.start()
        job.wait(30)
        chunks = job.follow(heartbeat=0.05)
        first = next(chunks)
        assert first.startswith(b"1\n")
        job.remove()
        # The log held open is read to its end, or the removal is seen first: either way
        # the follow ends, with no other error than the one that says what happened.
        try:
            rest = b"".join(chunks)
        except JobNotFound as err:
            assert "was removed" in str(err)
        else:
            assert (first + rest).endswith(b"100000\n")


class TestRemoteFollow:
    def test_a_remote_job_removed_while_followed_ends_its_follow(self, session):
        job = session.new_job("echo never started")
        chunks = job.follow(heartbeat=0.05)
        assert next(chunks) == b""
        session.get_job(job.id).remove()
        with pytest.raises(JobNotFound):
            for _chunk in chunks:
                pass
        with pytest.raises(JobNotFound):
            job.status()


class TestListingsWhileJobsGo:
    """A job removed between a listing and the read of its status (another process's prune
    or rm) is left out of what walks every job, never failing the whole walk."""

    @pytest.fixture
    def listed_then_one_removed(self, store, monkeypatch):
        jobs = [store.new_job("true", label="walk") for _ in range(3)]
        listed = store.get_jobs()
        store.get_job(jobs[1].id).remove()  # gone after the listing was read
        monkeypatch.setattr(store, "get_jobs", lambda label=None: list(listed))
        return store, jobs

    def test_ls_leaves_it_out(self, listed_then_one_removed):
        import argparse

        from jobber._select_flags import listing

        store, jobs = listed_then_one_removed
        args = argparse.Namespace(label=None, state=None, last=200, all=False)
        rows, hidden = listing(store, args)
        assert [job.id for job, _ in rows] == [jobs[0].id, jobs[2].id] and hidden == 0
        args.state = ["created"]
        assert [job.id for job, _ in listing(store, args)[0]] == [jobs[0].id, jobs[2].id]

    def test_prune_and_queues_leave_it_out(self, listed_then_one_removed):
        store, jobs = listed_then_one_removed
        assert store.prune(older_than=0.000001, dry_run=True) == [jobs[0].id, jobs[2].id]
        assert store.queues() == {}


class TestHeartbeats:
    def test_a_quiet_jobs_follower_gets_its_heartbeats_through_the_usage_samples(self, store):
        """The supervisor appends a usage sample twice a second; a follower waits through
        them, so heartbeats (b"") still come about once per ``heartbeat`` seconds."""
        job = store.new_job("sleep 4")
        job.start()
        try:
            beats = sum(1 for chunk in job.follow(0, heartbeat=0.5) if chunk == b"")
        finally:
            job.stop(grace=0)
        assert beats >= 3, beats  # about 8 in 4 s; none before the fix
