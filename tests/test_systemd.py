"""An ordinary user on a systemd host: jobs get a cgroup delegated by the user's manager.

Runs for real in the systemd VM (``make test-systemd-user``: pure cgroup v2, systemd as
PID 1, a lingering user manager), as an unprivileged user, twice: with every controller
delegated (``JOBBER_TEST_DELEGATED=all``, the drop-in the docs give) and with Debian's
default delegation (``JOBBER_TEST_DELEGATED=default``: cpu memory pids, no io).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobber import Limits
from jobber._backends.local import systemd
from jobber._jobs.store import JobStore
from polling import wait_for

DELEGATED = os.environ.get("JOBBER_TEST_DELEGATED")
pytestmark = pytest.mark.skipif(
    DELEGATED is None or os.geteuid() == 0 or systemd.manager_reachable() is not None,
    reason="needs an unprivileged user with a systemd user manager (make test-systemd-user runs this in a VM): "
    + (systemd.manager_reachable() or f"uid {os.geteuid()}, JOBBER_TEST_DELEGATED={DELEGATED}"),
)


def unit_cgroup() -> Path:
    answer = subprocess.run(["systemctl", "--user", "show", "-p", "ControlGroup", "--value", systemd.UNIT],
                            capture_output=True, text=True, check=True)
    return Path("/sys/fs/cgroup") / answer.stdout.strip().lstrip("/")


def record_of(job) -> dict:
    return json.loads((job.path / "confinement.json").read_bytes())


def test_a_job_is_confined_in_a_cgroup_the_user_manager_delegated(store):
    job = store.new_job("sleep 30", Limits(memory="64M", cpu=0.5, pids=50))
    job.start()
    status = job.status()
    assert status.isolation == "cgroup-v2"
    assert f"delegated by systemd: {systemd.UNIT}" in status.isolation_note
    path = Path(record_of(job)["dirs"]["unified"])
    assert unit_cgroup() in path.parents
    assert (path / "memory.max").read_text().strip() == str(64 << 20)
    assert (path / "pids.max").read_text().strip() == "50"
    assert (path / "cpu.max").read_text().split()[0] == "50000"
    assert str(status.pid) in (path / "cgroup.procs").read_text().split()
    job.stop(grace=0)
    assert not path.exists()


def test_the_unit_holds_only_its_keeper_in_a_leaf(store):
    store.new_job("true").start()
    keeper_leaf = unit_cgroup() / "jobber.leaf"
    assert (unit_cgroup() / "cgroup.procs").read_text().split() == []
    assert len((keeper_leaf / "cgroup.procs").read_text().split()) == 1


def on_a_disk(store: JobStore, monkeypatch) -> tuple[JobStore, str | None]:
    """io.max needs a real disk under the job directory: the VM's ext4 disk when there is one."""
    block = os.environ.get("JOBBER_TEST_BLOCK_DIR")
    if not block:
        return store, None
    monkeypatch.setenv("JOBBER_JOBS_DIR", os.path.join(block, f"jobs-{os.getuid()}"))
    return JobStore(store.owner), block


def test_io_is_enforced_or_named_with_its_fix(store, monkeypatch):
    store, block = on_a_disk(store, monkeypatch)
    job = store.new_job("true", Limits(io_write_bps="1M"))
    job.start()
    status = job.wait(60)
    if DELEGATED == "all":
        if not block:
            pytest.skip("no block device for the jobs directory (JOBBER_TEST_BLOCK_DIR)")
        assert "io" not in record_of(job)["unenforced"], status.isolation_note
        assert "io limit" not in status.isolation_note
    else:
        assert "io" in record_of(job)["unenforced"]
        assert "io limit not enforced: systemd's user manager does not delegate the io controller" in status.isolation_note
        assert "/etc/systemd/system/user@.service.d/delegate.conf" in status.isolation_note
        assert "Delegate=cpu cpuset io memory pids" in status.isolation_note


def test_require_isolation_refuses_an_undelegated_io_limit(store, monkeypatch):
    from jobber import JobError

    store, block = on_a_disk(store, monkeypatch)
    job = store.new_job("true", Limits(io_write_bps="1M", require_isolation=True))
    if DELEGATED == "all":
        if not block:
            pytest.skip("no block device for the jobs directory (JOBBER_TEST_BLOCK_DIR)")
        job.start()
        assert job.wait(60).state == "exited"
    else:
        with pytest.raises(JobError, match="io"):
            job.start()
        assert job.status().state == "created"


def test_memory_and_pids_hold_under_the_default_delegation_too(store):
    hog = store.new_job(f"{sys.executable} -c \"b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])\"",
                        Limits(memory="50M"))
    hog.start()
    assert hog.wait(120).state == "oom-killed"


def test_a_job_outlives_the_process_that_started_it(store):
    code = (f"import sys; from jobber._jobs.store import JobStore\n"
            f"job = JobStore({store.owner!r}).new_job('sleep 60'); job.start(); print(job.id)")
    job_id = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=120).stdout)
    job = store.get_job(job_id)
    assert job.status().state == "running" and job.status().isolation == "cgroup-v2"
    assert job.stop(grace=0).state == "stopped"


def test_stop_kills_a_setsid_escapee(store, tmp_path):
    pidfile = tmp_path / "escapee"
    job = store.new_job(f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' & sleep 300")
    job.start()
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 60, "the escapee to start")
    escapee = int(pidfile.read_text())
    job.stop(grace=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(escapee, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(escapee, signal.SIGKILL)
        pytest.fail("the setsid escapee survived stop()")


@pytest.fixture
def store(jobs_dir) -> JobStore:
    return JobStore(os.urandom(32).hex())
