"""Admission: jobs that wait for a queue, for jobs ``after`` them, or for GPUs.

No daemon. Whoever changes what could let a waiting job start runs one *pass*: ``start()``
of a waiting job, the finisher of every job that ends while others wait (it execs
``run_admission.py``), a stop, a queue's new settings, and a ``status()`` of a waiting job when
no pass ran for a second. A pass holds the identity's admission lock (``flock``) while it
decides, so passes never overlap; each is idempotent, so one killed half-way is simply
redone by the next. It launches what it let through once the lock is free, so that the
launches of passes in several processes overlap.

    <owner dir>/waiting/, admitted/   the line, and what was let through (``lanes.py``)
    <owner dir>/.admission            the lock; its mtime is when the last pass ran
    <owner dir>/.admission-wanted     a finisher asked for a pass (``-serving`` while one
                                      serves it): finishers' passes coalesce (``waking.py``)

Exactly once: a pass writes the job's status "pending, admitted by <pid>" and moves its
entry from ``waiting/`` to ``admitted/`` *before* it launches (after it released the lock); the launcher takes the
attempt's gate (``launched``, O_EXCL, naming itself) and writes "running". A job left
"admitted" by a pass that died is put back in line when no launcher took the gate or the
one that did is dead; a launcher still on its way that comes late finds the gate taken by
the next one and leaves.

Order: each lane is taken by id (the order jobs were made), and its first job that does
not fit blocks the rest (FIFO): a pass reads the running jobs and, per lane, the jobs up
to the first that waits, so its cost does not grow with the line. A job waiting for a
dependency holds no place: it joins its queue's lane once its dependencies ended. A job
whose ``after`` job did not succeed ("ok", the default: it must exit 0) ends "failed"
without running, and so in turn do its own dependents.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobber._backends.local import gpu_claims, isolation
from jobber._backends.local import gpus as _gpus
from jobber._backends.local.answers import answer_later, uninterrupted
from jobber._backends.local.lanes import (
    ADMITTED,
    AFTER_LANE,
    WAITING,
    drop_entry,
    entry_of,
    find_entry,
    ids,
    lane_of,
    queue_lane,
    read_entry,
    unlink,
    waiting_count,
    write_entry,
)
from jobber._backends.local.liveness import alive
from jobber._backends.local.supervisor import process_start_time
from jobber._backends.local.waking import LOCK as _LOCK
from jobber._backends.local.waking import SERVING, WANTED
from jobber._errors import DiskFull, JobError
from jobber._files import write_atomic
from jobber._jobs import starting
from jobber._jobs.jobdir import JobDir
from jobber._jobs.queues import read_settings
from jobber._jobs.spec import JobSpec
from jobber._states import ended

__all__ = ["enqueue", "ensure_in_line", "run_pass", "nudge", "withdraw", "waiting_count", "WAITING", "ADMITTED"]

_NUDGE_EVERY_S = 1.0
_AGAIN = "waiting for its turn again (its start was lost)"


def needs_admission(spec: JobSpec) -> bool:
    """Does this job wait for anything (a queue, other jobs, GPUs)?"""
    return bool(spec.queue or spec.after or spec.limits.gpus)


class _Lock:
    def __init__(self, owner_dir: Path, blocking: bool = True) -> None:
        self.path = owner_dir / _LOCK
        self.blocking = blocking
        self.fd = -1

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


Starter = Callable[[JobDir, list[int]], "Callable[[], None] | None"]
"""How a pass launches a job it admits, with its GPUs (``LocalBackend.start_admitted``): it
may return a call that reads the launcher's answer, made once every admitted job was started."""


def enqueue(backend: Any, start: Starter) -> None:
    """Put a claimed job in line (status "pending"), then run a pass."""
    owner_dir = backend.dir.path.parent
    (owner_dir / WAITING).mkdir(mode=0o700, exist_ok=True)
    with _Lock(owner_dir):  # the status and the entry together, as a pass sees them
        backend.dir.write("status.json", {"state": "pending", "waiting": True, "queued_at": time.time(),
                                          "note": _first_note(backend.dir.read_spec())})
        entry = entry_of(backend.dir.read_spec())
        write_entry(owner_dir, backend.job_id, entry)
    # The launchers' answers of the jobs this pass lets through ahead of this one (a queue's
    # line) are read in the background, and this job's too for an executor (``starting.py``):
    # a caller starting many jobs is never held up by their launches, and a launch that
    # fails ends its job "failed" all the same (as an admitted job's always did).
    blocked = run_pass(owner_dir, backend.owner, start, defer=answer_later,
                       own=None if starting.backgrounded() else backend.job_id)
    why = blocked.get(lane_of(entry))
    if why:  # behind the lane's first waiting job, for the same reason
        with _Lock(owner_dir):
            raw = backend.dir.read("status.json") or {}
            if raw.get("waiting") and raw.get("note") != why:
                _write_note(backend.dir, {**raw, "note": why})


def _write_note(jobdir: JobDir, status: dict[str, Any]) -> None:
    try:
        jobdir.write("status.json", status)
    except DiskFull:
        pass  # the job waits all the same; its reserve is its ending's, never a note's


def _first_note(spec: JobSpec) -> str:
    if spec.after:
        return "after job " + ", ".join(str(dep) for dep, _mode in spec.after)
    if spec.queue:
        return f"queue `{spec.queue}`: waiting its turn"
    return "waiting for its GPUs"


def ensure_in_line(backend: Any) -> None:
    """A waiting job whose entry is missing (its starter was killed between writing the
    status and the entry) gets it back, in its place."""
    owner_dir = backend.dir.path.parent
    spec = backend.dir.read_spec()
    base = os.path.join(owner_dir, WAITING)
    if any(os.path.lexists(os.path.join(base, lane, str(backend.job_id))) for lane in (AFTER_LANE, queue_lane(spec))):
        return
    with _Lock(owner_dir):
        raw = backend.dir.read("status.json") or {}
        if raw.get("waiting") and find_entry(owner_dir, backend.job_id) is None:
            write_entry(owner_dir, backend.job_id, entry_of(spec))


def nudge(owner_dir: Path, owner: str, start: Starter) -> bool:
    """A pass, unless one ran within the last second or one is running now.

    Returns:
        Whether a pass ran.
    """
    try:
        if time.time() - os.stat(os.path.join(owner_dir, _LOCK)).st_mtime < _NUDGE_EVERY_S:
            return False
    except FileNotFoundError:
        pass
    run_pass(owner_dir, owner, start, blocking=False)
    return True


def withdraw(backend: Any, state: str, note: str, start: Starter) -> bool:
    """End a job that waits, under the lock (so no pass starts it meanwhile).

    Returns:
        False when it no longer waits (a pass started it): stop it as a running job.
    """
    owner_dir = backend.dir.path.parent
    with _Lock(owner_dir):
        raw = backend.dir.read("status.json") or {}
        if not raw.get("waiting"):
            return False
        _end(backend.dir, state, note)
        drop_entry(owner_dir, backend.job_id)
    run_pass(owner_dir, backend.owner, start)
    return True


def run_pass(owner_dir: Path, owner: str, start: Starter, *, blocking: bool = True, again: int = 0,
             defer: Callable[[Callable[[], None]], None] | None = None, own: int | None = None) -> dict[str, str]:
    """Start every waiting job whose turn it is (see the module docstring).

    Args:
        owner_dir: the identity's directory.
        owner: its name (the certificate's hash).
        start: how an admitted job is launched.
        blocking: wait for a pass that runs now to end (else run none).
        again: run up to this many passes more, while a finisher asked for one during
            the last (``waking.py``): what an admission process does.
        defer: given the answer reading of each launch but ``own``'s, instead of reading
            it here (:func:`answer_later`).
        own: the caller's job, whose launcher's answer is read here.

    Returns:
        Lane -> why its first waiting job still waits.
    """
    if not (owner_dir / WAITING).is_dir():
        return {}
    admitted: list[tuple[JobDir, list[int]]] = []
    with _Lock(owner_dir, blocking) as locked:
        if not locked:
            return {}
        for _ in range(again + 1):
            os.utime(owner_dir / _LOCK)
            try:  # before anything is read: a finisher that asked before this is seen (waking.py)
                os.rename(owner_dir / WANTED, owner_dir / SERVING)
            except FileNotFoundError:
                pass
            one = _Pass(owner_dir, owner, admitted)
            one.run()
            unlink(owner_dir / SERVING)  # through: the finishers that asked need no pass of their own
            if not os.path.lexists(owner_dir / WANTED):
                break
    # Launched once the lock is free: each job's place is taken (its entry in admitted/),
    # and a launch waits on the kernel (a cgroup join, ~15 ms on cgroup v1) that the next
    # pass, in another process, need not wait for.
    with uninterrupted():  # a job admitted must be launched: an interrupt waits for the launches to begin
        answers = [(jobdir.job_id, start(jobdir, devices)) for jobdir, devices in admitted]
    for job_id, answer in answers:  # read once all were started: their launches overlap
        if answer is not None:
            if defer is not None and job_id != own:
                defer(answer)
            else:
                answer()
    return one.blocked





class _Pass:
    def __init__(self, owner_dir: Path, owner: str, admitted: list[tuple[JobDir, list[int]]]) -> None:
        self.admitted = admitted  # what it let through, to launch once the lock is free
        self.owner_dir = owner_dir
        self.owner = owner
        self.root = owner_dir.parent
        self.usage: dict[str | None, dict[str, float]] = {}
        self.blocked: dict[str, str] = {}
        self.settings: dict[str, dict[str, Any]] = {}

    def _dir(self, job_id: int) -> JobDir:
        return JobDir(self.owner_dir, self.owner, job_id)

    def _status(self, job_id: int) -> dict[str, Any] | None:
        try:
            return self._dir(job_id).read("status.json")
        except JobError:
            return None

    def run(self) -> None:
        (self.owner_dir / ADMITTED).mkdir(mode=0o700, exist_ok=True)
        self._count_admitted()
        self._dependencies_met()
        for lane in sorted(os.listdir(self.owner_dir / WAITING)):
            if lane != AFTER_LANE:
                self._lane(lane)

    def _waiting(self, path: Path, job_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The entry and status of a job in line, or None (and its entry dropped) when it
        no longer waits (stopped or removed meanwhile)."""
        entry, raw = read_entry(path), self._status(job_id)
        if entry is not None and raw is not None and self._admission_lost(job_id, raw):
            raw = {"state": "pending", "waiting": True, "note": _AGAIN, "queued_at": raw.get("admitted_at")}
            self._dir(job_id).write("status.json", raw)
        if entry is None or raw is None or not raw.get("waiting"):
            unlink(path)
            return None
        return entry, raw

    def _admission_lost(self, job_id: int, raw: dict[str, Any]) -> bool:
        """Its admitter died between writing "pending, starting" and the job's entry in
        ``admitted/``: it is still in line (this pass holds the lock, so no admitter is
        half-way now), and would be stranded if its entry were dropped."""
        return (raw.get("state") == "pending" and not raw.get("waiting") and bool(raw.get("admitted_by"))
                and not os.path.lexists(self.owner_dir / ADMITTED / str(job_id))
                and _start_lost(self._dir(job_id), raw))

    def _dependencies_met(self) -> None:
        """Jobs whose dependencies ended join their queue's lane, or end "failed"."""
        lane = self.owner_dir / WAITING / AFTER_LANE
        for job_id in ids(lane):
            found = self._waiting(lane / str(job_id), job_id)
            if found is None:
                continue
            entry, raw = found
            waiting_for = self._dependencies(job_id, entry)
            if waiting_for is None:
                continue  # ended: a dependency failed
            if waiting_for:
                self._note(job_id, raw, waiting_for)
                continue
            write_entry(self.owner_dir, job_id, {**entry, "after_met": True})
            unlink(lane / str(job_id))

    def _lane(self, name: str) -> None:
        """Admit the lane's jobs in order, up to the first that does not fit."""
        lane = self.owner_dir / WAITING / name
        for job_id in ids(lane):
            found = self._waiting(lane / str(job_id), job_id)
            if found is None:
                continue
            entry, raw = found
            why = self._fits(entry)
            if why:
                self._note(job_id, raw, why)
                self.blocked[name] = why
                return  # FIFO: the rest of the lane waits behind it
            self._admit(job_id, entry, lane / str(job_id))

    # ---- what runs ----

    def _count_admitted(self) -> None:
        for job_id in ids(self.owner_dir / ADMITTED):
            path = self.owner_dir / ADMITTED / str(job_id)
            entry, raw = read_entry(path), self._status(job_id)
            if entry is None or raw is None or raw.get("state") not in ("pending", "running"):
                unlink(path)  # its GPUs' holder saw it end and gave them back
                continue
            if raw.get("admitted_by") and _start_lost(self._dir(job_id), raw):
                # Its admitter died before the launcher answered, and no launcher can still
                # be on its way: back in line, in its old place (ids keep the order).
                self._dir(job_id).write("status.json", {"state": "pending", "waiting": True, "note": _AGAIN,
                                                        "queued_at": raw.get("admitted_at")})
                write_entry(self.owner_dir, job_id, entry)
                unlink(path)  # back in line: its GPUs' holder gives them back
                continue
            self._use(entry)

    def _use(self, entry: dict[str, Any]) -> None:
        used = self.usage.setdefault(entry.get("queue"), {"running": 0, "memory": 0, "cpus": 0.0, "gpus": 0})
        used["running"] += 1
        used["memory"] += entry.get("memory") or 0
        used["cpus"] += entry.get("cpus") or 0.0
        used["gpus"] += entry.get("gpus") or 0

    def _queue_settings(self, queue: str | None) -> dict[str, Any]:
        if queue is None:
            return {}
        if queue not in self.settings:
            self.settings[queue] = read_settings(self.owner_dir, queue)
        return self.settings[queue]

    def _fits(self, entry: dict[str, Any]) -> str:
        """Why the job cannot start now ("" when it can)."""
        queue = entry.get("queue")
        settings = self._queue_settings(queue)
        used = self.usage.get(queue, {"running": 0, "memory": 0, "cpus": 0.0, "gpus": 0})
        if settings.get("parallel") and used["running"] >= settings["parallel"]:
            return f"queue `{queue}`: {used['running']} of {settings['parallel']} running"
        for name, unit in (("memory", "memory"), ("cpus", "CPUs"), ("gpus", "GPUs")):
            budget, need = settings.get(name), entry.get(name) or 0
            if budget and used[name] + need > budget:
                from jobber._limits import format_size

                show = format_size if name == "memory" else (lambda v: f"{v:g}")
                return (f"queue `{queue}`: {unit} {show(used[name])} of {show(budget)} in use, "
                        f"this job needs {show(need)}")
        if entry.get("gpus"):
            found = _gpus.discover()
            busy = len(gpu_claims.in_use(found))
            if len(found) - busy < entry["gpus"]:
                return self._wait_for_gpus(entry["gpus"], busy, found)
        return ""

    def _wait_for_gpus(self, count: int, busy: int, found: list[_gpus.Gpu]) -> str:
        """Have a waiter admit this identity's jobs when a GPU is given back (by a job of
        any user, whose files this process may not read); say why the job waits."""
        gpu_claims.start_waiter(str(self.owner_dir), found)
        return f"waiting for {count} GPU{'s' if count != 1 else ''}: {busy} of {len(found)} in use on this host"

    # ---- dependencies ----

    def _dependencies(self, job_id: int, entry: dict[str, Any]) -> str | None:
        """What the job still waits for ("" when nothing); None once it was ended here."""
        waiting = []
        for dep, mode in entry.get("after") or []:
            raw = self._status(dep)
            if raw is None:
                if not (self.owner_dir / str(dep)).is_dir():
                    return self._fail(job_id, f"its dependency job {dep} was removed: not started")
                waiting.append(dep)  # created, not started yet
                continue
            if raw.get("state") in ("pending", "running"):
                waiting.append(dep)
                continue
            if mode == "ok" and not (raw.get("state") == "exited" and raw.get("exit_code") == 0):
                how = raw.get("state") + (f" (code {raw['exit_code']})" if raw.get("exit_code") is not None else "")
                return self._fail(job_id, f"its dependency job {dep} did not succeed ({how}): not started")
        if waiting:
            return "after job " + ", ".join(str(d) for d in waiting)
        return ""

    def _fail(self, job_id: int, note: str) -> None:
        _end(self._dir(job_id), "failed", note)
        drop_entry(self.owner_dir, job_id)
        return None

    # ---- starting ----

    def _note(self, job_id: int, raw: dict[str, Any], note: str) -> None:
        if raw.get("note") != note:
            _write_note(self._dir(job_id), {**raw, "note": note})

    def _admit(self, job_id: int, entry: dict[str, Any], path: Path) -> None:
        devices: list[int] = []
        held: list[Any] = []
        if entry.get("gpus"):
            found = _gpus.discover()
            claimed = gpu_claims.bind(found, entry["gpus"])
            if claimed is None:  # taken since _fits looked: wait, and be woken
                self.blocked[lane_of(entry)] = self._wait_for_gpus(entry["gpus"], len(gpu_claims.in_use(found)), found)
                return
            devices, held = claimed
        jobdir = self._dir(job_id)
        now = time.time()
        try:
            jobdir.write("status.json", {"state": "pending", "note": "starting", "admitted_at": now,
                                         "admitted_by": [os.getpid(), process_start_time(os.getpid())]})
        except DiskFull:
            for sock in held:
                sock.close()
            return  # still waiting: a pass once there is room starts it
        if held:
            try:
                gpu_claims.hand_over(held, str(jobdir.path))  # held while it starts and runs
            except OSError as err:
                _end(jobdir, "failed", f"job {job_id} did not start: its GPUs could not be held: {err}")
                unlink(path)
                return
        write_atomic(self.owner_dir / ADMITTED / str(job_id), json.dumps({**entry, "devices": devices}).encode())
        unlink(path)
        self._use(entry)
        self.admitted.append((jobdir, devices))


def _end(jobdir: JobDir, state: str, note: str) -> None:
    jobdir.write("status.json", ended(state, note))


def _start_lost(jobdir: JobDir, raw: dict[str, Any]) -> bool:
    """Its admitter died before the launcher recorded the job, and no launcher is on its
    way (none took the attempt's gate, or the one that did died too: then what it may
    have started is killed, and the gate freed for the next launch)."""
    if alive(*(raw.get("admitted_by") or [None, None])):
        return False
    gate = jobdir.launcher()
    if gate is None:
        return True
    if alive(*gate):
        return False
    record = jobdir.read("confinement.json")
    if record:
        try:
            cgroup = isolation.open_cgroup(record)
            cgroup.kill_all()
            cgroup.remove()
        except (OSError, JobError):
            pass
    jobdir.remove("launched")
    jobdir.remove("confinement.json")
    return True
