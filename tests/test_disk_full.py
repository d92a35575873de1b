"""A full disk loses nothing, for real: the jobs directory on a 20 MiB tmpfs.

A job that writes 30 MB there has its log stopped short of filling the filesystem (its
status says "disk full", some room is kept), its ending recorded with its exit code, and
the next job runs. With the filesystem filled to the last byte by something else, a job's
ending is still recorded (from the space its reserve held), a new job is refused with a
``DiskFull`` that names the filesystem, the CLI says so without a traceback, and no
temporary or half-made file is left; a retried job whose hand-over to the next attempt
cannot be written keeps the attempt's real outcome (its exit code, "not retried"). Both supervisors run every test.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _stop_everything
from jobber import JobError
from jobber._errors import DiskFull
from jobber._jobs.jobdir import JobDir
from jobber._jobs.store import JobStore
from jobber_magics._display import status_html
from polling import poll, wait_for

pytestmark = pytest.mark.usefixtures("launcher")  # both supervisors (conftest.py)

SIZE = 20 << 20
HEADROOM = 1 << 20  # what a log leaves free on a 20 MiB filesystem (logcap.headroom)
WRITE_30MB = "yes 0123456789abcdef | head -c 30000000"


@pytest.fixture
def small_disk(tmp_path, monkeypatch) -> Path:
    """A 20 MiB tmpfs as $JOBBER_JOBS_DIR's filesystem, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    jobs = mount / "jobs"
    monkeypatch.setenv("JOBBER_JOBS_DIR", str(jobs))
    try:
        yield mount
    finally:
        left = _stop_everything(jobs)
        # A supervisor may still be finishing (it removes the reserve just after the
        # outcome a waiter reads): the filesystem is busy until it has gone.
        unmounted = poll(lambda: subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0,
                         timeout=30, every=0.1)
        if not unmounted:
            busy = subprocess.run(["umount", str(mount)], capture_output=True, text=True).stderr
            subprocess.run(["umount", "-l", str(mount)], check=True)
            pytest.fail(f"{mount} stayed busy after the test: {busy}")
        assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def store(small_disk) -> JobStore:
    return JobStore("d" * 64)


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere below ``root``, and reserves of jobs that have ended."""
    found = [str(p) for p in root.rglob("*.tmp")]
    for reserve in root.rglob(".reserve"):
        status = reserve.parent / "status.json"
        if status.exists() and '"running"' not in status.read_text() and '"pending"' not in status.read_text():
            found.append(str(reserve))
    return found


def assert_no_leftovers(root: Path) -> None:
    """No temporary file, no reserve of an ended job (its supervisor removes the reserve
    just after writing the outcome a waiter reads: poll)."""
    assert poll(lambda: not leftovers(root), timeout=10), leftovers(root)


def fill(path: Path) -> Path:
    """Fill the filesystem of ``path`` to its last byte with one file."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    out.write(b"\xff" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


def read_all(job) -> bytes:
    out, offset, buf = bytearray(), 0, bytearray(1 << 20)
    while n := job.tail(buf, offset):
        out += buf[:n]
        offset += n
    return bytes(out)


@pytest.fixture
def gate(tmp_path) -> Path:
    """A flag outside the small disk: the job ends once it exists."""
    return tmp_path / "go"


class TestALogPastTheDisk:
    def test_the_log_stops_short_the_ending_is_recorded_and_the_next_job_runs(self, small_disk, identity, gate):
        job = identity.new_job(f"{WRITE_30MB}; while [ ! -e {gate} ]; do sleep 0.02; done; exit 3")
        job.start()
        running = wait_for(lambda: (s := job.status()).log_stopped and s, timeout=60, what="the log to stop")
        assert running.state == "running" and running.log_stopped.startswith("disk full"), running
        assert "log stopped: disk full" in status_html(job.id, running)  # the live view
        gate.touch()
        status = job.wait(120)
        assert (status.state, status.exit_code) == ("failed", 3), status.describe()
        assert status.log_stopped.startswith("disk full"), status
        assert free_bytes(small_disk) >= HEADROOM, "the log did not leave the filesystem its headroom"
        data = read_all(job)
        assert data.startswith(b"0123456789abcdef\n" * 1000)  # what came before the stop is kept
        assert b"\0" not in data
        assert_no_leftovers(small_disk)
        shown = subprocess.run([sys.executable, "-m", "jobber", "status", str(job.id)],
                               capture_output=True, text=True, timeout=60)
        assert "log        stopped: disk full" in shown.stdout, shown.stdout + shown.stderr

        nxt = identity.new_job("echo next")
        nxt.start()
        assert nxt.wait(60).state == "exited"
        assert read_all(nxt) == b"next\n"
        assert_no_leftovers(small_disk)


class TestAFilledDisk:
    def test_the_ending_is_recorded_from_the_reserve(self, small_disk, store, gate):
        job = store.new_job(f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 5")
        job.start()
        assert job.status().state == "running"
        fill(small_disk)
        assert free_bytes(small_disk) == 0
        gate.touch()
        status = job.wait(60)
        assert (status.state, status.exit_code) == ("failed", 5), status.describe()
        assert_no_leftovers(small_disk)

    def test_a_new_job_is_refused_with_the_filesystem_and_what_to_do(self, small_disk, store):
        done = store.new_job("true")
        done.start()
        assert done.wait(60).state == "exited"
        filler = fill(small_disk)
        before = sorted(p.name for p in store.path.iterdir())
        with pytest.raises(DiskFull, match=f"the filesystem at {small_disk} is full: free space there") as caught:
            store.new_job("echo refused")
        assert isinstance(caught.value, JobError) and caught.value.mount == str(small_disk)
        assert sorted(p.name for p in store.path.iterdir()) == before, "a half-made job was left behind"
        assert_no_leftovers(small_disk)
        filler.unlink()
        again = store.new_job("echo again")
        again.start()
        assert again.wait(60).state == "exited"
        assert read_all(again) == b"again\n"

    def test_only_the_final_status_may_use_the_reserve(self, small_disk, store):
        job = store.new_job("true")  # made, not started: its reserve is set aside
        jobdir = JobDir(store.path, store.owner, job.id)
        filler = fill(small_disk)
        try:
            with pytest.raises(DiskFull):  # a queued job's note: not from the reserve
                jobdir.write("status.json", {"state": "pending", "waiting": True, "note": "queued"})
            assert (jobdir.path / ".reserve").exists(), "a pending status used up the reserve"
            jobdir.write("status.json", {"state": "failed", "exit_code": None, "signal": None,
                                         "oom_killed": False, "error": "refused"})
            assert not (jobdir.path / ".reserve").exists()
            assert job.status().state == "failed"
        finally:
            filler.unlink()
        assert_no_leftovers(small_disk)

    def test_the_cli_says_so_without_a_traceback(self, small_disk, identity):
        fill(small_disk)
        result = subprocess.run([sys.executable, "-m", "jobber", "run", "--", "echo refused"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        assert f"the filesystem at {small_disk} is full" in result.stderr, result.stderr


class TestARetryOnAFullDisk:
    def test_the_attempt_s_real_outcome_is_recorded_not_retried(self, small_disk, store, tmp_path, monkeypatch):
        monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")
        gate = tmp_path / "go"  # outside the small disk
        job = store.new_job(f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; exit 3", retries=2)
        job.start()
        assert job.status().state == "running"
        fill(small_disk)  # the hand-over to the retry cannot be written; the outcome has the reserve
        gate.touch()
        status = job.wait(60)
        assert (status.state, status.exit_code, status.attempt) == ("failed", 3, 1), status.describe()
        assert status.note.startswith("not retried: cannot write ") and "is full" in status.note, status.note
        assert b"".join(job.follow()) == b"first\n"  # the attempt's log, where it was
        assert not (job.path / "attempts").exists()
        assert_no_leftovers(small_disk)


def test_the_headroom_rule():
    from jobber._backends.local.logcap import headroom

    assert headroom(SIZE) == HEADROOM
    assert headroom(100 << 30) == 256 << 20
    assert headroom(10 << 30) == (10 << 30) // 50


class TestTheLastTrim:
    """The finishing half's trim, for a log that filled the disk after the last look."""

    def make_log(self, small_disk: Path, size: int) -> Path:
        job_dir = small_disk / "job"
        job_dir.mkdir()
        (job_dir / "log").write_bytes(b"0123456789abcdef" * (size // 16))
        return job_dir

    def test_what_came_after_the_last_look_gives_the_headroom_back(self, small_disk):
        from jobber._backends.local.logcap import trim_log

        job_dir = self.make_log(small_disk, 12 << 20)
        fill(small_disk)
        trim_log(str(job_dir), 0, seen=4 << 20)
        assert free_bytes(small_disk) >= HEADROOM
        data = (job_dir / "log").read_bytes()
        assert data[: 4 << 20] == b"0123456789abcdef" * ((4 << 20) // 16), "what the last look saw is kept"
        assert (job_dir / "log-stopped").read_text().startswith("disk full")

    def test_a_log_that_did_not_grow_since_is_left_alone(self, small_disk):
        from jobber._backends.local.logcap import trim_log

        job_dir = self.make_log(small_disk, 12 << 20)
        fill(small_disk)
        before = os.stat(job_dir / "log").st_blocks
        trim_log(str(job_dir), 0, seen=12 << 20)
        assert os.stat(job_dir / "log").st_blocks == before
        assert not (job_dir / "log-stopped").exists()
