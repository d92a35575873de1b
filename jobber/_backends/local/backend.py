"""Jobs on this host: a supervisor starts each in its own cgroup and records its outcome.

``start`` claims the job, makes its confinement (``isolation.prepare``), and has the
launcher (compiled ``launcher.c``, else ``supervisor.py --launch``) start the command
inside it. Everything after that is read from the job directory, by any process:

    confinement.json  what confines it (cgroup paths, notes, limits not enforced)
    command           the command, which the launcher reads (no argument limit applies)
    pid               the main process
    status.json       written by the supervisor: running, then the outcome
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobber._backends import stopping
from jobber._backends.base import DirectoryBackend
from jobber._backends.context import Sandbox, run_context
from jobber._backends.local import admission, isolation
from jobber._backends.local.launching import AlreadyLaunched as _AlreadyLaunched
from jobber._backends.local.launching import begin_launch as _begin_launch
from jobber._backends.local.launching import not_started as _not_started
from jobber._backends.local.launching import supervisor_argv as _supervisor_argv
from jobber._backends.local.launching import through_user_manager as _through_user_manager
from jobber._backends.local.launching import undo_launch as _undo_launch
from jobber._backends.local.liveness import alive
from jobber._backends.local.retrying import ATTEMPT, ATTEMPTS
from jobber._backends.local.waking import waiting_owners
from jobber._errors import JobberError, JobError
from jobber._inotify import IN_MOVED_TO, Inotify
from jobber._jobs import logcut, logs
from jobber._jobs.jobdir import JobDir
from jobber._jobs.options import default_log_max
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import JobStatus, when
from jobber._limits import Limits
from jobber._states import ended

__all__ = ["LocalBackend"]

_TIMEOUT_GRACE_S = 5.0  # at the time limit: SIGTERM, then SIGKILL after this, as stop() does
# Status changes arrive as renames of status.json; the cap only bounds how soon a dead
# supervisor is noticed (it cannot send an event).
_LIVENESS_CHECK_S = 1.0
_REAPED = "the job's supervisor died before the job ended (killed?): its processes were killed and its cgroup removed"


class LocalBackend(DirectoryBackend):
    """A job run on this host by its own supervisor."""

    name = "local"

    def start(self, *, user: str | None = None, cwd: str | None = None, sandbox: Sandbox | None = None) -> None:
        """Start the job: ``/bin/sh -c COMMAND`` inside its cgroup, output to the log.

        Any failure, at any step, leaves the job startable again with no cgroup behind,
        unless the supervisor already took the job over (then it is ended as "failed",
        with the reason in its note).

        Args:
            user: a passwd name, or ``#UID[:GID]`` (see ``context.resolve_user``).
            cwd: the working directory (default: the spec's, else the caller's).
            sandbox: private to jobber's server: start the job with nothing of this
                process (``context.Sandbox``).

        Raises:
            JobError: already started, no usable isolation while ``require_isolation``
                is set, or the supervisor failed to start it (saying why).
        """
        try:
            self.dir.claim_start()
        except (JobError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # ENOSPC, EROFS, ...: nothing was claimed
            raise _not_started(self.job_id, err) from err
        made: list[Any] = [None, None]
        try:
            spec = self.dir.read_spec()
            context = run_context(self.job_id, self.owner, user, cwd or spec.cwd, spec.extra_env, sandbox)
            log_max = default_log_max() if spec.log_max is None else spec.log_max
            self.dir.write_spec(spec.replace(**context, log_max=log_max))
            if admission.needs_admission(spec):
                admission.enqueue(self, start_admitted)  # it starts when its turn comes (maybe at once)
                return
            self._launch_attempt(made)
        except BaseException as err:
            if self.dir.exists("status.json") or isinstance(err, _AlreadyLaunched):
                raise  # the supervisor took the job over (and records how it ends)
            _undo_launch(self.dir, *made)
            if isinstance(err, (JobError, KeyboardInterrupt, SystemExit)):
                raise
            raise _not_started(self.job_id, err) from err

    def _launch_attempt(self, made: list[Any], *, later: bool = False) -> Callable[[], None] | None:
        """Confine and launch the command as the spec (with its run context) says.

        ``made`` receives the confinement record and cgroup as they are made, so that a
        failure can undo them. With ``later``, the launcher's answer is left to the call
        returned (``launching.begin_launch``).
        """
        spec = self.dir.read_spec()
        limits = self._attempt_limits(spec)
        made[0] = record = isolation.prepare(self.owner, self.job_id, limits, str(self.dir.path),
                                             devices=list(spec.gpu_devices) or None)
        made[1] = cgroup = isolation.open_cgroup(record)
        self.dir.write("confinement.json", record)
        argv = _supervisor_argv(str(self.dir.path), cgroup, spec)
        if spec.timeout:
            argv[-2:-2] = ["--timeout", repr(float(spec.timeout)), "--grace", repr(_TIMEOUT_GRACE_S)]
        if spec.log_max:
            argv[-2:-2] = ["--log-max", str(int(spec.log_max))]
        if record.get("via_user_manager"):
            argv = _through_user_manager(self.job_id, argv)
        self.dir.mark_launching()
        # A function job of this host's own kernel may start warm (``warm.py``); a server's
        # sandboxed or other-uid job, or one in a user manager's scope, starts cold.
        plain = spec.python is not None and spec.sandbox is None and spec.user is None
        answer = _begin_launch(self.job_id, argv,
                               warm_dir=str(self.dir.path) if plain and not record.get("via_user_manager") else None)
        if later:
            return answer
        answer()
        return None

    def start_admitted(self, devices: list[int]) -> Callable[[], None] | None:
        """Launch a job its admission pass let through (with these GPUs); a failure ends
        it "failed" with the reason, leaving no cgroup and giving its GPUs back. The call
        returned reads the launcher's answer (and handles a failure it tells of)."""
        made: list[Any] = [None, None]
        try:
            spec = self.dir.read_spec()
            if devices:
                visible = ",".join(str(d) for d in devices)
                env = {**(spec.env or {}), "CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible}
                self.dir.write_spec(spec.replace(env=env, gpu_devices=devices))
            answer = self._launch_attempt(made, later=True)
        except BaseException as err:  # noqa: BLE001 - whatever it was, the job must end
            self._admitted_start_failed(err, made)
            return None

        def complete() -> None:
            try:
                if answer is not None:
                    answer()
            except BaseException as err:  # noqa: BLE001 - whatever it was, the job must end
                self._admitted_start_failed(err, made)

        return complete

    def _admitted_start_failed(self, err: BaseException, made: list[Any]) -> None:
        raw = self.dir.read("status.json") or {}
        if raw.get("state") != "pending" or isinstance(err, _AlreadyLaunched):
            return  # a launcher took it over and records how it ends
        _undo_launch(self.dir, made[0], made[1], release=False)
        why = str(err) if isinstance(err, JobError) and str(err).startswith(f"job {self.job_id}") else \
            f"job {self.job_id} did not start: {type(err).__name__}: {err}"  # said once, not twice
        self.dir.write("status.json", ended("failed", why))

    def start_next_attempt(self) -> None:
        """Start the attempt a "pending" status names (``run_next_attempt.py`` calls this after the
        backoff); a failure ends the job "failed" with the reason, leaving no cgroup."""
        made: list[Any] = [None, None]
        attempt = (self.dir.read("status.json") or {}).get("attempt")
        try:
            self._launch_attempt(made)
        except BaseException as err:  # noqa: BLE001 - whatever it was, the job must end
            if (self.dir.read("status.json") or {}).get("state") != "pending":
                return  # the launcher took the attempt over and recorded how it ended
            cgroup, record = made[1], made[0]
            _undo_launch(self.dir, record, cgroup, release=False)
            self.end_pending("failed", f"attempt {attempt} did not start: {type(err).__name__}: {err}")

    def end_pending(self, state: str, note: str) -> None:
        """End a job between two attempts (stopped during the backoff, or a failed start)."""
        raw = self.dir.read("status.json") or {}
        if raw.get("state") != "pending":
            return
        previous = raw.get("previous") or {}
        self.dir.write("status.json", {
            **{k: v for k, v in previous.items() if k in ("peak_memory_bytes", "cpu_seconds")},
            **ended(state, note), "attempt": raw.get("attempt"),
        })
        self._wake_waiting()

    def _wake_waiting(self) -> None:
        """Let the jobs waiting for this one, now ended, start (or fail, as their ``after``
        says), and those waiting for its place or its GPUs: as the finisher does
        (``waking.py``), for an ending recorded elsewhere. In this process: it may be a
        notebook's kernel, which must not exec."""
        for owner_dir in waiting_owners(str(self.dir.path)):
            try:
                admission.run_pass(Path(owner_dir), os.path.basename(owner_dir), start_admitted)
            except (OSError, JobberError):
                continue  # another identity's jobs this process may not read: their own look admits them

    def attempts(self) -> list[JobStatus]:
        """Every attempt's status, oldest first: the ended ones, then the current one."""
        done = []
        folder = self.dir.path / ATTEMPTS
        try:
            numbers = sorted(int(name) for name in os.listdir(folder) if name.isdigit())
        except FileNotFoundError:
            numbers = []
        for number in numbers:
            raw = self.dir.read(f"{ATTEMPTS}/{number}/status.json")
            if raw is not None:
                record = self.dir.read(f"{ATTEMPTS}/{number}/confinement.json") or {}
                done.append(self._from_raw(raw, record, Limits.from_dict(raw.get("limits") or {})))
        return [*done, self.status()]

    def follow(self, offset: int, heartbeat: float | None) -> Iterator[bytes]:
        """The job's log from ``offset``, and every later attempt's after a marker line
        (offset 0: from the first attempt's first byte); see ``logs.follow_job``."""
        return logs.follow_job(self.dir.path, offset, self.status, heartbeat)

    def _wait_while_pending(self, timeout: float | None = None) -> JobStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        with Inotify() as inotify:
            logs.watch_job_dir(inotify, self.dir.path, IN_MOVED_TO)
            while (status := self.status()).state == "pending":
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                inotify.wait(_LIVENESS_CHECK_S if left is None else min(left, _LIVENESS_CHECK_S))
        return status

    def status(self) -> JobStatus:
        """The job's state, read from disk (live CPU and memory while it runs).

        Raises:
            JobError: the job's files are unreadable.
        """
        return self._status()[0]

    def _status(self) -> tuple[JobStatus, bool]:
        """The status, and whether the supervisor died without recording the outcome."""
        raw = self.dir.read("status.json")
        spec = self.dir.read_spec()
        limits = self._attempt_limits(spec)
        if raw is None:
            if not self.dir.path.is_dir():
                raise logs.removed_error(self.dir.path)
            self._release_abandoned_claim()
            return JobStatus(state="created", limits=limits, timeout=spec.timeout, retries=spec.retries,
                             retry_on=spec.retry_on), False
        if raw.get("waiting") or raw.get("admitted_by"):  # in line, or being started by a pass
            if raw.get("waiting"):
                admission.ensure_in_line(self)
            # A pass also finds a start whose admitter died, and puts the job back in line.
            if admission.nudge(self.dir.path.parent, self.owner, start_admitted):
                again = self.dir.read("status.json") or raw
                if again != raw:
                    return self._status()
            return self._from_raw(raw, {}, limits), False
        record = self.dir.read("confinement.json") or {}
        if raw["state"] not in ("running", "pending"):
            return self._from_raw(raw, record, limits), False
        if not alive(raw.get("supervisor_pid"), raw.get("supervisor_start")):
            # Re-read: the supervisor may have written its outcome and exited since.
            again = self.dir.read("status.json") or raw
            if again["state"] not in ("running", "pending"):
                return self._status()
            return self._reap_orphan(again, record), True
        if raw["state"] == "pending":
            return self._from_raw(raw, record, limits), False
        try:
            stats = isolation.open_cgroup(record, raw.get("pid")).stats()
        except (OSError, JobError):
            stats = {}
        return self._from_raw({**raw, **stats}, record, limits), False

    def _release_abandoned_claim(self) -> None:
        """A start() killed half-way (kill -9, a reboot) left its claim and no status: undo
        what it made, so the job can be started again. A launcher on its way (it took the
        attempt's gate, ``launched``, and lives) records the job itself; one that died
        before it did leaves processes that are killed here."""
        claim = self.dir.claim()
        if claim is None or alive(claim[0], claim[1]) or self.dir.exists("status.json"):
            return
        gate = self.dir.launcher()
        if gate is not None and alive(*gate):
            return
        record = self.dir.read("confinement.json")
        if gate is not None and record:
            _kill_leftovers(record, None)
            self.dir.remove("launched")
        _undo_launch(self.dir, record, None)

    def _attempt_limits(self, spec: JobSpec) -> Limits:
        current = self.dir.read(ATTEMPT) if spec.retries else None
        limits = (current or {}).get("limits")  # a retried attempt's, its memory grown after an OOM kill
        return Limits.from_dict(limits) if limits else spec.limits

    def _from_raw(self, raw: dict[str, Any], record: dict[str, Any], limits: Limits) -> JobStatus:
        """A JobStatus from a status file (the current one or an attempt's) and its record."""
        spec = self.dir.read_spec()
        fields = {k: raw[k] for k in JobStatus.__dataclass_fields__ if k in raw and k != "limits"}
        attempt = raw.get("attempt") or ((self.dir.read(ATTEMPT) or {}).get("attempt") if spec.retries else 1)
        fields.update(timeout=spec.timeout, retries=spec.retries, retry_on=spec.retry_on, attempt=attempt or 1,
                      isolation=record.get("isolation"), isolation_note="; ".join(record.get("notes", [])),
                      started_at=when(raw.get("started_at")), ended_at=when(raw.get("ended_at")))
        if raw.get("error") or raw.get("note"):
            fields["note"] = raw.get("error") or raw["note"]
        if spec.log_max and "attempt" not in raw and raw.get("started_at"):  # the current attempt's log
            fields["log_dropped_bytes"] = logcut.dropped_bytes(self.dir.log)
        if raw.get("state") == "running":  # once ended, the status itself says it
            fields["log_stopped"] = logcut.stopped_note(self.dir.path)
        return JobStatus(**fields, limits=limits)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job has ended, or ``timeout`` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with Inotify() as inotify:
            logs.watch_job_dir(inotify, self.dir.path, IN_MOVED_TO)
            while True:
                status = self.status()
                if status.ended:
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return status
                inotify.wait(_LIVENESS_CHECK_S if left is None else min(left, _LIVENESS_CHECK_S))

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the whole job: SIGTERM to every process, SIGKILL after ``grace`` seconds.

        Processes that left the process group (setsid, double fork) are found through
        the cgroup; the supervisor removes the cgroup once the job is gone. Stopping an
        ended job changes nothing. The steps are ``stopping.stop_plan``'s.

        Raises:
            JobError: the job was never started, or it could not be killed.
        """
        return stopping.drive(stopping.stop_plan(self.job_id, grace), self.signal, self._wait_step)

    def signal(self, kill: bool) -> JobStatus:
        """Record that the job is being stopped and signal every process of it (SIGTERM,
        or SIGKILL with ``kill``), without waiting; the status as it was just before.

        A job waiting in line leaves it, unrun (its status then: "stopped"). A job between
        two attempts has nothing to signal: ``run_next_attempt.py`` sees the request and ends it.

        Raises:
            JobError: the job was never started, or its processes cannot be signalled.
        """
        status = self.status()
        if status.ended:
            return status
        if status.state == "created":
            raise JobError(f"job {self.job_id} was never started: nothing to stop", job_id=self.job_id)
        if status.state == "pending" and admission.withdraw(self, "stopped", "stopped while it waited: it never ran",
                                                                     start_admitted):
            return self.status()
        self.dir.request_stop()
        if status.state == "pending":
            return status
        cgroup = self._cgroup(status.pid)
        try:
            if kill:
                cgroup.kill_all()
            else:
                cgroup.signal_all(signal.SIGTERM)
        except OSError as err:
            raise JobError(f"job {self.job_id}: cannot signal its processes: {err}", job_id=self.job_id) from err
        return status

    def _wait_step(self, step: stopping.Wait) -> JobStatus:
        return self._wait_while_pending(step.seconds) if step.pending else self.wait(step.seconds)

    def _cgroup(self, pid: int | None) -> Any:
        return isolation.open_cgroup(self.dir.read("confinement.json") or {}, pid)

    def _reap_orphan(self, raw: dict[str, Any], record: dict[str, Any]) -> JobStatus:
        """The supervisor died (killed, OOM, a reboot): finish the job as it would have.

        Its watchdog (``reap.py``) gets here within moments of the death, whether anyone
        reads the status or not; a read gets here first only if the watchdog died too.

        Nobody is left to wait for the job's processes, so they are killed, the cgroup's
        totals read and the cgroup removed, and the outcome recorded as "failed" with a
        note. The job is only called ended once its processes are gone. The exit code is
        lost with the supervisor (it was the only process that could wait for the job).
        """
        if raw.get("state") == "pending":  # between two attempts: nothing runs, no cgroup
            gate = self.dir.launcher()
            if gate is not None and alive(*gate):  # the next attempt's launcher records it (or dies: then here)
                return self._from_raw(raw, record, self._attempt_limits(self.dir.read_spec()))
            note = "the job's supervisor died between two attempts (killed?): no further attempt starts"
            stats: dict[str, Any] = raw.get("previous") or {}
        else:
            note, stats = _kill_leftovers(record, raw.get("pid"))
        final = {**raw, **ended("failed", note, oom_killed=bool(stats.get("oom_kills")))}
        final.update({k: stats[k] for k in ("peak_memory_bytes", "cpu_seconds", "cpu_throttled_seconds") if k in stats})
        if (self.dir.read("status.json") or {}).get("state") in ("running", "pending"):  # nobody else's outcome yet
            self.dir.write("status.json", final)
            self._wake_waiting()
        return self._status()[0]


def start_admitted(jobdir: JobDir, devices: list[int]) -> Callable[[], None] | None:
    """Launch a job an admission pass let through (see ``admission.py``); the call
    returned reads its launcher's answer."""
    return LocalBackend(jobdir).start_admitted(devices)


def _kill_leftovers(record: dict[str, Any], pid: int | None) -> tuple[str, dict[str, Any]]:
    """Kill an orphaned job's processes, read its cgroup's totals, remove it: (note, totals).

    A cgroup already gone was cleaned up by another reaper (the watchdog and a status
    read may race): that is success, not a failure to kill.
    """
    dirs = list((record.get("dirs") or {}).values())
    try:
        cgroup = isolation.open_cgroup(record, pid)
        if cgroup.pids():
            cgroup.kill_all()
        stats = cgroup.stats()
        cgroup.remove()
    except (OSError, JobError) as err:
        if dirs and not any(map(os.path.isdir, dirs)):
            return _REAPED, {}
        return f"the job's supervisor died before the job ended, and its processes could not be killed: {err}", {}
    return _REAPED, stats
