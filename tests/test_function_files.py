"""``jobber._server.function_files``: what a server's function job left, brought into its job directory.

The copy runs in the kernel (``copy_file_range``) where it can and by reads and writes
where it cannot; either way the job directory ends up with the same bytes, or nothing.
The server's own end to end (tenants' uids, the HTTP routes): tests/test_server_functions.py.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from jobber import JobError
from jobber._jobs.pycall import RESULT, RESULT_META
from jobber._server import function_files
from jobber._server.function_files import import_result

MiB = 1 << 20


@pytest.fixture
def left(tmp_path):
    """A function directory as a runner leaves it (a 40 MiB pickle), and an empty job directory."""
    function_dir, job_dir = tmp_path / "function", tmp_path / "job"
    function_dir.mkdir()
    job_dir.mkdir()
    data = os.urandom(MiB) * 40
    (function_dir / RESULT).write_bytes(data)
    (function_dir / RESULT_META).write_text(json.dumps({"ok": True, "type": "bytes", "size": len(data)}))
    return function_dir, job_dir, data


def test_the_result_is_copied_whole_in_the_kernel(left, monkeypatch):
    function_dir, job_dir, data = left
    calls = []
    real = os.copy_file_range
    monkeypatch.setattr(os, "copy_file_range", lambda *args: calls.append(args) or real(*args))
    assert import_result(job_dir, function_dir, os.getuid(), 1 << 30)
    assert calls, "copy_file_range was not used"
    assert (job_dir / RESULT).read_bytes() == data
    assert json.loads((job_dir / RESULT_META).read_text())["size"] == len(data)
    assert sorted(os.listdir(job_dir)) == sorted([RESULT, RESULT_META])  # no temporary left


@pytest.mark.parametrize("err", [errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_where_the_kernel_cannot_copy_it_is_read_and_written(left, monkeypatch, err):
    function_dir, job_dir, data = left

    def refuse(*args):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    assert import_result(job_dir, function_dir, os.getuid(), 1 << 30)
    assert (job_dir / RESULT).read_bytes() == data


def test_a_failure_midway_leaves_nothing(left, monkeypatch):
    function_dir, job_dir, _data = left
    real, calls = os.copy_file_range, []

    def fail_second(*args):
        calls.append(args)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", fail_second)
    with pytest.raises(OSError, match="No space left"):
        import_result(job_dir, function_dir, os.getuid(), 1 << 30)
    assert os.listdir(job_dir) == []


def test_a_result_that_grew_over_its_cap_while_copied_is_refused(left, monkeypatch):
    function_dir, job_dir, data = left
    monkeypatch.setattr(function_files, "_KERNEL_CHUNK", MiB)
    real = os.copy_file_range

    def growing(source, target, count, *args):
        with open(function_dir / RESULT, "ab") as f:  # the tenant's job appends as it is copied
            f.write(b"x" * MiB)
        return real(source, target, count, *args)

    monkeypatch.setattr(os, "copy_file_range", growing)
    with pytest.raises(JobError, match="grew over its cap"):
        import_result(job_dir, function_dir, os.getuid(), len(data))
    assert os.listdir(job_dir) == []
