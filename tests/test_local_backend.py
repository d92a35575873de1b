"""LocalBackend.start: a failure at any step leaves the job startable (or ended as failed,
with the reason) and no cgroup behind.

Each step of ``start`` is made to fail in turn (the name it calls is monkeypatched to
raise), with each kind of exception a step can raise: a JobError, an OSError (as a
missing launcher.c once caused), a generic RuntimeError and a KeyboardInterrupt. The job
must then be as new: state "created", no start claim, no confinement record, no cgroup
anywhere under /sys/fs/cgroup; and once the failure is gone it starts and exits 0. Both
supervisors run every case (the compiled launcher and the Python one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from jobber import JobError, Limits
from jobber._backends.local import backend as local_backend
from jobber._backends.local import cgroupfs, isolation, launching
from jobber._backends.local import launcher_build as _launcher
from jobber._backends.local.isolation import choose
from jobber._jobs.jobdir import JobDir

_BACKEND, UNCONFINED_REASON = choose()
ISOLATION = _BACKEND.NAME
needs_cgroup = pytest.mark.skipif(
    ISOLATION == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}"
)
CGROUP_ROOT = "/sys/fs/cgroup"


@pytest.fixture(autouse=True, params=["compiled", "python"])
def launcher(request, monkeypatch):
    """Every test runs with both supervisors: the compiled launcher and the Python one."""
    if request.param == "python":
        monkeypatch.setenv("JOBBER_LAUNCHER", "python")
    else:
        monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    _launcher.reset()
    _launcher.launcher_command("JOB_DIR")  # choose (and build) it now, before anything is patched
    yield request.param
    _launcher.reset()


def _owner_matches(name: str, owner: str) -> bool:
    """The owner's cgroup is named by its hash, possibly with a suffix ("<hash>.<key>")."""
    return name == owner or name.startswith(owner + ".")


def is_cgroup_of(path: str, owner: str, job_id: int | None = None) -> bool:
    """``path`` is ``.../jobber/<owner>[.<key>]/<job id>`` (any job id when None)."""
    parent, name = os.path.split(path)
    grandparent, owner_name = os.path.split(parent)
    return (os.path.basename(grandparent) == "jobber" and _owner_matches(owner_name, owner)
            and (name == str(job_id) if job_id is not None else name.isdigit()))


@pytest.fixture(autouse=True)
def no_cgroup_outlives_the_test(store):
    """rmdir what a failing test left of its jobs' cgroups (empty ones only), so that a
    failure here does not leave the host littered; the test itself has failed already."""
    yield
    for top, _dirs, _files in list(os.walk(CGROUP_ROOT)):
        if is_cgroup_of(top, store.owner):
            for path in (top, os.path.dirname(top)):
                try:
                    os.rmdir(path)
                except OSError:
                    pass


def cgroups_of(job) -> list[str]:
    """Every cgroup directory of this job, in any hierarchy mounted under /sys/fs/cgroup:
    a path ending in jobber/<owner>/<id> (the owner's name may carry a suffix)."""
    found = []
    for top, dirs, _files in os.walk(CGROUP_ROOT):
        if is_cgroup_of(top, job.owner, job.id):
            found.append(top)
            dirs[:] = []
    return found


def assert_startable(job, err: BaseException | None = None) -> None:
    """The job is as new: created, no claim, no confinement, no cgroup anywhere."""
    assert job.status().state == "created", (job.status(), err)
    left = sorted(p.name for p in Path(job.path).iterdir())
    for name in ("started", "confinement.json", "status.json", "pid"):
        assert name not in left, f"{name} left in {job.path} after a failed start ({err!r}): {left}"
    assert cgroups_of(job) == [], f"cgroups left behind by a failed start ({err!r})"


def assert_runs(job) -> None:
    """Start the job for real: it runs to exit 0, and its cgroup is gone afterwards."""
    job.start()
    status = job.wait(60)
    assert (status.state, status.exit_code) == ("exited", 0), status
    if ISOLATION != "none":
        assert status.isolation == ISOLATION
    assert cgroups_of(job) == []


# --- the failures ------------------------------------------------------------------------

KINDS: dict[str, Callable[[int], BaseException]] = {
    "JobError": lambda job_id: JobError(f"job {job_id}: injected failure", job_id=job_id),
    # What a missing launcher.c (a broken install) once raised from launcher_command.
    "FileNotFoundError": lambda job_id: FileNotFoundError(2, "No such file or directory", "/nowhere/launcher.c"),
    "RuntimeError": lambda job_id: RuntimeError("injected failure"),
    "KeyboardInterrupt": lambda job_id: KeyboardInterrupt(),
}


def _raiser(error: BaseException) -> Callable[..., None]:
    def fail(*args, **kwargs):
        raise error

    return fail


def _fail_on_confinement_write(mp: pytest.MonkeyPatch, error: BaseException) -> None:
    write = JobDir.write

    def failing_write(self, name, data):
        if name == "confinement.json":
            raise error
        return write(self, name, data)

    mp.setattr(JobDir, "write", failing_write)


def _fail_popen_of_the_launcher(mp: pytest.MonkeyPatch, error: BaseException) -> None:
    popen = launching.subprocess.Popen
    prefix = _launcher.launcher_command("JOB_DIR")[0]

    def failing_popen(argv, *args, **kwargs):
        if prefix in argv:  # argv[0], or after `systemd-run --user --scope --` (a user's systemd host)
            raise error
        return popen(argv, *args, **kwargs)

    mp.setattr(launching.subprocess, "Popen", failing_popen)


# step -> how to make it fail with a given exception. In start() order.
STEPS: dict[str, Callable[[pytest.MonkeyPatch, BaseException], None]] = {
    "claim_start": lambda mp, e: mp.setattr(JobDir, "claim_start", _raiser(e)),
    "run_context": lambda mp, e: mp.setattr(local_backend, "run_context", _raiser(e)),
    "write_spec": lambda mp, e: mp.setattr(JobDir, "write_spec", _raiser(e)),
    "isolation.prepare": lambda mp, e: mp.setattr(isolation, "prepare", _raiser(e)),
    "isolation.open_cgroup": lambda mp, e: mp.setattr(isolation, "open_cgroup", _raiser(e)),
    "write confinement.json": _fail_on_confinement_write,
    "launcher_command": lambda mp, e: mp.setattr(launching, "launcher_command", _raiser(e)),
    "_supervisor_argv": lambda mp, e: mp.setattr(local_backend, "_supervisor_argv", _raiser(e)),
    "Popen of the launcher": _fail_popen_of_the_launcher,
    "_begin_launch": lambda mp, e: mp.setattr(local_backend, "_begin_launch", _raiser(e)),
    "the launcher's answer": lambda mp, e: mp.setattr(local_backend, "_begin_launch", lambda *a, **k: _raiser(e)),
}


def check_failed_start(job, error: BaseException) -> BaseException:
    """job.start() raises the translated error; returns what it raised."""
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt) as caught:
            job.start()
        return caught.value
    with pytest.raises(JobError) as caught:
        job.start()
    raised = caught.value
    assert type(raised) is JobError or isinstance(error, JobError), repr(raised)
    if isinstance(error, JobError):
        assert "injected failure" in str(raised)
    else:
        # Translated: names the job, says what went wrong, chains the original.
        assert f"job {job.id}" in str(raised), str(raised)
        reason = error.strerror if isinstance(error, OSError) else str(error)
        assert reason in str(raised), str(raised)
        assert raised.__cause__ is error
    return raised


class TestAFailureAtAnyStepIsUndone:
    @pytest.mark.parametrize("kind", list(KINDS))
    @pytest.mark.parametrize("step", list(STEPS))
    def test_the_job_is_left_startable_without_a_cgroup(self, store, step, kind):
        job = store.new_job("echo hi", Limits(memory="64M", pids=50))
        error = KINDS[kind](job.id)
        with pytest.MonkeyPatch.context() as mp:
            STEPS[step](mp, error)
            raised = check_failed_start(job, error)
            assert_startable(job, raised)
        assert_startable(job, raised)
        assert_runs(job)
        buf = bytearray(100)
        assert buf[: job.tail(buf)] == b"hi\n"

    @needs_cgroup
    @pytest.mark.parametrize("kind", ["OSError", "RuntimeError"])
    def test_a_cgroup_refusing_a_limit_after_the_mkdirs(self, store, kind):
        """Inside isolation.prepare: the directories exist when the kernel refuses a value."""
        job = store.new_job("echo hi", Limits(memory="64M", pids=50))
        error = OSError(22, "Invalid argument") if kind == "OSError" else RuntimeError("injected failure")
        write = cgroupfs.write
        made = []

        def refusing_write(path, value):
            if os.path.basename(path) in ("pids.max", "memory.limit_in_bytes", "memory.max"):
                made.extend(cgroups_of(job))
                raise error
            return write(path, value)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cgroupfs, "write", refusing_write)
            with pytest.raises(JobError) as caught:
                job.start()
        assert made, "the failure was meant to come after the job's cgroups were made"
        assert f"job {job.id}" in str(caught.value)
        assert_startable(job, caught.value)
        assert_runs(job)

    def test_two_failed_starts_in_a_row_then_a_good_one(self, store):
        job = store.new_job("echo hi")
        for step in ("_begin_launch", "the launcher's answer", "write confinement.json"):
            error = RuntimeError("injected failure")
            with pytest.MonkeyPatch.context() as mp:
                STEPS[step](mp, error)
                check_failed_start(job, error)
            assert_startable(job)
        assert_runs(job)


class TestTheLauncherFails:
    def test_a_launcher_that_cannot_be_run_leaves_the_job_startable(self, store, monkeypatch):
        job = store.new_job("echo hi", Limits(memory="64M"))
        real = launching.launcher_command
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(launching, "launcher_command",
                       lambda job_dir: ["/nonexistent/launcher", *real(job_dir)[1:]])
            with pytest.raises(JobError, match=f"job {job.id}.*(/nonexistent/launcher|No such file)") as caught:
                job.start()
        assert_startable(job, caught.value)
        assert_runs(job)

    def test_a_launcher_that_exits_without_an_answer_leaves_the_job_startable(self, store):
        job = store.new_job("echo hi", Limits(memory="64M"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(launching, "launcher_command", lambda job_dir: ["/bin/true"])
            with pytest.raises(JobError, match=f"job {job.id} did not start: the supervisor exited with 0") as caught:
                job.start()
        assert_startable(job, caught.value)
        assert_runs(job)

    def test_a_launcher_that_answers_error_ends_the_job_as_failed_with_the_reason(self, store, tmp_path):
        """The working directory is gone when the job enters it: the launcher's child
        fails, the supervisor records why and answers "error ..."."""
        job = store.new_job("echo hi", Limits(memory="64M", pids=50))
        vanishing = tmp_path / "removed before the job enters it"
        vanishing.mkdir()
        real = local_backend.run_context

        def context_then_rmdir(*args, **kwargs):
            context = real(*args, **kwargs)
            vanishing.rmdir()
            return context

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(local_backend, "run_context", context_then_rmdir)
            with pytest.raises(JobError, match=f"job {job.id} did not start: .*removed before") as caught:
                job.start(cwd=str(vanishing))
        status = job.status()
        assert status.state == "failed", status
        assert str(vanishing) in status.note, status
        assert status.note in str(caught.value)
        assert status.ended and status.ended_at is not None
        assert cgroups_of(job) == []
        with pytest.raises(JobError, match="already started"):
            job.start()  # it ended: the reason stays, the job is not run again
        assert job.status().note == status.note

    def test_a_working_directory_that_does_not_exist_is_refused_before_anything_is_made(self, store):
        job = store.new_job("echo hi", Limits(memory="64M"))
        with pytest.raises(JobError, match="/nonexistent") as caught:
            job.start(cwd="/nonexistent")
        assert_startable(job, caught.value)
        assert_runs(job)


@needs_cgroup
class TestUnenforcedLimits:
    def test_require_isolation_refuses_a_limit_whose_file_is_missing(self, store):
        """The controller file of pids is missing: start names the limit, makes nothing."""
        job = store.new_job("echo hi", Limits(memory="64M", pids=50, require_isolation=True))
        listdir = os.listdir
        hidden = []

        def without_pids(path="."):
            names = listdir(path)
            if is_cgroup_of(str(path).rstrip("/"), job.owner, job.id) and "pids.max" in names:
                hidden.append(path)
                names = [n for n in names if n != "pids.max"]
            return names

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "listdir", without_pids)
            with pytest.raises(JobError) as caught:
                job.start()
        assert hidden, "pids.max was never looked for: the test no longer exercises the missing file"
        message = str(caught.value)
        assert f"job {job.id} needs isolation" in message and "pids" in message, message
        assert "memory" not in message.split("enforced:")[1].split("(")[0], message
        assert_startable(job, caught.value)
        assert_runs(job)

    def test_without_require_isolation_the_job_runs_and_says_what_is_unenforced(self, store):
        job = store.new_job("echo hi", Limits(pids=50))
        listdir = os.listdir

        def without_pids(path="."):
            names = listdir(path)
            if is_cgroup_of(str(path).rstrip("/"), job.owner, job.id):
                names = [n for n in names if n != "pids.max"]
            return names

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "listdir", without_pids)
            job.start()
        status = job.wait(60)
        assert (status.state, status.exit_code) == ("exited", 0), status
        assert "pids limit not enforced" in status.isolation_note
        assert cgroups_of(job) == []


def test_the_cgroup_search_finds_a_running_jobs_cgroup(store):
    """The check the tests above rely on sees a cgroup when there is one."""
    if ISOLATION == "none":
        pytest.skip(f"jobs are not isolated on this host: {UNCONFINED_REASON}")
    job = store.new_job("sleep 30")
    job.start()
    try:
        assert cgroups_of(job), "a running job's cgroup was not found under /sys/fs/cgroup"
    finally:
        job.stop(grace=0)
    assert cgroups_of(job) == []
