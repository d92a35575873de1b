"""``jobber._inotify``: the ctypes inotify binding, against the real kernel."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import os
import sys

import pytest

from jobber import _inotify
from jobber._inotify import IN_CLOSE_WRITE, IN_CREATE, IN_DELETE_SELF, IN_MODIFY, IN_MOVED_TO, Inotify

EVERYTHING = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF


@pytest.fixture
def inotify():
    with Inotify() as inotify:
        yield inotify


class TestInotify:
    def test_each_event_names_its_file(self, inotify, tmp_path):
        inotify.add_watch(tmp_path, EVERYTHING)
        with open(tmp_path / "log", "wb") as log:  # IN_CREATE
            log.write(b"x")  # IN_MODIFY
        (tmp_path / ".status.tmp").write_bytes(b"{}")
        os.replace(tmp_path / ".status.tmp", tmp_path / "status.json")  # IN_MOVED_TO
        events = inotify.wait(30)
        assert (IN_CREATE, b"log") in events
        assert (IN_MODIFY, b"log") in events
        assert (IN_CLOSE_WRITE, b"log") in events
        assert (IN_MOVED_TO, b"status.json") in events

    def test_only_the_events_asked_for(self, inotify, tmp_path):
        inotify.add_watch(tmp_path, IN_MOVED_TO)
        (tmp_path / "log").write_bytes(b"x")
        (tmp_path / "new").write_bytes(b"y")
        os.replace(tmp_path / "new", tmp_path / "status.json")
        assert inotify.wait(30) == [(IN_MOVED_TO, b"status.json")]

    def test_a_watched_directory_that_goes_says_so(self, inotify, tmp_path):
        gone = tmp_path / "gone"
        gone.mkdir()
        inotify.add_watch(gone, IN_DELETE_SELF)
        gone.rmdir()
        assert (IN_DELETE_SELF, b"") in inotify.wait(30)

    def test_wait_times_out_empty(self, inotify, tmp_path):
        inotify.add_watch(tmp_path, EVERYTHING)
        assert inotify.wait(0) == []
        assert inotify.drain() == []

    def test_drain_reads_more_than_one_buffer(self, inotify, tmp_path):
        inotify.add_watch(tmp_path, IN_CREATE)
        names = [f"file-with-a-long-name-{n:05d}".encode() for n in range(3000)]  # ~150 KB of events
        for name in names:
            os.close(os.open(tmp_path / os.fsdecode(name), os.O_CREAT | os.O_WRONLY, 0o600))
        assert inotify.drain() == [(IN_CREATE, name) for name in names]

    def test_the_same_directory_is_the_same_watch(self, inotify, tmp_path):
        assert inotify.add_watch(tmp_path, IN_CREATE) == inotify.add_watch(tmp_path, IN_MODIFY)

    def test_a_missing_path_is_an_oserror_naming_it(self, inotify, tmp_path):
        with pytest.raises(FileNotFoundError, match="inotify_add_watch .*missing") as info:
            inotify.add_watch(tmp_path / "missing", IN_CREATE)
        assert info.value.filename == str(tmp_path / "missing")

    def test_the_descriptor_is_nonblocking_close_on_exec_and_closed_once(self, tmp_path):
        inotify = Inotify()
        fd = inotify.fd
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        with inotify:
            pass
        assert inotify.fd == -1
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
        inotify.close()  # idempotent

    def test_a_refused_instance_says_why_and_nothing_else(self, monkeypatch):
        class NoMoreInstances:
            @staticmethod
            def inotify_init1(flags):
                ctypes.set_errno(errno.EMFILE)
                return -1

        monkeypatch.setattr(_inotify, "_libc", NoMoreInstances)
        unraisable = []
        monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
        with pytest.raises(OSError, match="inotify_init1: Too many open files") as info:
            Inotify()
        assert info.value.errno == errno.EMFILE
        del info
        gc.collect()
        assert not unraisable, [hook.exc_value for hook in unraisable]  # e.g. from __del__
