"""A job's usage history (``jobber._usage``): sampled by its supervisor into the job
directory, bounded, and read back by any process; the pids peak measured where the kernel
counts it (cgroup v2 ``pids.peak``, Linux 6.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from jobber import Limits
from jobber._backends.local.isolation import choose
from jobber._usage import CAPACITY, HEADER, MAX_BYTES, USAGE, UsageSample, UsageWriter, merge_pairs, read_usage

_BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(_BACKEND.NAME == "none", reason=f"jobs are not isolated here: {UNCONFINED_REASON}")
ISOLATION = _BACKEND.NAME


def _poll(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


class TestFormat:
    def test_merge_pairs_keeps_the_peaks_and_the_later_totals(self):
        samples = [UsageSample(1.0, 10, 0.5, 3), UsageSample(2.0, 30, 1.0, 1), UsageSample(3.0, 20, None, None)]
        assert merge_pairs(samples) == [UsageSample(2.0, 30, 1.0, 3), UsageSample(3.0, 20, None, None)]

    def test_an_unfinished_or_foreign_line_is_skipped(self, tmp_path):
        path = tmp_path / USAGE
        path.write_text(HEADER + "0.500 100 0.100000 2\nnot a sample\n1.000 - 0.200000 -\n1.5")
        assert read_usage(path) == [UsageSample(0.5, 100, 0.1, 2), UsageSample(1.0, None, 0.2, None)]

    def test_no_file_is_no_history(self, tmp_path):
        assert read_usage(tmp_path / USAGE) == []

    def test_a_three_day_run_stays_small_and_spans_the_whole_run(self, tmp_path):
        source = tmp_path / "memory.current"
        source.write_text("17179869184\n")  # 16 GiB: the longest numbers a line holds
        writer = UsageWriter(str(tmp_path), [("memory", str(source)), ("tasks", str(source))], 0.0)
        three_days, now, size = 3 * 86400.0, 0.0, 0
        while now < three_days:
            now = writer.next_at
            writer.sample_if_due(now)
            size = max(size, os.path.getsize(tmp_path / USAGE))
        samples = read_usage(tmp_path / USAGE)
        assert CAPACITY // 2 <= len(samples) < CAPACITY
        assert size <= MAX_BYTES
        assert samples[0].t < 3600 and samples[-1].t == pytest.approx(now, abs=0.001)  # the whole run
        assert [s.t for s in samples] == sorted(s.t for s in samples)


@needs_cgroup
@pytest.mark.usefixtures("launcher")
class TestSupervisorSamples:
    def test_a_running_job_has_its_history_on_disk_read_by_another_process(self, store):
        job = store.new_job("python3 -c 'import time; b = bytearray(40 << 20); time.sleep(60)'",
                            Limits(memory="200M", pids=50))
        job.start()
        try:
            samples = _poll(lambda: [s for s in read_usage(job.path / USAGE)
                                     if s.memory_bytes and s.memory_bytes >= 40 << 20])
            assert samples, read_usage(job.path / USAGE)
            # Another process (as a later kernel would) reads the same history.
            code = ("import sys; from jobber._usage import read_usage; s = read_usage(sys.argv[1]); "
                    "print(len(s), max(x.memory_bytes or 0 for x in s), s[-1].tasks)")
            out = subprocess.run([sys.executable, "-c", code, str(job.path / USAGE)], capture_output=True,
                                 text=True, check=True).stdout.split()
            assert int(out[0]) >= 1 and int(out[1]) >= 40 << 20 and int(out[2]) >= 1
            assert job.usage()[0].t < 2.0  # from the start, through the public API
        finally:
            job.stop(grace=0)
        # An ended job keeps its history (the supervisor wrote it; nothing removes it).
        assert any(s.memory_bytes and s.memory_bytes >= 40 << 20 for s in job.usage())

    def test_a_retried_job_keeps_each_attempts_history(self, store):
        job = store.new_job("sleep 1.2; exit 3", Limits(pids=10), retries=1)
        job.start()
        assert job.wait(60).state == "failed"
        assert (job.path / "attempts" / "1" / USAGE).is_file()  # the first attempt's, moved with its log
        assert job.usage() and job.usage()[0].t < 1.0  # the current attempt's, from its own start


# 18 processes that live a few milliseconds: a sampler (the supervisor's, every 0.5 s) misses them.
BURST = "for i in $(seq 18); do sleep 0.05 & done; wait; sleep 0.6"


@needs_cgroup
@pytest.mark.usefixtures("launcher")
class TestPeakPids:
    @pytest.mark.skipif(ISOLATION != "cgroup-v2", reason=f"pids.peak is cgroup v2's (this host: {ISOLATION})")
    def test_v2_measures_a_burst(self, store):
        job = store.new_job(BURST, Limits(pids=50))
        job.start()
        status = job.wait(60)
        if status.peak_pids is None:
            pytest.skip("this kernel has no pids.peak (Linux 6.1 added it)")
        assert status.peak_pids >= 18 and not status.peak_pids_sampled, status

    @pytest.mark.skipif(ISOLATION != "cgroup-v1", reason=f"cgroup v1 only (this host: {ISOLATION})")
    def test_v1_says_its_peak_is_sampled(self, store):
        job = store.new_job("sleep 0.3 & sleep 0.3 & sleep 1.2", Limits(pids=50))
        job.start()
        status = job.wait(60)
        assert status.peak_pids is not None and status.peak_pids >= 1 and status.peak_pids_sampled, status

    @pytest.mark.skipif(ISOLATION != "cgroup-v1", reason=f"cgroup v1 only (this host: {ISOLATION})")
    def test_v1_a_fork_refused_at_the_limit_is_a_measured_peak(self, store):
        job = store.new_job("for i in $(seq 12); do sleep 1 & done; wait", Limits(pids=5))
        job.start()
        status = job.wait(60)
        assert status.peak_pids == 5 and not status.peak_pids_sampled, status
