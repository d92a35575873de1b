"""GPUs without a GPU: fake NVIDIA device nodes (``mknod``, major 195), named by ``$JOBBER_GPUS``.

A fake node has no driver behind it, so opening it fails either way; *how* it fails is the
point. ENXIO (or ENODEV) comes from the missing driver, after the device controller let the
open through; EPERM comes from the device controller itself (v1 ``devices.deny``, v2 the
BPF device program). The same file runs on this machine (cgroup v1, as root) and in the
pure cgroup v2 VM (``make test-cgroup-v2``); a test for the other layout skips and says so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobber import LimitError, Limits
from jobber._backends.local import cgroup_v2, device_cover, gpu_claims, gpus, isolation
from jobber._backends.local.bpf_devices import BpfUnavailable
from jobber._backends.local.isolation import choose, open_cgroup
from jobber._jobs.store import JobStore
from polling import wait_for

BACKEND, UNCONFINED_REASON = choose()
ISOLATION = BACKEND.NAME
ALLOWED = ("ENXIO", "ENODEV")  # the cgroup let the open through; no driver answered it
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="fake GPU nodes need mknod, which needs root")
needs_v1 = pytest.mark.skipif(ISOLATION != "cgroup-v1",
                              reason=f"cgroup v1 devices.deny: jobs here use {ISOLATION} (the v2 VM runs the v2 test)")
needs_v2 = pytest.mark.skipif(ISOLATION != "cgroup-v2",
                              reason=f"cgroup v2 BPF device program: jobs here use {ISOLATION} "
                                     "(make test-cgroup-v2 runs it)")
needs_cgroup = pytest.mark.skipif(ISOLATION == "none", reason=f"jobs are not isolated here: {UNCONFINED_REASON}")

# Opens each node read-write and prints the errno it got, then the GPU variables.
PROBE = textwrap.dedent("""\
    import errno, os, sys
    for path in sys.argv[1:]:
        try:
            os.close(os.open(path, os.O_RDWR))
            print(path, "opened")
        except OSError as err:
            print(path, errno.errorcode[err.errno])
    print("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    print("NVIDIA_VISIBLE_DEVICES", os.environ.get("NVIDIA_VISIBLE_DEVICES"))
""")


both_launchers = pytest.mark.parametrize("launcher", ["compiled", "python"], indirect=True)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch) -> list[Path]:
    """Two fake GPUs, /tmp/.../nvidia0 (195:0) and nvidia1 (195:1), as ``$JOBBER_GPUS``.

    The supervisor inherits the environment, so jobs and their finishers see them too.
    """
    if os.geteuid() != 0:
        pytest.skip("fake GPU nodes need mknod, which needs root")
    nodes = []
    for minor in (0, 1):
        path = tmp_path / f"nvidia{minor}"
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(gpus.NVIDIA_MAJOR, minor))
        nodes.append(path)
    monkeypatch.setenv("JOBBER_GPUS", ",".join(str(p) for p in nodes))
    return nodes


def probe_command(nodes: list[Path], gate: Path | None = None) -> str:
    wait = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; " if gate else ""
    return wait + " ".join(shlex.quote(part) for part in [sys.executable, "-c", PROBE, *map(str, nodes)])


def probe_output(job) -> dict[str, str]:
    buf = bytearray(8192)
    n = job.tail(buf)
    return dict(line.split(" ", 1) for line in buf[:n].decode().splitlines() if " " in line)


def confinement(job) -> dict:
    return json.loads((job.path / "confinement.json").read_text())


def visible(job) -> str:
    """The job's CUDA_VISIBLE_DEVICES as its admission pass wrote it into spec.json."""
    return json.loads((job.path / "spec.json").read_text())["env"]["CUDA_VISIBLE_DEVICES"]


def wired(job) -> bool:
    """Does the backend pass the job's GPUs on to isolation.prepare (devices=)?"""
    return "gpus" in confinement(job)


class TestDiscover:
    @pytest.fixture(autouse=True)
    def fresh(self, monkeypatch, tmp_path):
        monkeypatch.setattr(gpus, "_cache", {})
        monkeypatch.setattr(gpus, "_PROC_GPUS", str(tmp_path / "proc-gpus"))
        monkeypatch.setattr(gpus, "_DEV_GLOB", str(tmp_path / "dev" / "nvidia[0-9]*"))
        monkeypatch.delenv("JOBBER_GPUS", raising=False)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")

    def fake_smi(self, tmp_path: Path, output: str, code: int = 0) -> None:
        (tmp_path / "bin").mkdir(exist_ok=True)
        smi = tmp_path / "bin" / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 2\ncat <<'EOF'\n{output}EOF\nexit {code}\n")
        smi.chmod(0o755)

    def fake_proc(self, tmp_path: Path, minors_by_bus: dict[str, int]) -> None:
        for bus, minor in minors_by_bus.items():
            (tmp_path / "proc-gpus" / bus).mkdir(parents=True)
            (tmp_path / "proc-gpus" / bus / "information").write_text(
                f"Model: \t\t NVIDIA A100\nIRQ:   \t\t 42\nDevice Minor: \t {minor}\nBus Location: \t {bus}\n")

    def test_none_at_all(self):
        assert gpus.discover() == []

    def test_jobber_gpus_none(self, monkeypatch):
        monkeypatch.setenv("JOBBER_GPUS", "none")
        assert gpus.discover() == []

    def test_jobber_gpus_names_character_devices_in_order(self, monkeypatch, tmp_path):
        self.fake_smi(tmp_path, "GPU 0: A (UUID: GPU-0)\nGPU 1: B (UUID: GPU-1)\nGPU 2: C (UUID: GPU-2)\n")
        monkeypatch.setenv("JOBBER_GPUS", f"/dev/zero, /dev/null,{tmp_path}/not-there")
        null, zero = os.stat("/dev/null").st_rdev, os.stat("/dev/zero").st_rdev
        assert gpus.discover() == [gpus.Gpu(0, "/dev/zero", os.major(zero), os.minor(zero)),
                                   gpus.Gpu(1, "/dev/null", os.major(null), os.minor(null))]

    def test_nvidia_smi_counts_and_proc_orders_by_bus(self, tmp_path):
        self.fake_smi(tmp_path, "GPU 0: NVIDIA A100 (UUID: GPU-a)\nGPU 1: NVIDIA A100 (UUID: GPU-b)\n")
        self.fake_proc(tmp_path, {"0000:af:00.0": 0, "0000:3b:00.0": 1, "0000:d8:00.0": 2})
        # nvidia-smi sees two (a third is, say, fallen off the bus): the first two by bus id.
        assert gpus.discover() == [gpus.Gpu(0, "/dev/nvidia1", 195, 1), gpus.Gpu(1, "/dev/nvidia0", 195, 0)]

    def test_a_failing_nvidia_smi_is_passed_over(self, tmp_path):
        self.fake_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", 9)
        self.fake_proc(tmp_path, {"0000:3b:00.0": 0})
        assert gpus.discover() == [gpus.Gpu(0, "/dev/nvidia0", 195, 0)]

    @needs_root
    def test_dev_nodes_by_number_without_a_driver_to_ask(self, tmp_path):
        (tmp_path / "dev").mkdir()
        for minor in (10, 2):
            os.mknod(tmp_path / "dev" / f"nvidia{minor}", stat.S_IFCHR | 0o600, os.makedev(195, minor))
        (tmp_path / "dev" / "nvidiactl").touch()  # not a GPU, though the glob could match its kin
        found = gpus.discover()
        assert [(g.index, g.minor) for g in found] == [(0, 2), (1, 10)]


class TestCheckRequest:
    def test_a_host_without_gpus_refuses_clearly(self, monkeypatch):
        monkeypatch.setenv("JOBBER_GPUS", "none")
        with pytest.raises(LimitError, match=r"^this host has no GPUs \(nvidia-smi, /proc/driver/nvidia/gpus and "
                                             r"/dev/nvidia\* show none; set JOBBER_GPUS .* --backend slurm\)$"):
            gpus.check_request(1)

    def test_more_than_the_host_has(self, monkeypatch):
        monkeypatch.setenv("JOBBER_GPUS", "/dev/null,/dev/zero")
        with pytest.raises(LimitError, match=r"^this host has 2 GPUs; gpus=4 can never be given$"):
            gpus.check_request(4)
        gpus.check_request(2)
        gpus.check_request(0)
        gpus.check_request(None)

    def test_new_job_refuses_on_a_host_without_gpus(self, monkeypatch, store):
        monkeypatch.setenv("JOBBER_GPUS", "none")
        try:
            job = store.new_job("true", Limits(gpus=1))
        except LimitError as err:
            assert str(err).startswith("this host has no GPUs")
        else:
            assert job.status().state == "created"
            pytest.skip("jobber/_jobs/store.py does not call gpus.check_request yet")

    def test_slurm_jobs_are_not_refused(self, monkeypatch, store):
        monkeypatch.setenv("JOBBER_GPUS", "none")
        job = store.new_job("true", Limits(gpus=1), backend="slurm")
        assert job.limits.gpus == 1


class TestProgram:
    def test_one_block_per_device_between_the_loads_and_the_verdicts(self):
        from jobber._backends.local.bpf_devices import program

        # 4 loads, the device-type check, 2 per device, allow (2), deny (2)
        assert len(program([(195, 1)])) == 8 * (4 + 1 + 2 + 4)
        assert len(program([(195, 1), (195, 2), (195, 7)])) == 8 * (4 + 1 + 6 + 4)


class TestFence:
    """isolation.prepare(devices=) on this host's kernel, a process in the job's cgroup probing."""

    def probe_in(self, record: dict, nodes: list[Path]) -> dict[str, str]:
        joins = [arg for flag, arg in zip(*[iter(open_cgroup(record).launch_args())] * 2) if flag == "--join"]
        script = ("import os, sys\nn = int(sys.argv[1])\nfor procs in sys.argv[2:2 + n]:\n"
                  "    open(procs, 'w').write(str(os.getpid()))\nsys.argv[1:] = sys.argv[2 + n:]\n" + PROBE)
        out = subprocess.run([sys.executable, "-c", script, str(len(joins)), *joins, *map(str, nodes)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    def prepare(self, store, tmp_path, devices):
        job_dir = tmp_path / "jobs-dir" / store.owner / "1"
        job_dir.mkdir(parents=True)
        return isolation.prepare(store.owner, 1, Limits(), str(job_dir), devices=devices)

    @needs_v1
    def test_v1_devices_deny_the_other_gpu(self, fake_gpus, store, tmp_path):
        record = self.prepare(store, tmp_path, [0])
        cgroup = open_cgroup(record)
        try:
            assert record["gpus"] == {"given": [0], "denied": ["195:1"], "fenced_by": "devices.deny"}
            assert "gpus" not in record["unenforced"]
            assert "c 195:1 rwm" not in (Path(record["dirs"]["devices"]) / "devices.list").read_text()
            got = self.probe_in(record, fake_gpus)
            assert got[str(fake_gpus[0])] in ALLOWED and got[str(fake_gpus[1])] == "EPERM"
        finally:
            cgroup.remove()
        assert not os.path.isdir(record["dirs"]["devices"])

    @needs_v1
    def test_v1_a_job_without_gpus_is_fenced_from_every_gpu(self, fake_gpus, store, tmp_path):
        record = self.prepare(store, tmp_path, None)
        cgroup = open_cgroup(record)
        try:
            assert record["gpus"] == {"given": [], "denied": ["195:0", "195:1"], "fenced_by": "devices.deny"}
            got = self.probe_in(record, fake_gpus)
            assert got[str(fake_gpus[0])] == got[str(fake_gpus[1])] == "EPERM", got
        finally:
            cgroup.remove()

    @needs_v2
    def test_v2_a_job_without_gpus_is_fenced_from_every_gpu(self, fake_gpus, store, tmp_path):
        record = self.prepare(store, tmp_path, None)
        cgroup = open_cgroup(record)
        try:
            assert record["gpus"] == {"given": [], "denied": ["195:0", "195:1"], "fenced_by": "bpf"}
            got = self.probe_in(record, fake_gpus)
            assert got[str(fake_gpus[0])] == got[str(fake_gpus[1])] == "EPERM", got
        finally:
            cgroup.remove()

    @needs_root
    @needs_cgroup
    def test_jobber_gpu_fence_off_shares_the_gpus_with_jobs_without_gpus(self, fake_gpus, store, tmp_path,
                                                                         monkeypatch):
        monkeypatch.setenv("JOBBER_GPU_FENCE", "off")
        record = self.prepare(store, tmp_path, None)
        cgroup = open_cgroup(record)
        try:
            assert "gpus" not in record and "devices" not in record.get("dirs", {})
            got = self.probe_in(record, fake_gpus)
            assert got[str(fake_gpus[0])] in ALLOWED and got[str(fake_gpus[1])] in ALLOWED, got
        finally:
            cgroup.remove()

    def test_a_host_without_gpus_fences_nothing(self, monkeypatch, store, tmp_path):
        monkeypatch.setenv("JOBBER_GPUS", "none")
        record = self.prepare(store, tmp_path, None)
        open_cgroup(record).remove()
        assert "gpus" not in record and "devices" not in record.get("dirs", {})

    @needs_v2
    def test_v2_a_bpf_program_denies_the_other_gpu(self, fake_gpus, store, tmp_path):
        record = self.prepare(store, tmp_path, [1])
        cgroup = open_cgroup(record)
        try:
            assert record["gpus"] == {"given": [1], "denied": ["195:0"], "fenced_by": "bpf"}
            assert "gpus" not in record["unenforced"]
            got = self.probe_in(record, fake_gpus)
            assert got[str(fake_gpus[1])] in ALLOWED and got[str(fake_gpus[0])] == "EPERM"
            assert self.probe_in(record, [Path("/dev/null")])["/dev/null"] == "opened"
        finally:
            cgroup.remove()

    @needs_root
    @needs_cgroup
    def test_a_job_given_every_gpu_is_not_fenced(self, fake_gpus, store, tmp_path):
        record = self.prepare(store, tmp_path, [0, 1])
        open_cgroup(record).remove()
        assert record["gpus"] == {"given": [0, 1], "denied": [], "fenced_by": None}
        assert "gpus" not in record["unenforced"]

    def test_v2_without_cap_sys_admin_the_note_says_why(self, monkeypatch):
        from jobber._backends.local import bpf_devices

        def refuse(path, denied):
            raise BpfUnavailable(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(bpf_devices, "deny_char_devices", refuse)
        monkeypatch.setattr(device_cover, "unavailable", lambda: "user namespaces are not available to uid 1000 (x)")
        monkeypatch.setattr(device_cover.os, "geteuid", lambda: 1000)
        record = {"notes": [], "unenforced": [], "unenforced_why": {}}
        cgroup_v2._fence("/sys/fs/cgroup/jobber/x/1", [(195, 1)], record, "/tmp/job")
        assert "devices_fenced_by" not in record
        assert record["devices_why"].startswith("loading a BPF device program needs CAP_SYS_ADMIN or CAP_BPF")
        assert record["devices_why"].endswith(", and user namespaces are not available to uid 1000 (x)")

    def test_v2_without_cap_sys_admin_the_nodes_are_covered_in_a_namespace(self, monkeypatch, fake_gpus):
        from jobber._backends.local import bpf_devices

        def refuse(path, denied):
            raise BpfUnavailable(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(bpf_devices, "deny_char_devices", refuse)
        monkeypatch.setattr(device_cover, "unavailable", lambda: None)
        monkeypatch.setattr(device_cover.os, "geteuid", lambda: 1000)
        record = {"notes": [], "unenforced": [], "unenforced_why": {}, "dirs": {"unified": "/sys/fs/cgroup/j/x/1"}}
        cgroup_v2._fence("/sys/fs/cgroup/j/x/1", [(195, 1)], record, "/tmp/job")
        assert record["devices_fenced_by"] == "mount namespace" and record["hide_devices"] == [str(fake_gpus[1])]
        assert cgroup_v2.Cgroup(record).launch_args()[-4:] == ["--hide-device", str(fake_gpus[1]), "--device-cover",
                                                              "/tmp/job/no-device"]

    def test_without_a_cgroup_the_note_says_the_gpus_are_not_fenced(self, monkeypatch, store, tmp_path):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        monkeypatch.setenv("JOBBER_GPUS", "/dev/null,/dev/zero")
        record = self.prepare(store, tmp_path, [0])
        assert record["gpus"] == {"given": [0], "denied": [], "fenced_by": None}
        assert record["unenforced"][-1] == "gpus"
        why = ("a job of root keeps its capabilities in a namespace of its own, and could remove the cover"
               if os.geteuid() == 0 else device_cover.unavailable())
        if why is None:
            pytest.skip("an ordinary user's unconfined job here is fenced in a namespace (test_gpus_users.py)")
        assert record["notes"][-1] == (
            f"GPUs not fenced: without a cgroup there is no device controller, and {why}; the job is pointed at "
            "GPU 0 by CUDA_VISIBLE_DEVICES only, and could open the other GPUs' device nodes")


class TestClaims:
    """gpu_claims on its own: one abstract socket name per GPU, bound by one process at a time."""

    def test_a_claimed_gpu_cannot_be_claimed_again_until_given_back(self, fake_gpus):
        found = gpus.discover()
        first = gpu_claims.bind(found, 2)
        assert first is not None and first[0] == [0, 1]
        try:
            assert gpu_claims.bind(found, 1) is None
            assert gpu_claims.in_use(found) == {0, 1}
        finally:
            for sock in first[1]:
                sock.close()
        assert gpu_claims.in_use(found) == set()
        again = gpu_claims.bind(found, 1)
        assert again is not None and again[0] == [0]
        again[1][0].close()

    def test_a_holder_killed_with_kill_9_gives_its_claim_back(self, fake_gpus):
        found = gpus.discover()
        code = ("import sys, time\nfrom jobber._backends.local import gpu_claims, gpus\n"
                "held = gpu_claims.bind(gpus.discover(), 2)\nprint(held[0], flush=True)\ntime.sleep(300)\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "[0, 1]\n"
            assert gpu_claims.in_use(found) == {0, 1} and gpu_claims.bind(found, 1) is None
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert gpu_claims.in_use(found) == set()

    def test_a_flood_of_connections_does_not_free_a_held_gpu(self, fake_gpus, store, tmp_path):
        gate = tmp_path / "gate"
        job = store.new_job(probe_command(fake_gpus, gate), Limits(gpus=1))
        job.start()
        wait_for(lambda: job.status().state == "running", 60, "the GPU job to run")
        found = gpus.discover()
        flood = []
        try:
            for _ in range(300):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(gpu_claims.address(found[0].major, found[0].minor, found[0].path))
                flood.append(sock)
            assert gpu_claims.in_use(found) == {0}
            assert gpu_claims.bind(found[:1], 1) is None
        finally:
            for sock in flood:
                sock.close()
            gate.touch()
        assert job.wait(60).state == "exited"
        wait_for(lambda: not gpu_claims.in_use(found), 30, "the GPU to be given back")


@both_launchers
class TestJobs:
    def test_the_job_sees_its_gpu_and_only_it_opens(self, launcher, fake_gpus, store):
        job = store.new_job(probe_command(fake_gpus), Limits(gpus=1))
        job.start()
        assert job.wait(60).state == "exited"
        got = probe_output(job)
        assert got["CUDA_VISIBLE_DEVICES"] == got["NVIDIA_VISIBLE_DEVICES"] == "0"
        if ISOLATION == "none":
            assert "GPUs not fenced" in job.status().isolation_note
            return
        if not wired(job):
            pytest.skip("jobber/_backends/local/backend.py does not pass devices= to isolation.prepare yet")
        assert got[str(fake_gpus[0])] in ALLOWED, got
        assert got[str(fake_gpus[1])] == "EPERM", got
        assert confinement(job)["gpus"]["denied"] == ["195:1"]

    def test_two_jobs_never_share_a_gpu_and_a_third_waits_its_turn(self, launcher, fake_gpus, store, tmp_path):
        gates = [tmp_path / f"gate{i}" for i in range(3)]
        jobs = [store.new_job(probe_command(fake_gpus, gate), Limits(gpus=1)) for gate in gates]
        for job in jobs[:2]:
            job.start()
        wait_for(lambda: all(j.status().state == "running" for j in jobs[:2]), 60, "the first two jobs to run")
        given = [visible(j) for j in jobs[:2]]
        assert sorted(given) == ["0", "1"]
        jobs[2].start()
        status = jobs[2].status()
        assert status.state == "pending" and status.note == "waiting for 1 GPU: 2 of 2 in use on this host", status
        gates[0].touch()
        assert jobs[0].wait(60).state == "exited"
        wait_for(lambda: jobs[2].status().state == "running", 60, "the third job to run once the first ended")
        assert visible(jobs[2]) == given[0]
        for gate in gates[1:]:
            gate.touch()
        for job in jobs[1:]:
            status = job.wait(60)
            assert status.state == "exited", (job.id, status, job.status().note, probe_output(job))
        third = probe_output(jobs[2])
        assert third["CUDA_VISIBLE_DEVICES"] == given[0]
        if ISOLATION != "none" and wired(jobs[2]):
            mine, other = fake_gpus[int(given[0])], fake_gpus[1 - int(given[0])]
            assert third[str(mine)] in ALLOWED and third[str(other)] == "EPERM", third

    @pytest.mark.parametrize("how", ["ends", "is stopped"])
    def test_the_claim_is_released_when_the_job(self, launcher, fake_gpus, store, tmp_path, how):
        gate = tmp_path / "gate"
        first = store.new_job(probe_command(fake_gpus, gate), Limits(gpus=2))
        first.start()
        wait_for(lambda: first.status().state == "running", 60, "the job holding both GPUs to run")
        assert gpu_claims.in_use(gpus.discover()) == {0, 1}
        if how == "ends":
            gate.touch()
            assert first.wait(60).state == "exited"
        else:
            assert first.stop(grace=1).state == "stopped"
        second = store.new_job(probe_command(fake_gpus), Limits(gpus=2))
        second.start()
        assert second.wait(60).state == "exited"
        assert probe_output(second)["CUDA_VISIBLE_DEVICES"] == "0,1"

    def test_a_job_that_asks_for_more_gpus_than_free_waits(self, launcher, fake_gpus, store, tmp_path):
        gate = tmp_path / "gate"
        holder = store.new_job(probe_command(fake_gpus, gate), Limits(gpus=1))
        holder.start()
        wait_for(lambda: holder.status().state == "running", 60, "the first job to run")
        both = store.new_job(probe_command(fake_gpus), Limits(gpus=2))
        both.start()
        assert both.status().note == "waiting for 2 GPUs: 1 of 2 in use on this host"
        gate.touch()
        assert both.wait(60).state == "exited"

    def test_a_gpu_freed_by_one_identity_starts_another_identitys_waiting_job(self, launcher, fake_gpus, store,
                                                                                 tmp_path):
        # GPUs are the host's: the finisher of A's job admits B's waiting job too, with no
        # look at B's job (no status() of it) until it ran.
        other = JobStore(hashlib.sha256(b"identity B").hexdigest(), store.root)
        gate, ran = tmp_path / "gate", tmp_path / "b-ran"
        holder = store.new_job(probe_command(fake_gpus, gate), Limits(gpus=2))
        holder.start()
        wait_for(lambda: holder.status().state == "running", 60, "A's job to hold both GPUs")
        waiting = other.new_job(f"touch {ran}", Limits(gpus=1))
        waiting.start()
        gate.touch()
        wait_for(ran.exists, 60, "B's job to be admitted by A's finisher")
        assert waiting.wait(30).state == "exited"

    def test_a_job_without_gpus_cannot_open_a_gpu_another_job_holds(self, launcher, fake_gpus, store, tmp_path):
        gate = tmp_path / "gate"
        holder = store.new_job(probe_command(fake_gpus, gate), Limits(gpus=1))
        holder.start()
        wait_for(lambda: holder.status().state == "running", 60, "the GPU job to run")
        held = fake_gpus[int(visible(holder))]
        other = store.new_job(probe_command(fake_gpus))
        other.start()
        assert other.wait(60).state == "exited"
        got = probe_output(other)
        gate.touch()
        assert holder.wait(60).state == "exited"
        if ISOLATION == "none":
            assert "GPUs not fenced" in other.status().isolation_note
            return
        assert got[str(held)] == "EPERM", got  # the device controller, not the driver (ENXIO)
        assert got[str(fake_gpus[0])] == got[str(fake_gpus[1])] == "EPERM", got
        assert confinement(other)["gpus"] == {"given": [], "denied": ["195:0", "195:1"],
                                              "fenced_by": "devices.deny" if ISOLATION == "cgroup-v1" else "bpf"}
