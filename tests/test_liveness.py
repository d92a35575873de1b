"""Is a recorded (pid, start time) still that process? One answer for every reader
(``jobber._backends.local.liveness.alive``: the status read, a lost start, the watchdog's reaper)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobber._backends.local import admission, backend, reap
from jobber._backends.local.liveness import alive
from jobber._backends.local.supervisor import process_start_time
from polling import wait_for


def _state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[0]


@pytest.fixture
def child():
    """A live child process, killed and reaped afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def zombie():
    """A child that has exited and is not reaped yet (a zombie), reaped afterwards."""
    proc = subprocess.Popen(["true"])
    wait_for(lambda: _state(proc.pid) == b"Z", what="the child to become a zombie")
    yield proc
    proc.wait()


class TestAlive:
    def test_the_same_process(self):
        assert alive(os.getpid(), process_start_time(os.getpid()))

    def test_another_process_with_the_pid(self):
        # What a reused pid looks like: the pid runs, but started at another time.
        assert not alive(os.getpid(), process_start_time(os.getpid()) + 1)

    def test_without_a_start_time_a_live_process_with_the_pid_counts(self, child):
        # Calling a live supervisor dead would kill its job: without a start time to
        # tell a reused pid apart, the running process is taken to be the one recorded.
        assert alive(child.pid, None)
        assert alive(child.pid, process_start_time(child.pid))

    def test_a_zombie_has_ended(self, zombie):
        assert os.path.exists(f"/proc/{zombie.pid}")  # what the old test of liveness looked at
        assert not alive(zombie.pid, None)

    def test_a_process_that_is_gone(self):
        proc = subprocess.Popen(["true"])
        start = process_start_time(proc.pid)
        proc.wait()
        assert not alive(proc.pid, start)
        assert not alive(proc.pid, None)

    @pytest.mark.parametrize("pid", [None, 0])
    def test_no_pid(self, pid):
        assert not alive(pid, None)
        assert not alive(pid, 12345)

    def test_every_reader_asks_the_same_function(self):
        for module in (admission, backend, reap):
            assert module.alive is alive, module.__name__
            assert not hasattr(module, "_alive"), module.__name__
