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
pytestmark = pytest.mark.usefixtures("launcher")


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
