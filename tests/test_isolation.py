"""What confines a job: detection, placement of cgroups, limits in cgroupfs, clean-up.

Also what a job must not be able to do to its confinement: make a cgroup beneath its own
and move a setsid'd process there to outlive its timeout or stop (under umask 000, as a
tenant's uid and as root), and every directory's mode whatever the umask.

Runs on this host (cgroup v1) and in the cgroup v2 VM; each backend's own tests skip with
the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from jobber import JobError, Limits
from jobber._backends.context import Sandbox
from jobber._backends.local import cgroup_v1 as _cgroup_v1
from jobber._backends.local import cgroup_v2 as _cgroup_v2
from jobber._backends.local import cgroupfs as _cgroupfs
from jobber._backends.local.isolation import cgroup_owner, choose, detect
from jobber._backends.local.supervisor import process_start_time
from jobber._jobs.store import JobStore
from polling import poll, wait_for

BACKEND, REASON = choose()
on_v1 = pytest.mark.skipif(BACKEND.NAME != "cgroup-v1", reason=f"jobs here use {BACKEND.NAME}, not cgroup v1")
on_v2 = pytest.mark.skipif(BACKEND.NAME != "cgroup-v2", reason=f"jobs here use {BACKEND.NAME}, not cgroup v2 (run `make test-cgroup-v2`)")


def running_job(store, limits=None):
    job = store.new_job("sleep 300", limits)
    job.start()
    return job


def record_of(job) -> dict:
    import json

    return json.loads((job.path / "confinement.json").read_text())


class TestDetection:
    def test_detects_the_layout_from_mountinfo(self):
        mounts = _cgroupfs.mountinfo()
        has_v1_memory = any(t == "cgroup" and "memory" in o for _m, t, o in mounts)
        expected = "cgroup-v1" if has_v1_memory else "cgroup-v2" if _cgroup_v2.mountpoint() else "none"
        assert detect() == expected

    def test_override_to_none_says_why(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        job = store.new_job("true", Limits(memory="64M", cpu=1))
        job.start()
        status = job.wait(30)
        assert status.isolation == "none"
        assert "JOBBER_ISOLATION=none" in status.isolation_note
        assert "cpu limit not enforced" in status.isolation_note

    def test_unknown_override_is_refused(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "cgroup-v3")
        with pytest.raises(JobError, match="not one of"):
            store.new_job("true").start()

    def test_require_isolation_refuses_to_run_unconfined(self, store, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        job = store.new_job("true", Limits(memory="64M", require_isolation=True))
        with pytest.raises(JobError, match="needs isolation"):
            job.start()
        assert job.status().state == "created"


@on_v1
class TestCgroupV1:
    def test_cgroups_sit_beneath_the_starters_own(self, store):
        job = running_job(store)
        own = _cgroupfs.self_cgroups()
        for controller, path in record_of(job)["dirs"].items():
            mount = _cgroup_v1.mounts()[controller]
            expected = os.path.join(mount, own[controller].lstrip("/"), "jobber", cgroup_owner(store.owner, str(job.path)),
                                    str(job.id))
            assert path == expected
        pid = job.status().pid
        assert f"jobber/{cgroup_owner(store.owner, str(job.path))}/{job.id}" in _cgroupfs.self_cgroups(str(pid))["memory"]

    def test_limits_are_written_to_cgroupfs(self, store):
        job = running_job(store, Limits(cpu=0.25, memory="64M", pids=30, io_read_bps="2M"))
        dirs = record_of(job)["dirs"]
        assert _cgroupfs.read(f"{dirs['memory']}/memory.limit_in_bytes") == str(64 << 20)
        if os.path.exists(f"{dirs['memory']}/memory.memsw.limit_in_bytes"):
            assert _cgroupfs.read(f"{dirs['memory']}/memory.memsw.limit_in_bytes") == str(64 << 20)
        assert _cgroupfs.read(f"{dirs['cpu']}/cpu.cfs_quota_us") == "25000"
        assert _cgroupfs.read(f"{dirs['pids']}/pids.max") == "30"
        disk = _cgroupfs.whole_disk(str(job.path))
        if disk:
            assert _cgroupfs.read(f"{dirs['blkio']}/blkio.throttle.read_bps_device") == f"{disk} {2 << 20}"

    def test_cgroups_are_removed_when_the_job_ends(self, store):
        job = running_job(store)
        dirs = record_of(job)["dirs"]
        job.stop(grace=0)
        assert not any(os.path.exists(d) for d in dirs.values())


@on_v2
class TestCgroupV2:
    def test_job_is_a_leaf_with_limits(self, store):
        job = running_job(store, Limits(cpu=0.5, memory="64M", pids=30))
        path = record_of(job)["dirs"]["unified"]
        assert path.endswith(f"/jobber/{cgroup_owner(store.owner, str(job.path))}/{job.id}")
        assert _cgroupfs.read(f"{path}/memory.max") == str(64 << 20)
        assert _cgroupfs.read(f"{path}/memory.swap.max") == "0"
        assert _cgroupfs.read(f"{path}/memory.oom.group") == "1"
        assert _cgroupfs.read(f"{path}/cpu.max") == "50000 100000"
        assert _cgroupfs.read(f"{path}/pids.max") == "30"
        assert str(job.status().pid) in _cgroupfs.read(f"{path}/cgroup.procs").split()
        job.stop(grace=0)
        assert not os.path.exists(path)

    @pytest.mark.skipif(os.geteuid() != 0, reason="makes a cgroup at the hierarchy's root: needs root "
                        "(tests/test_systemd.py covers the delegated case)")
    def test_starter_outside_the_root_is_moved_into_a_leaf_first(self, store):
        mount = _cgroup_v2.mountpoint()
        own_before = _cgroupfs.self_cgroups()[""]
        anchor = Path(mount) / "jobber-test-anchor"
        anchor.mkdir(exist_ok=True)
        try:
            _cgroupfs.write(str(anchor / "cgroup.procs"), str(os.getpid()))
            job = running_job(store, Limits(memory="64M"))
            path = record_of(job)["dirs"]["unified"]
            assert path == str(anchor / "jobber" / cgroup_owner(store.owner, str(job.path)) / str(job.id))
            # No processes in inner nodes: the starter now lives in the anchor's leaf.
            assert _cgroupfs.self_cgroups()[""] == "/jobber-test-anchor/jobber.leaf"
            assert "memory" in _cgroupfs.read(str(anchor / "cgroup.subtree_control"))
            # A second job from the leaf anchors at the same place, not one level deeper.
            second = running_job(store)
            assert record_of(second)["dirs"]["unified"].startswith(str(anchor / "jobber"))
            job.stop(grace=0)
            second.stop(grace=0)
        finally:
            _cgroupfs.write(os.path.join(mount, own_before.lstrip("/"), "cgroup.procs"), str(os.getpid()))
            for leftover in (anchor / "jobber.leaf", anchor / "jobber" / store.owner, anchor / "jobber", anchor):
                deadline = time.monotonic() + 2
                while leftover.exists() and time.monotonic() < deadline:
                    try:
                        leftover.rmdir()
                    except OSError:
                        time.sleep(0.05)
        assert not anchor.exists()

    def test_stop_uses_cgroup_kill(self, store):
        job = running_job(store)
        path = record_of(job)["dirs"]["unified"]
        assert os.path.exists(f"{path}/cgroup.kill")
        assert job.stop(grace=0).state == "stopped"


@pytest.mark.skipif(BACKEND.NAME == "none", reason="jobs here run unconfined: there is no cgroup to vanish")
def test_killing_a_cgroup_the_supervisor_just_removed_is_not_an_error(store):
    # stop() races the supervisor: the last process may end, and its cgroup go, between
    # the stopper's look at the status and its kill. Seen once in the systemd VM.
    from jobber._backends.local.isolation import open_cgroup

    job = store.new_job("true")
    job.start()
    job.wait(30)
    record = record_of(job)
    wait_for_gone = time.monotonic() + 5
    while any(os.path.isdir(d) for d in record["dirs"].values()) and time.monotonic() < wait_for_gone:
        time.sleep(0.02)
    assert not any(os.path.isdir(d) for d in record["dirs"].values())
    cgroup = open_cgroup(record)
    cgroup.kill_all()
    assert cgroup.signal_all(15) == 0


@pytest.mark.skipif(BACKEND.NAME != "none" or os.environ.get("JOBBER_ISOLATION"),
                    reason="only for a host where jobs really run unconfined (make test-unprivileged)")
class TestUnconfinedHost:
    def test_status_says_the_job_is_not_isolated_and_why(self, store):
        job = store.new_job("true", Limits(memory="256M"))
        job.start()
        status = job.wait(30)
        assert status.isolation == "none"
        assert "not isolated" in status.isolation_note
        assert f"uid {os.geteuid()}" in status.isolation_note or "no cgroup" in status.isolation_note

    def test_memory_is_capped_as_address_space(self, store):
        job = store.new_job(f"{sys.executable} -c 'bytearray(400 << 20)'", Limits(memory="200M"))
        job.start()
        status = job.wait(30)
        assert status.state == "failed"
        buf = bytearray(8192)
        assert b"MemoryError" in buf[: job.tail(buf)]
        assert "RLIMIT_AS" in status.isolation_note

    def test_stop_reaches_a_setsid_escapee_through_its_tag(self, store, tmp_path):
        marker = tmp_path / "pid"
        job = store.new_job(f"setsid sh -c 'echo $$ > {marker}; exec sleep 300' & sleep 300")
        job.start()
        deadline = time.monotonic() + 10
        while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        escapee = int(marker.read_text())
        assert job.stop(grace=0).state == "stopped"
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{escapee}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not os.path.exists(f"/proc/{escapee}")


@pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {REASON}")
class TestSetupFailure:
    def test_a_refused_limit_is_a_job_error_and_leaves_no_cgroup(self, store, monkeypatch):
        real_write = _cgroupfs.write

        def refuse_memory(path: str, value: str) -> None:
            if path.endswith(("memory.limit_in_bytes", "memory.max")):
                raise OSError(22, "Invalid argument", path)  # as the kernel answers a bad value
            real_write(path, value)

        monkeypatch.setattr(_cgroupfs, "write", refuse_memory)
        job = store.new_job("true", Limits(memory="64M"))
        with pytest.raises(JobError, match=r"cannot set up the cgroup of job 1: Invalid argument at .*memory"):
            job.start()
        leftovers = [p for p in Path("/sys/fs/cgroup").rglob(f"jobber/{store.owner}.*/*") if p.is_dir()]
        assert leftovers == []
        assert job.status().state == "created"
        monkeypatch.setattr(_cgroupfs, "write", real_write)
        job.start()  # fixed: the same job starts now
        assert job.wait(30).state == "exited"


@pytest.mark.skipif(BACKEND.NAME == "none", reason=f"no writable cgroup here: {REASON}")
def test_two_jobs_directories_never_share_a_cgroup(tmp_path, monkeypatch):
    """The same certificate's job 1 in two $JOBBER_JOBS_DIRs: two cgroups, both confined."""
    owner = "c" * 64
    jobs = []
    for name in ("a", "b"):
        monkeypatch.setenv("JOBBER_JOBS_DIR", str(tmp_path / name))
        job = JobStore(owner).new_job("sleep 30")
        job.start()
        jobs.append(job)
    try:
        assert [job.id for job in jobs] == [1, 1]
        dirs = [set(json.loads((job.path / "confinement.json").read_bytes())["dirs"].values()) for job in jobs]
        assert not dirs[0] & dirs[1]
        assert all(job.status().state == "running" for job in jobs)
    finally:
        for job in jobs:
            job.stop(grace=0)


# A job that tries to leave its cgroup for one of its own making: a setsid'd sleep, moved
# into a cgroup made beneath each of the job's (what an audit did under umask 000).
ESCAPE = r'''
import errno, os, time
sleeper = os.fork()
if sleeper == 0:
    os.setsid()
    os.execvp("sleep", ["sleep", "400"])
print("sleeper", sleeper, flush=True)
mounts = []
for line in open("/proc/self/mountinfo"):
    left, _, right = line.partition(" - ")
    fields, rfields = left.split(), right.split()
    if rfields[0] in ("cgroup", "cgroup2"):
        mounts.append((fields[4], rfields[0], set(rfields[2].split(","))))
for line in open("/proc/self/cgroup"):
    _hid, controllers, path = line.rstrip("\n").split(":", 2)
    if "/jobber/" not in path:
        continue  # a hierarchy the job was not moved into: not the job's cgroup
    for mount, fstype, options in mounts:
        if fstype == "cgroup2" if not controllers else set(controllers.split(",")) <= options:
            sub = mount + path + "/escape"
            try:
                os.mkdir(sub)
                with open(sub + "/cgroup.procs", "w") as f:
                    f.write(str(sleeper))
                print("escaped", sub, flush=True)
            except OSError as err:
                print("refused", sub, errno.errorcode[err.errno], flush=True)
print("ready", flush=True)
time.sleep(600)
'''


@pytest.mark.skipif(BACKEND.NAME == "none", reason=f"no writable cgroup here: {REASON}")
@pytest.mark.skipif(os.geteuid() != 0, reason="under umask 777 only root can use what it just made")
@pytest.mark.parametrize("umask", [0o000, 0o777])
def test_every_directory_has_its_mode_whatever_the_umask(store, umask):
    """Job directories 0700; cgroups 0711 above a job's (passable, not listable) and 0755
    for the job's own (readable, no cgroup can be made beneath it by anyone else)."""
    old = os.umask(umask)
    try:
        job = running_job(store)
    finally:
        os.umask(old)
    try:
        modes = {path: os.stat(path).st_mode & 0o7777 for path in (job.path, job.path.parent)}
        assert set(modes.values()) == {0o700}, modes
        for path in record_of(job)["dirs"].values():
            inner = (os.path.dirname(path), os.path.dirname(os.path.dirname(path)))
            modes = {p: os.stat(p).st_mode & 0o7777 for p in (path, *inner)}
            assert modes == {path: 0o755, inner[0]: 0o711, inner[1]: 0o711}, modes
    finally:
        job.stop(grace=0)


@pytest.fixture
def umask_000():
    """The umask some service managers and containers start a server with."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.skipif(BACKEND.NAME == "none", reason=f"no writable cgroup here: {REASON}")
@pytest.mark.skipif(os.geteuid() != 0, reason="runs a job as another uid, as a server's tenant: needs root")
@pytest.mark.usefixtures("umask_000")
class TestNoEscapeIntoASubCgroup:
    """Under umask 000: a tenant's job cannot make a cgroup beneath its own; a job that
    can (root's own) still cannot keep a process past its timeout or stop, and leaves no
    cgroup behind."""

    TENANT = 200_778  # no passwd entry on a test host

    def escape(self, store, *, tenant: bool, timeout: float | None):
        job = store.new_job(f"exec /usr/bin/python3 -c {shlex.quote(ESCAPE)}", timeout=timeout)
        if tenant:
            job._backend.start(user=f"#{self.TENANT}", cwd=None, sandbox=Sandbox())
        else:
            job.start()
        buf = bytearray(1 << 16)
        wait_for(lambda: b"ready\n" in buf[: job.tail(buf)] or job.status().ended, 30, "the job's attempts")
        lines = bytes(buf[: job.tail(buf)]).decode().splitlines()
        assert "ready" in lines, (lines, job.status())
        sleeper = int(lines[0].split()[1])
        started = process_start_time(sleeper)
        assert started is not None, lines
        dirs = set(record_of(job)["dirs"].values())
        for path in dirs:
            assert os.stat(path).st_mode & 0o7777 == 0o755, path
        return job, lines, sleeper, started, dirs

    def assert_nothing_left(self, job, sleeper, started, dirs):
        assert poll(lambda: process_start_time(sleeper) != started, 10), "the escaped sleep outlived the job"
        assert not [path for path in dirs if os.path.exists(path)], "cgroups left behind"

    def test_a_tenants_job_cannot_make_a_cgroup_and_its_sleep_ends_at_the_timeout(self, store):
        job, lines, sleeper, started, dirs = self.escape(store, tenant=True, timeout=8)
        refused = [line for line in lines if line.startswith("refused")]
        assert refused and not [line for line in lines if line.startswith("escaped")], lines
        assert all(line.endswith("EACCES") for line in refused), lines
        assert job.wait(60).state == "timed-out"
        self.assert_nothing_left(job, sleeper, started, dirs)

    def test_a_process_moved_beneath_the_jobs_cgroup_ends_at_the_timeout(self, store):
        job, lines, sleeper, started, dirs = self.escape(store, tenant=False, timeout=8)
        escaped = [line.split()[1] for line in lines if line.startswith("escaped")]
        assert escaped, lines  # root may: the kill must reach beneath the job's cgroup
        assert job.wait(60).state == "timed-out"
        self.assert_nothing_left(job, sleeper, started, dirs)
        assert not [path for path in escaped if os.path.exists(path)]

    def test_a_process_moved_beneath_the_jobs_cgroup_ends_at_stop(self, store):
        job, lines, sleeper, started, dirs = self.escape(store, tenant=False, timeout=None)
        assert [line for line in lines if line.startswith("escaped")], lines
        assert job.stop(grace=0).state == "stopped"
        self.assert_nothing_left(job, sleeper, started, dirs)
