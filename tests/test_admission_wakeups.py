"""Coalesced admission passes (``waking.py``, ``admission.run_pass``): a finisher whose ask a
later pass served execs no admission of its own; an admission process passes again for a
finisher that asked meanwhile; and through all of it no place is left unseen.

The waits are observed, not slept for: a finisher blocked on the admission lock shows in
``/proc/locks`` as a waiter ("->").
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading

import pytest

from jobber._backends.local import admission, waking
from jobber._backends.local.lanes import WAITING
from polling import wait_for


def _locked(owner_dir) -> int:
    fd = os.open(owner_dir / waking.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _someone_waits_for(path) -> bool:
    """Does a process wait for the flock of ``path`` (a "->" line of /proc/locks on its inode)?"""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as f:
        return any("->" in fields and fields[-3].endswith(f":{inode}") for fields in map(str.split, f))


class _Finisher(threading.Thread):
    """``waking._still_wanted`` in a thread: the lock a test holds is another open file, so
    flock makes the thread wait as it would another process."""

    def __init__(self, owner_dir) -> None:
        super().__init__(daemon=True)
        self.owner_dir = str(owner_dir)
        self.answer: bool | None = None

    def run(self) -> None:
        self.answer = waking._still_wanted(self.owner_dir)


class TestAFinisherAsks:
    def test_with_the_lock_free_it_runs_the_pass_itself(self, tmp_path):
        assert waking._still_wanted(str(tmp_path)) is True
        assert (tmp_path / waking.WANTED).exists()  # asked: the pass it execs removes it

    def test_a_pass_begun_after_its_ask_serves_it_and_it_execs_nothing(self, tmp_path):
        held = _locked(tmp_path)
        finisher = _Finisher(tmp_path)
        finisher.start()
        wait_for(lambda: _someone_waits_for(tmp_path / waking.LOCK), 30, "the finisher to wait for the lock")
        os.rename(tmp_path / waking.WANTED, tmp_path / waking.SERVING)  # what a pass does, holding the lock
        os.unlink(tmp_path / waking.SERVING)  # ... once through
        os.close(held)
        finisher.join(30)
        assert finisher.answer is False

    def test_a_pass_killed_after_it_took_the_ask_leaves_it_to_run_one(self, tmp_path):
        held = _locked(tmp_path)
        finisher = _Finisher(tmp_path)
        finisher.start()
        wait_for(lambda: _someone_waits_for(tmp_path / waking.LOCK), 30, "the finisher to wait for the lock")
        os.rename(tmp_path / waking.WANTED, tmp_path / waking.SERVING)  # then the pass dies: never through
        os.close(held)
        finisher.join(30)
        assert finisher.answer is True

    def test_a_lock_released_with_no_pass_leaves_it_to_run_one(self, tmp_path):
        held = _locked(tmp_path)  # a holder that runs no pass (a job put in line, say)
        finisher = _Finisher(tmp_path)
        finisher.start()
        wait_for(lambda: _someone_waits_for(tmp_path / waking.LOCK), 30, "the finisher to wait for the lock")
        os.close(held)
        finisher.join(30)
        assert finisher.answer is True

    def test_a_holder_killed_mid_pass_frees_the_lock_and_the_finisher_runs_the_pass(self, tmp_path):
        code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)")
        holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / waking.LOCK)], stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"held\n"
            finisher = _Finisher(tmp_path)
            finisher.start()
            wait_for(lambda: _someone_waits_for(tmp_path / waking.LOCK), 30, "the finisher to wait for the lock")
        finally:
            holder.kill()
            holder.wait()
        finisher.join(30)
        assert finisher.answer is True


class TestAnAdmissionProcess:
    @pytest.fixture
    def passes(self, tmp_path, monkeypatch):
        """Count the passes run; each of the first ``asks`` passes gets a finisher's ask meanwhile."""
        (tmp_path / WAITING).mkdir()
        ran = {"count": 0, "asks": 0}

        def run(one) -> None:
            ran["count"] += 1
            assert not (tmp_path / waking.WANTED).exists()  # taken before the pass read anything
            if ran["count"] <= ran["asks"]:
                (tmp_path / waking.WANTED).touch()

        monkeypatch.setattr(admission._Pass, "run", run)
        return ran

    def test_passes_again_while_a_finisher_asked_during_the_last(self, tmp_path, passes):
        passes["asks"] = 2
        admission.run_pass(tmp_path, tmp_path.name, lambda *a: None, again=8)
        assert passes["count"] == 3
        assert not (tmp_path / waking.SERVING).exists()  # through: no finisher runs a pass of its own

    def test_stops_after_its_bound_and_leaves_the_ask_for_the_finisher(self, tmp_path, passes):
        passes["asks"] = 100
        admission.run_pass(tmp_path, tmp_path.name, lambda *a: None, again=3)
        assert passes["count"] == 4
        assert (tmp_path / waking.WANTED).exists()  # the finisher that asked finds it: it runs its own

    def test_a_pass_elsewhere_runs_once(self, tmp_path, passes):
        passes["asks"] = 100
        admission.run_pass(tmp_path, tmp_path.name, lambda *a: None)
        assert passes["count"] == 1


def test_forty_jobs_ending_together_each_run_once_with_no_starter_alive(store, tmp_path):
    # Finishers coalesce their passes here (eight places, jobs of a few milliseconds): none
    # may be left unseen. Only the marker files are read: a status() would run a pass itself.
    store.set_queue("q", parallel=8)
    jobs = [store.new_job(f"echo ran >> {tmp_path}/$JOBBER_JOB_ID", queue="q") for _ in range(40)]
    code = ("import sys; from jobber._jobs.store import JobStore; s = JobStore(sys.argv[1]); "
            "[s.get_job(int(i)).start() for i in sys.argv[2:]]")
    subprocess.run([sys.executable, "-c", code, store.owner, *(str(j.id) for j in jobs)], check=True,
                   env={**os.environ, "JOBBER_JOBS_DIR": str(store.root)})
    ran = lambda job: (tmp_path / str(job.id)).exists()  # noqa: E731
    wait_for(lambda: all(ran(job) for job in jobs), 120, "every job to run, admitted by finishers")
    assert [(tmp_path / str(job.id)).read_text() for job in jobs] == ["ran\n"] * 40
