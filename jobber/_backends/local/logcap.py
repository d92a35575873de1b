"""The Python supervisor's resident wait (launcher.c has its twin): until the job's main
process ends, keep the log under its cap, keep it from filling the disk, and watch the
time limit.

Standard library only: part of the supervisor island.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import time

from jobber._files import write_atomic

__all__ = ["LOG_CAP_NOTE", "LOG_STOPPED", "LogCap", "headroom", "supervise", "trim_log"]


def _libc():
    import ctypes  # only once a log outgrows its cap: the finishing half rarely pays for it

    return ctypes, ctypes.CDLL(None, use_errno=True)


# The log cap, as launcher.c's struct log_cap does it (see there): the log keeps its first
# H bytes (cap/2 in whole blocks) and its newest cap/2; the middle is punched out of the
# file, so no offset moves. Readers find the cut from the file alone (jobber._jobs.logcut).
LOG_CAP_NOTE = "log-cap-note"
# The log stopped short of filling its filesystem: what the job wrote after it is dropped
# (this file says why; the job's status shows it as ``log_stopped``).
LOG_STOPPED = "log-stopped"
CAP_LOOK_S = 0.002  # at most one fstat every 2 ms, however fast the writer
CAP_POLL_MAX_S = 0.25  # without a change notice: the slowest periodic look
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_MIB = 1 << 20


def headroom(total: int) -> int:
    """What a log leaves free on a filesystem of ``total`` bytes: 2%, from 1 to 256 MiB
    (launcher.c's ``cap_init`` has the same rule)."""
    return min(256 * _MIB, max(_MIB, total // 50))


class LogCap:
    """Keeps an open log (``fd``, writable) under ``limit`` bytes (0: no cap) while it
    grows, and stops it short of filling its filesystem."""

    def __init__(self, fd: int, limit: int, job_dir: str, *, slack: int | None = None) -> None:
        self.fd, self.limit, self.job_dir = fd, limit, job_dir
        self.block = os.fstat(fd).st_blksize or 4096
        self.head = max(self.block, limit // 2 // self.block * self.block)
        self.resume = self.head
        self.slack = max(1 << 20, limit // 16) if slack is None else slack
        self.last_size = self.last_used = 0
        self.active, self.stopped = True, False
        try:
            fs = os.fstatvfs(fd)
            self.headroom = headroom(fs.f_blocks * fs.f_frsize)
        except OSError:
            self.headroom = 0
        self._fallocate = None

    def check(self) -> bool:
        """Cut the log once its tail has grown past cap/2 + slack; True when it grew.

        The job holds a writable descriptor of the whole file (it may truncate, seek,
        pwrite, drop O_APPEND), so what counts is what the file holds on disk
        (``st_blocks``), as launcher.c's ``cap_check`` says in full: a log truncated
        below its kept tail starts the tail over there; a log holding more blocks than its
        head and kept tail has all of ``[H, P)`` punched again. Blocks past its end
        (fallocate KEEP_SIZE, XFS preallocation) wait for the last trim, once nothing writes.

        Once its filesystem has less than ``headroom`` free, the log stops: what it holds
        is kept, and whatever the job writes after is punched out as it comes.
        """
        if not self.active:
            return False
        st = os.fstat(self.fd)
        size, used = st.st_size, st.st_blocks * 512
        grew, before = (size, used) != (self.last_size, self.last_used), self.last_size
        self.last_size, self.last_used = size, used
        if grew and not self.stopped and self.headroom and self._stop_if_full(before, size):
            self._cut(size, used, 0, 0)  # first the space back, then the note that says so
            self._note_stopped(size)
            return grew
        if not self.limit and not self.stopped:
            return grew
        keep, slack = (0, 0) if self.stopped else (self.limit // 2, self.slack)
        self._cut(size, used, keep, slack)
        return grew

    def _cut(self, size: int, used: int, keep: int, slack: int) -> None:
        """Punch out what the log holds beyond its head and its newest ``keep`` bytes,
        once the tail is ``slack`` past that or the file holds more blocks than it may.

        Every punch ends at or below ``size``, where the job's appends never land. Blocks
        past the end of the file are left to the last trim (``trim_log``): truncating the
        file to ``size`` while the job runs would cut what it appended since the fstat."""
        if size < self.resume:
            self.resume = max(self.head, size // self.block * self.block)
        refilled = used > self._allowed(size, slack)
        if size - self.resume <= keep + slack and not refilled:
            return
        to = max(self.resume, (size - keep) // self.block * self.block)
        start = self.head if refilled else self.resume
        try:
            if to > start:
                self._punch(start, to - start)
        except OSError as err:
            # A full disk can refuse the extent split a punch needs: try again next look.
            if err.errno not in (errno.EINTR, errno.ENOSPC, errno.EDQUOT):
                self.active = False  # stop trying: the log grows uncapped, the job goes on
                _note_log_cap(self.job_dir, err)
            return
        self.resume = to

    def _allowed(self, size: int, slack: int) -> int:
        """The most the file may hold on disk: its head, its kept tail, the slack."""
        return self.head + max(0, size - self.resume) + slack + 2 * self.block

    def _stop_if_full(self, before: int, size: int) -> bool:
        """Stop the log if its filesystem has less than the headroom free. What it held at
        the last look is kept; of what it wrote since, up to twice the headroom is given
        back (a fast writer outruns the looks, and the next job's log needs room before it
        stops too), unless a cut already made the head."""
        try:
            fs = os.fstatvfs(self.fd)
        except OSError:
            return False
        self.free = fs.f_bavail * fs.f_frsize
        if self.free >= self.headroom:
            return False
        self.stopped = True
        if self.resume <= self.head:  # not cut yet: what it keeps becomes the head
            self.head = self.resume = max(0, before, size - (2 * self.headroom - self.free)) // self.block * self.block
        return True

    def _note_stopped(self, size: int) -> None:
        try:
            write_atomic(os.path.join(self.job_dir, LOG_STOPPED),
                         (f"disk full: {self.free / _MIB:.1f} MiB was left on the log's filesystem, which keeps "
                          f"{self.headroom / _MIB:.0f} MiB free; the job's output after byte "
                          f"{min(self.head, size)} is dropped\n").encode())
        except OSError:
            pass  # the status cannot say so; the log stops all the same

    def _punch(self, offset: int, length: int) -> None:
        if self._fallocate is None:
            ctypes, libc = _libc()  # only once a log outgrows its cap
            self._fallocate = getattr(libc, "fallocate64", None) or libc.fallocate
            self._fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            self._get_errno = ctypes.get_errno
        if self._fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            err = self._get_errno()
            raise OSError(err, f"fallocate PUNCH_HOLE: {os.strerror(err)}")


def _note_log_cap(job_dir: str, err: OSError) -> None:
    """Say why the cap is not enforced (best effort: the job never fails for its log)."""
    try:
        write_atomic(os.path.join(job_dir, LOG_CAP_NOTE),
                     f"log_max is not enforced: this filesystem cannot punch holes in the log ({err.strerror})\n".encode())
    except OSError:
        pass


def trim_log(job_dir: str, limit: int, seen: int | None = None) -> None:
    """The last cut, once nothing writes any more: the log obeys ``limit`` (within a block),
    a stopped log drops what was written after its last look, and a log that grew past
    ``seen`` (its size at the last look) and filled the disk meanwhile gives the headroom
    back from what it wrote since. Blocks past the end of the log (fallocate KEEP_SIZE,
    preallocation), which the cap leaves alone while the job runs, are freed here, capped
    or not."""
    stopped = os.path.lexists(os.path.join(job_dir, LOG_STOPPED))
    full = not stopped and seen is not None and _nearly_full(job_dir)
    try:
        fd = os.open(os.path.join(job_dir, "log"), os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        _free_past_end(fd, st)
        full = full and st.st_size > seen
        if not stopped and not full and (limit <= 0 or st.st_size <= limit):
            return  # the usual case: nothing to cut, and nothing imported for it
        cap = LogCap(fd, limit, job_dir, slack=0)
        if full:
            cap.last_size = seen  # what it held at the last look is kept
        else:
            cap.headroom = 0  # a stop, if any, was decided while the job ran
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        if hole < st.st_size:  # cut before: go on from where the kept tail starts
            try:
                resume = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:
                resume = st.st_size
            if stopped:
                cap.head, cap.resume, cap.stopped = hole, resume, True
            else:
                cap.resume = max(cap.head, resume)
        elif stopped:
            return  # stopped with nothing dropped yet: where it stopped died with the supervisor
        cap.check()
    except OSError:
        pass
    finally:
        os.close(fd)


def _free_past_end(fd: int, st: os.stat_result) -> None:
    """Free the blocks a log holds past its end by truncating it to its own size: no byte
    goes, now that nothing appends (while the job runs, a byte appended between the fstat
    and the truncate would)."""
    block = st.st_blksize or 4096
    try:
        # A file without holes holding no more blocks than its data has nothing past its
        # end; one with holes (a cut log) may hide some behind them: truncate it to tell.
        if st.st_blocks * 512 <= -(-st.st_size // block) * block and os.lseek(fd, 0, os.SEEK_HOLE) >= st.st_size:
            return
        os.ftruncate(fd, st.st_size)
    except OSError:
        pass  # the blocks stay until the log is removed; the cut goes on


def _nearly_full(path: str) -> bool:
    try:
        fs = os.statvfs(path)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < headroom(fs.f_blocks * fs.f_frsize)


def supervise(pid: int, seconds: float | None, cap: LogCap | None, job_dir: str, usage=None) -> bool:
    """The resident wait: until ``pid`` ends, keep the log under its cap (and short of
    filling the disk) and, with ``seconds``, return True once the time is up (False when
    the job ended).

    One poll holds the pidfd, the timeout and a one-shot change notice on the job
    directory (dnotify: F_NOTIFY DN_MODIFY, whose SIGIO reaches the poll through the
    wakeup fd): a write wakes us once, then we look at most every 2 ms and re-arm. As in
    launcher.c's ``supervise`` (which says why not inotify). Without a pidfd the end is
    polled with waitid(WNOWAIT); without the notice the log is looked at periodically.
    ``usage`` (a ``jobber._usage.UsageWriter``) samples the job's cgroup when due.
    """
    if seconds is None and cap is None and (usage is None or usage.wake_in(time.monotonic()) is None):
        return False

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    dirfd = wake_r = wake_w = -1
    if cap is not None:
        try:
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.signal(signal.SIGIO, lambda *_: None)
            signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            dirfd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, ValueError):
            dirfd = -1
    start = time.monotonic()
    last_look, armed, interval = start - CAP_LOOK_S, False, CAP_LOOK_S
    try:
        while True:
            now = time.monotonic()
            if seconds is not None and now - start >= seconds:
                return True
            wake: float | None = None
            if cap is not None and dirfd >= 0 and not armed:
                if now - last_look >= CAP_LOOK_S:
                    try:  # arm first, then look: a write after the look always wakes us
                        fcntl.fcntl(dirfd, fcntl.F_NOTIFY, fcntl.DN_MODIFY)
                        armed = True
                    except OSError:
                        os.close(dirfd)
                        dirfd = -1
                    cap.check()
                    last_look = now
                else:
                    wake = last_look + CAP_LOOK_S - now
            if cap is not None and dirfd < 0:
                if now - last_look >= interval:
                    interval = CAP_LOOK_S if cap.check() else min(interval * 2, CAP_POLL_MAX_S)
                    last_look = now
                wake = min(wake if wake is not None else interval, last_look + interval - now)
            if usage is not None:
                usage.sample_if_due(now)
                due = usage.wake_in(time.monotonic())
                if due is not None:
                    wake = min(wake if wake is not None else due, due)
            if pidfd < 0:
                wake = min(wake if wake is not None else 0.05, 0.05)
            if seconds is not None:
                wake = min(wake if wake is not None else 3600.0, start + seconds - now, 3600.0)
            poller = select.poll()
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
            if armed:
                poller.register(wake_r, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(None if wake is None else max(0.0, wake) * 1000 + 1)}
            if pidfd in ready or (pidfd < 0 and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)):
                return False
            if armed and wake_r in ready:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                armed = False  # the one-shot notice fired (and is gone): look at the next 2 ms mark
    finally:
        if pidfd >= 0:
            os.close(pidfd)
        if dirfd >= 0:
            os.close(dirfd)  # ends the notice
        if wake_w >= 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGIO, signal.SIG_IGN)  # a late one must not end the supervisor
            os.close(wake_r)
            os.close(wake_w)
