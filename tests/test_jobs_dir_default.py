"""The default jobs directory: root's, each ordinary user's own, the old one, and a name
that Python started in /tmp cannot import in place of jobber."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from jobber._doctor import _old_jobs_dir
from jobber._jobs import store
from polling import wait_for

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may sit under /root (0700)


@pytest.fixture
def scratch_defaults(monkeypatch, tmp_path):
    """The defaults moved into tmp_path, so this host's real /tmp/jobber is left alone."""
    monkeypatch.delenv("JOBBER_JOBS_DIR", raising=False)
    monkeypatch.setattr(store, "DEFAULT_JOBS_DIR", str(tmp_path / "jobber-jobs"))
    monkeypatch.setattr(store, "LEGACY_JOBS_DIR", str(tmp_path / "jobber" / "jobs"))
    return tmp_path


class TestDefault:
    def test_override_wins(self, monkeypatch, tmp_path):
        monkeypatch.setenv("JOBBER_JOBS_DIR", str(tmp_path / "x"))
        assert store.jobs_dir() == tmp_path / "x"

    @pytest.mark.skipif(os.geteuid() != 0, reason="root's default")
    def test_root_gets_a_name_python_cannot_import(self, scratch_defaults):
        assert store.jobs_dir() == scratch_defaults / "jobber-jobs"
        assert not Path(store.DEFAULT_JOBS_DIR).name.isidentifier()

    @pytest.mark.skipif(os.geteuid() != 0, reason="root's default")
    def test_the_old_default_is_kept_until_moved_and_doctor_says_how(self, scratch_defaults):
        old = scratch_defaults / "jobber" / "jobs"
        old.mkdir(parents=True, mode=0o700)
        assert store.jobs_dir() == old
        [check] = _old_jobs_dir()
        assert not check.ok and f"mv {old} {scratch_defaults / 'jobber-jobs'}" in check.fix
        (scratch_defaults / "jobber-jobs").mkdir(mode=0o700)
        assert store.jobs_dir() == scratch_defaults / "jobber-jobs"
        assert _old_jobs_dir() == []  # nothing left there to move
        (old / ("a" * 64)).mkdir()
        [check] = _old_jobs_dir()
        assert "are not listed" in check.found and f"JOBBER_JOBS_DIR={old} jobber ls" in check.fix

    def test_an_old_default_of_another_user_is_not_used(self, scratch_defaults):
        old = scratch_defaults / "jobber" / "jobs"
        old.mkdir(parents=True)
        os.chown(old, 4242, 4242) if os.geteuid() == 0 else pytest.skip("needs chown")
        assert store.jobs_dir() != old


def _python_from(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import jobber; print(jobber.Certificate.__name__)"], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONSAFEPATH": ""})


class TestShadowing:
    def test_python_started_beside_roots_default_imports_jobber(self, tmp_path):
        (tmp_path / Path(store.DEFAULT_JOBS_DIR).name).mkdir()
        result = _python_from(tmp_path)
        assert result.returncode == 0 and result.stdout == "Certificate\n", result.stderr

    def test_the_old_name_did_shadow_it(self, tmp_path):
        """The control: with the editable install, a directory called jobber in the
        current directory is what ``import jobber`` finds."""
        if "__editable__" not in "".join(map(str, Path(sysconfig.get_paths()["purelib"]).glob("__editable__*"))):
            pytest.skip("jobber is not an editable install here: a plain install is not shadowed")
        (tmp_path / Path(store.LEGACY_JOBS_DIR).parent.name).mkdir()
        result = _python_from(tmp_path)
        assert result.returncode != 0 and "Certificate" in result.stderr


# Two ordinary users, each with the default jobs directory, isolation none.

needs_users = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv")
                                 or not os.path.exists(SYSTEM_PYTHON), reason="needs root, useradd, setpriv, python3")


def _end_processes_of(uid: int) -> None:
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def two_users():
    """Two fresh Unix users with homes, removed (with their processes) afterwards; no
    subordinate ranges, so other tests' uid ranges are not overlapped meanwhile."""
    names = [f"jbt{uuid.uuid4().hex[:8]}" for _ in range(2)]
    made = []
    try:
        for name in names:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name],
                           check=True, capture_output=True)
            made.append(name)
        yield [pwd.getpwnam(name) for name in names]
    finally:
        for name in made:
            uid = pwd.getpwnam(name).pw_uid
            wait_for(lambda u=uid: _end_processes_of(u) or not _uid_has_processes(u), 10, f"{name}'s processes")
            subprocess.run(["userdel", "-r", name], capture_output=True)


def _uid_has_processes(uid: int) -> bool:
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                return True
        except OSError:
            pass
    return False


def _as(user: pwd.struct_passwd, *argv: str, popen: bool = False):
    site = sysconfig.get_paths()["purelib"]
    home = user.pw_dir
    cwd = home if os.path.isdir(home) else "/"
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--reset-env",
               "env", f"PYTHONPATH={REPO}:{site}", "PYTHONDONTWRITEBYTECODE=1", "JOBBER_ISOLATION=none",
               f"JOBBER_ROOT={home}/pki", f"JOBBER_CERT={home}/pki/client.pem", *argv]
    if popen:
        return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def _jobber(user: pwd.struct_passwd, *args: str) -> subprocess.CompletedProcess:
    return _as(user, SYSTEM_PYTHON, "-m", "jobber", *args)


@needs_users
def test_two_users_each_get_a_private_default_and_never_meet(two_users):
    a, b = two_users
    pids = {}
    for user in (a, b):
        assert _jobber(user, "certs", "init-demo", f"{user.pw_dir}/pki").returncode == 0
        started = _jobber(user, "run", "--", f"echo secret-{user.pw_name}; sleep 300")
        assert started.returncode == 0 and "job 1 started" in started.stderr, started.stderr
        jobs = Path(user.pw_dir) / ".local" / "state" / "jobber" / "jobs"
        st = os.stat(jobs)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o700)
        doctor = _jobber(user, "doctor")
        assert f"{jobs} (yours, private)" in doctor.stdout, doctor.stdout
        [job_dir] = jobs.glob("*/1")
        pids[user.pw_name] = int(wait_for(lambda d=job_dir: (d / "pid").is_file() and (d / "pid").read_text().strip(),
                                          30, "the job's pid"))
        wait_for(lambda d=job_dir, s=f"secret-{user.pw_name}": s in (d / "log").read_text(), 30, "the job's output")
    for me, other in ((a, b), (b, a)):
        listing = _jobber(me, "ls")
        assert listing.returncode == 0 and f"secret-{me.pw_name}" in listing.stdout
        assert f"secret-{other.pw_name}" not in listing.stdout
        log = _jobber(me, "logs", "1")
        assert log.stdout == f"secret-{me.pw_name}\n"
        other_log = next((Path(other.pw_dir) / ".local/state/jobber/jobs").glob("*/1/log"))
        peek = _as(me, SYSTEM_PYTHON, "-c", f"open({str(other_log)!r}).read()")
        assert "PermissionError" in peek.stderr
        poke = _as(me, SYSTEM_PYTHON, "-c", f"import os; os.kill({pids[other.pw_name]}, 0)")
        assert "PermissionError" in poke.stderr
    follower = _as(a, SYSTEM_PYTHON, "-m", "jobber", "logs", "-f", "1", popen=True)
    try:
        assert _jobber(b, "stop", "1").returncode == 0  # b's own job 1, not a's
        wait_for(lambda: not os.path.exists(f"/proc/{pids[b.pw_name]}"), 30, "b's job to end")
        assert os.path.exists(f"/proc/{pids[a.pw_name]}") and follower.poll() is None
        assert _jobber(a, "stop", "1").returncode == 0
        out, _ = follower.communicate(timeout=30)
        assert out.startswith(f"secret-{a.pw_name}\n")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


_PRINT_DEFAULT = "from jobber._jobs.store import jobs_dir; print(jobs_dir())"


@needs_users
def test_a_home_that_is_not_the_users_is_passed_over(two_users):
    """``runuser`` without ``-l`` keeps root's $HOME: the kernel and the CLI would part ways."""
    user = two_users[0]
    shown = _as(user, "env", "HOME=/root", SYSTEM_PYTHON, "-c", _PRINT_DEFAULT)
    assert shown.stdout == f"{user.pw_dir}/.local/state/jobber/jobs\n", shown.stderr
    shown = _as(user, "env", f"XDG_STATE_HOME={user.pw_dir}/state", SYSTEM_PYTHON, "-c", _PRINT_DEFAULT)
    assert shown.stdout == f"{user.pw_dir}/state/jobber/jobs\n", shown.stderr


@needs_users
def test_a_user_without_a_home_gets_one_under_tmp_named_apart(two_users):
    nobody = pwd.getpwnam("nobody")
    if os.path.isdir(nobody.pw_dir):
        pytest.skip(f"nobody has a home here ({nobody.pw_dir})")
    shown = _as(nobody, SYSTEM_PYTHON, "-c", _PRINT_DEFAULT)
    assert shown.stdout == f"/tmp/jobber-{nobody.pw_uid}/jobs\n", shown.stderr
