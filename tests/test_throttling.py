"""Why a job is slow: CPU throttling and PSI pressure in its status, and ``held_back()``.

Real cgroups on this host (cgroup v1) and in the cgroup v2 VM; pressure (PSI) is per
cgroup on v2 only, so those tests skip on v1 with that reason. ``held_back()`` is also
checked on constructed statuses, for wording and thresholds.
"""

from __future__ import annotations

import inspect
import time
from datetime import datetime, timedelta, timezone

import pytest

from jobber import JobStatus, Limits
from jobber._backends.local import cgroup_v2 as _cgroup_v2
from jobber._backends.local import supervisor as _supervisor
from jobber._backends.local.isolation import choose

BACKEND, REASON = choose()
confined = pytest.mark.skipif(BACKEND.NAME not in ("cgroup-v1", "cgroup-v2"),
                              reason=f"jobs here use {BACKEND.NAME}: throttling is counted by a cgroup ({REASON})")
on_v2 = pytest.mark.skipif(BACKEND.NAME != "cgroup-v2",
                           reason=f"PSI is cgroup v2 only (jobs here use {BACKEND.NAME}; run `make test-cgroup-v2`)")
BUSY = "while :; do :; done"


def poll(job, until, deadline: float = 30.0) -> JobStatus:
    """The job's status once ``until(status)`` holds, or the last one at the deadline."""
    end = time.monotonic() + deadline
    while True:
        status = job.status()
        if until(status) or time.monotonic() > end:
            return status
        time.sleep(0.05)


@confined
class TestThrottlingOfRealJobs:
    def test_a_job_at_its_cpu_limit_is_throttled_and_says_so(self, store):
        job = store.new_job(BUSY, Limits(cpu=0.2))
        job.start()
        status = poll(job, lambda s: bool(s.held_back()))
        assert status.state == "running"
        assert status.cpu_throttled_seconds > 0
        assert status.held_back().startswith("held back by its CPU limit (0.2 CPUs): throttled ")

    def test_an_unlimited_busy_job_is_not_throttled(self, store):
        job = store.new_job(BUSY)
        job.start()
        status = poll(job, lambda s: (s.cpu_seconds or 0) >= 0.5)
        assert status.state == "running" and status.cpu_seconds >= 0.5
        assert status.cpu_throttled_seconds is not None
        assert status.cpu_throttled_seconds <= 0.1 * status.elapsed
        if (status.cpu_pressure or 0) < 10:  # a host busy with other work may make it wait for a CPU
            assert status.held_back() == ""
        assert "CPU limit" not in status.held_back() and "throttl" not in status.held_back()

    @pytest.mark.skipif("cpu_throttled_seconds" not in inspect.getsource(_supervisor.finish),
                        reason="the supervisor's finish() does not record cpu_throttled_seconds yet")
    def test_the_final_status_keeps_the_throttling(self, store):
        job = store.new_job(BUSY, Limits(cpu=0.2))
        job.start()
        # Until the throttling is a share of the running time worth naming (a slow VM
        # takes longer to get there), then it must survive into the final status.
        running = poll(job, lambda s: s.held_back().startswith("held back by its CPU limit"))
        assert running.held_back().startswith("held back by its CPU limit (0.2 CPUs)"), running
        final = job.stop(grace=0)
        assert final.state == "stopped"
        assert final.cpu_throttled_seconds >= running.cpu_throttled_seconds > 0  # the counter is kept
        # Named as long as it is a tenth of the running time: a host too busy to give the job
        # even its 0.2 CPUs after the poll (measured in CI, load 9) throttles it less.
        if final.cpu_throttled_seconds >= 0.1 * final.elapsed:
            assert final.held_back().startswith("held back by its CPU limit (0.2 CPUs)"), final


@on_v2
class TestPressureOfRealJobs:
    def test_pressure_is_a_share_of_time(self, store):
        job = store.new_job(BUSY, Limits(cpu=0.2, memory="64M"))
        job.start()
        status = poll(job, lambda s: s.cpu_pressure is not None)
        assert status.state == "running"
        for share in (status.cpu_pressure, status.memory_pressure, status.io_pressure):
            assert isinstance(share, float)
            assert 0.0 <= share <= 100.0


class TestPressureFile:
    def test_reads_some_avg10(self, tmp_path):
        path = tmp_path / "cpu.pressure"
        path.write_text("some avg10=12.34 avg60=1.00 avg300=0.50 total=123\nfull avg10=3.00 avg60=0 avg300=0 total=1\n")
        assert _cgroup_v2._pressure(str(path)) == 12.34

    def test_missing_or_without_some_is_none(self, tmp_path):
        assert _cgroup_v2._pressure(str(tmp_path / "absent")) is None
        path = tmp_path / "io.pressure"
        path.write_text("full avg10=3.00 avg60=0 avg300=0 total=1\n")
        assert _cgroup_v2._pressure(str(path)) is None


START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def ended(seconds: float, **fields) -> JobStatus:
    return JobStatus(state="exited", exit_code=0, started_at=START, ended_at=START + timedelta(seconds=seconds),
                     **fields)


class TestHeldBack:
    def test_throttled_most_of_the_time(self):
        status = ended(60, cpu_throttled_seconds=41.2, limits=Limits(cpu=0.5))
        assert status.held_back() == "held back by its CPU limit (0.5 CPUs): throttled 41.2 s of 1 min 00 s"

    def test_one_cpu_is_singular(self):
        assert ended(10, cpu_throttled_seconds=5, limits=Limits(cpu=1)).held_back().startswith(
            "held back by its CPU limit (1 CPU): ")

    def test_throttling_summed_over_cpus_says_so(self):
        status = ended(2, cpu_throttled_seconds=3.2, limits=Limits(cpu=2))
        assert status.held_back() == "held back by its CPU limit (2 CPUs): throttled 3.2 s of 2.0 s (summed over its CPUs)"

    def test_a_little_throttling_is_not_a_cause(self):
        assert ended(100, cpu_throttled_seconds=5, limits=Limits(cpu=1)).held_back() == ""
        assert ended(100, cpu_throttled_seconds=0.0, limits=Limits(cpu=1)).held_back() == ""

    def test_nothing_known_is_nothing_said(self):
        assert ended(100).held_back() == ""
        assert JobStatus(state="created").held_back() == ""

    def test_memory_pressure_near_the_limit(self):
        status = ended(100, memory_pressure=35.0, memory_bytes=(1 << 31) - (50 << 20), limits=Limits(memory="2G"))
        assert status.held_back() == "waiting for memory 35% of the last 10 s (near its 2 GiB limit)"

    def test_memory_pressure_far_from_the_limit(self):
        status = ended(100, memory_pressure=35.0, memory_bytes=100 << 20, limits=Limits(memory="2G"))
        assert status.held_back() == "waiting for memory 35% of the last 10 s"

    def test_io_pressure_names_an_io_limit(self):
        status = ended(100, io_pressure=40.0, limits=Limits(io_write_bps="10M"))
        assert status.held_back() == "waiting for disk IO 40% of the last 10 s (it has an IO limit)"

    def test_cpu_pressure_without_throttling(self):
        assert ended(100, cpu_pressure=30.0).held_back() == "waiting for a CPU 30% of the last 10 s"

    def test_cpu_pressure_is_not_repeated_after_throttling(self):
        status = ended(10, cpu_throttled_seconds=8.0, cpu_pressure=80.0, memory_pressure=12.0, limits=Limits(cpu=0.2))
        assert status.held_back() == ("held back by its CPU limit (0.2 CPUs): throttled 8.0 s of 10.0 s; "
                                      "waiting for memory 12% of the last 10 s")

    def test_low_pressure_is_not_a_cause(self):
        assert ended(100, cpu_pressure=9.9, memory_pressure=0.0, io_pressure=5.0).held_back() == ""
