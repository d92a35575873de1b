"""What both launchers do for a server's job, and for every job: real jobs, C and Python.

- ``--clear-env``: exactly the variables the sandbox names reach the job, nothing of the
  starter's environment; ``--umask``, ``--no-new-privs`` and ``--rlimit
  RLIMIT_NOFILE=SOFT:HARD`` read back from ``/proc/self``; ``--private-tmp`` and
  ``--hide-pids`` (root): the job's /tmp is its directory, its /proc its own uid's, and
  cgroupfs lists no pid but its own (``--hide-cgroup``).
- ``--command-file``: a command of 200 KB and of 2 MB runs (as an argument each would
  meet the kernel's 128 KiB per string), and so does one at the inline limit.
- ``user="#UID[:GID]"``: a numeric identity with no passwd entry (root).
- A symlink planted in a job directory is never written through: the log (the start
  fails and the job stays startable), the pid file and the command file (replaced).
- Local jobs keep inheriting the caller's environment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobber import JobError
from jobber._backends.context import SANDBOX_PATH, Sandbox
from jobber._backends.local import launcher_build as _launcher
from jobber._backends.local.job_child import INLINE_MAX

KINDS = ["compiled", "python"]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid and mount namespaces need root")
UID = 200_777  # no passwd entry on a test host; the tenancy test's range starts elsewhere


@pytest.fixture(params=KINDS)
def kind(request, monkeypatch) -> str:
    """Run the test's jobs under the C launcher, then under the Python supervisor."""
    if request.param == "python":
        monkeypatch.setenv("JOBBER_LAUNCHER", "python")
    else:
        monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    _launcher.reset()
    prefix = _launcher.launcher_command("JOB_DIR")
    if request.param == "compiled" and "--launch" in prefix:
        pytest.skip("no compiled launcher on this host (no C compiler)")
    yield request.param
    _launcher.reset()


def output(job, size: int = 1 << 22) -> str:
    buf = bytearray(size)
    return bytes(buf[: job.tail(buf)]).decode()


def run(job, *, sandbox: Sandbox | None = None, user: str | None = None, timeout: float = 60) -> str:
    """Start (with the server's private sandbox seam when given), wait, return the log."""
    if sandbox is None:
        job.start(user=user)
    else:
        job._backend.start(user=user, cwd=None, sandbox=sandbox)
    status = job.wait(timeout)
    assert status.state == "exited", (status, output(job))
    return output(job)


def proc_status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


@pytest.fixture
def tenant_dirs(tmp_path_factory) -> tuple[str, str]:
    """A home and a tmp that uid UID owns, reachable by it (under /var/tmp, not /tmp)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="jobber-sandbox-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    dirs = []
    for name in ("home", "tmp"):
        (base / name).mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(base / name, UID, UID)
        dirs.append(str(base / name))
    yield dirs[0], dirs[1]
    shutil.rmtree(base, ignore_errors=True)


class TestTheCleanEnvironment:
    def test_exactly_the_sandbox_variables_and_the_jobs_own(self, store, kind, monkeypatch, tenant_dirs):
        home, tmp = tenant_dirs
        monkeypatch.setenv("JOBBER_TEST_SECRET", "the starter's secret")
        job = store.new_job("env; echo --; umask", env={"SEED": "7"})
        out = run(job, sandbox=Sandbox(home=home, tmpdir=tmp))
        env_text, _, umask = out.partition("--\n")
        env = dict(line.split("=", 1) for line in env_text.splitlines())
        assert "the starter's secret" not in out
        assert env == {"PATH": SANDBOX_PATH, "HOME": home, "USER": env["USER"], "LANG": "C.UTF-8", "TMPDIR": tmp,
                       "JOBBER_JOB_ID": str(job.id), "JOBBER_JOB_TAG": f"{job.owner}/{job.id}", "SEED": "7",
                       "PWD": home}, env  # PWD: the shell's own
        assert umask.strip() == "0077"

    def test_no_new_privileges_umask_and_open_files(self, store, kind, tenant_dirs):
        job = store.new_job("cat /proc/self/status; echo soft $(ulimit -n) hard $(ulimit -Hn); touch f; stat -c %a f")
        out = run(job, sandbox=Sandbox(home=tenant_dirs[0]))
        fields = proc_status(out)
        assert fields["NoNewPrivs"] == "1" and fields["Umask"] == "0077", fields
        assert "soft 1024 hard 4096" in out
        assert out.splitlines()[-1] == "600"  # a file the job makes is its own

    def test_a_local_job_inherits_the_callers_environment_as_before(self, store, kind, monkeypatch):
        monkeypatch.setenv("JOBBER_TEST_INHERITED", "from the caller")
        out = run(store.new_job('echo "$JOBBER_TEST_INHERITED"; grep NoNewPrivs /proc/self/status'))
        assert out.splitlines() == ["from the caller", "NoNewPrivs:\t0"]

    @ROOT_ONLY
    def test_as_a_numeric_uid_in_a_private_tmp_and_proc(self, store, kind, tenant_dirs, tmp_path):
        home, tmp = tenant_dirs
        Path("/tmp/jobber-sandbox-host-file").write_text("host /tmp")
        try:
            job = store.new_job("id -u; id -g; id -G; pwd; echo mine > /tmp/own; ls -A /tmp; "
                                "ls /proc | grep -c '^[0-9]'; cat /proc/self/status")
            out = run(job, user=f"#{UID}:{UID + 1}",
                      sandbox=Sandbox(home=home, tmpdir=tmp, private_tmp=True, hide_pids=True))
        finally:
            os.unlink("/tmp/jobber-sandbox-host-file")
        lines = out.splitlines()
        assert lines[:5] == [str(UID), str(UID + 1), str(UID + 1), home, "own"], lines
        assert int(lines[5]) < 10, "a hidepid /proc shows the job's own processes only"
        assert (Path(tmp) / "own").read_text() == "mine\n"  # the job's /tmp is its directory
        st = os.stat(Path(tmp) / "own")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, UID + 1, 0o600)
        assert proc_status(out)["Groups"] == str(UID + 1) or proc_status(out).get("Groups", "") == ""
        mounts = Path("/proc/self/mountinfo").read_text()
        assert tmp not in mounts, "the job's mounts leaked into the host's namespace"


class TestHiddenCgroups:
    """hidepid=2 must not be defeated through cgroupfs: every ``cgroup.procs`` and
    ``tasks`` the job can find lists only its own processes (the hierarchies it was not
    moved into, cpuset and name=systemd, and a hybrid host's unified root included),
    while its own cgroup's files still read as before and take no new cgroup."""

    LIST = ("echo self $$; sleep 0.1 & sleep 0.1 & "  # the job's own processes, listed too
            "find /sys/fs/cgroup -name cgroup.procs -o -name tasks 2>/dev/null | sort > cgroup-files; "
            "xargs cat < cgroup-files | sort -un | tr '\\n' ' '; echo; wc -l < cgroup-files; "
            "find /sys/fs/cgroup -name memory.limit_in_bytes -o -name memory.max 2>/dev/null | xargs cat; "
            "mkdir $(dirname $(head -1 cgroup-files))/escape 2>&1 | grep -o 'Read-only file system'; wait")

    @ROOT_ONLY
    def test_a_tenants_job_lists_only_its_own_pids(self, store, kind, tenant_dirs):
        import subprocess

        from jobber import Limits
        from jobber._backends.local.isolation import choose

        home, tmp = tenant_dirs
        host_pids = subprocess.run(["sh", "-c", "cat /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs"],
                                   capture_output=True, text=True).stdout.split()
        assert str(os.getpid()) in host_pids  # control: from the host, cgroupfs lists them all
        outsider = subprocess.Popen(["sleep", "60"])
        try:
            job = store.new_job(self.LIST, Limits(memory="64M"))
            out = run(job, user=f"#{UID}", sandbox=Sandbox(home=home, tmpdir=tmp, private_tmp=True, hide_pids=True))
        finally:
            outsider.kill()
            outsider.wait()
        lines = out.splitlines()
        own = lines[0].split()[1]
        listed = lines[1].split()
        assert own in listed or choose()[0].NAME == "none", lines  # its own cgroup is there to read
        for pid in ("1", str(os.getpid()), str(outsider.pid)):
            assert pid not in listed, lines
        assert len(listed) <= 8, lines  # sh, find, xargs, cat, sort, tr, two sleeps: nothing else
        if choose()[0].NAME != "none":
            assert int(lines[2]) > 0 and str(64 << 20) in lines[3:], lines  # its limit reads as before
            assert lines[-1] == "Read-only file system", lines

    @ROOT_ONLY
    def test_the_hosts_cgroupfs_is_untouched(self, store, kind, tenant_dirs):
        def cgroup_mounts() -> list[str]:
            return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "/sys/fs/cgroup" in line]

        home, tmp = tenant_dirs
        before = cgroup_mounts()
        job = store.new_job("true")
        run(job, user=f"#{UID}", sandbox=Sandbox(home=home, tmpdir=tmp, private_tmp=True, hide_pids=True))
        assert cgroup_mounts() == before, "the job's mounts leaked into the host's namespace"


class TestNumericUsers:
    @ROOT_ONLY
    def test_uid_alone_takes_the_same_number_as_gid_without_a_passwd_entry(self, store, kind):
        out = run(store.new_job("id -u; id -g; echo $USER $HOME; pwd"), user=f"#{UID}")
        assert out.splitlines() == [str(UID), str(UID), f"{UID} /", "/"]

    @pytest.mark.parametrize("user", ["#", "#abc", "#1:", "#-1", "#1:2:3", "#99999999999"])
    def test_malformed_numeric_users_are_refused_before_anything_runs(self, store, user):
        job = store.new_job("true")
        with pytest.raises(JobError, match="#UID"):
            job.start(user=user)
        assert job.status().state == "created"


class TestLongCommands:
    @pytest.mark.parametrize("size", [INLINE_MAX - 20, INLINE_MAX + 1, 200_000, 2_000_000])
    def test_a_command_of_any_length_runs(self, store, kind, size):
        """`: 'aaa...'` fills the command to ``size`` bytes; the job prints the length of
        what it received, proving the whole command reached the shell."""
        filler = "a" * (size - 60)
        command = f"x='{filler}'; echo start; echo ${{#x}}; echo end"
        job = store.new_job(command)
        assert run(job).splitlines() == ["start", str(len(filler)), "end"]
        assert (Path(job.path) / "command").read_bytes() == command.encode()

    def test_a_long_command_keeps_exit_codes_and_heredocs(self, store, kind):
        command = ": '" + "b" * 300_000 + "'\ncat <<EOF\nhere $((1 + 2))\nEOF\nexit 7"
        job = store.new_job(command)
        job.start()
        assert job.wait(60).exit_code == 7
        assert output(job) == "here 3\n"

    def test_the_command_descriptor_is_not_left_to_the_job(self, store, kind):
        job = store.new_job(": '" + "c" * 100_000 + "'\nls /proc/self/fd")
        fds = run(job).split()
        assert "9" not in fds, fds


class TestPlantedLinks:
    """Someone with the job directory's uid (a single-tenant server's jobs) plants links."""

    def test_a_log_link_fails_the_start_and_leaves_the_target_alone(self, store, kind, tmp_path):
        target = tmp_path / "victim"
        target.write_text("untouched\n")
        job = store.new_job("echo written through the link")
        os.symlink(target, Path(job.path) / "log")
        with pytest.raises(JobError, match=f"job {job.id} did not start.*log"):
            job.start()
        assert target.read_text() == "untouched\n"
        assert job.status().state == "created"  # startable again once the link is gone
        os.unlink(Path(job.path) / "log")
        assert run(job) == "written through the link\n"

    def test_a_fifo_as_the_log_fails_the_start_at_once(self, store, kind):
        job = store.new_job("echo hi")
        os.mkfifo(Path(job.path) / "log")
        with pytest.raises(JobError, match=f"job {job.id} did not start"):
            job.start()
        assert job.status().state == "created"

    @pytest.mark.parametrize("name", ["pid", "command"])
    def test_a_pid_or_command_link_is_replaced_not_followed(self, store, kind, tmp_path, name):
        target = tmp_path / "victim"
        target.write_text("untouched\n")
        job = store.new_job("echo ran")
        os.symlink(target, Path(job.path) / name)
        assert run(job) == "ran\n"
        assert target.read_text() == "untouched\n"
        assert stat.S_ISREG(os.lstat(Path(job.path) / name).st_mode)

    def test_a_command_file_that_is_a_link_is_refused_by_the_launcher(self, kind, tmp_path):
        """The launcher itself opens the command with O_NOFOLLOW (the backend's write is
        atomic, so only a race could put a link there): run it by hand."""
        import json
        import subprocess

        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "confinement.json").write_text(json.dumps({"isolation": "none", "tag": "x/1", "rlimits": {}}))
        target = tmp_path / "script"
        target.write_text("echo followed > " + str(tmp_path / "followed"))
        os.symlink(target, job_dir / "command")
        argv = _launcher.launcher_command(str(job_dir)) + ["--pgid", "--command-file", str(job_dir / "command")]
        reply = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert reply.stdout.startswith("error "), reply
        assert "command" in reply.stdout
        assert not (tmp_path / "followed").exists()
        assert not (job_dir / "status.json").exists() and not (job_dir / "pid").exists()


def test_the_python_supervisor_imports_ctypes_only_in_the_child():
    """The finishing half runs at every job's end (stop waits for it): ctypes is imported
    only inside the functions a child calls for a namespace or no-new-privs."""
    import ast

    from jobber._backends.local import job_child, supervisor

    for module in (supervisor, job_child):
        tree = ast.parse(Path(module.__file__).read_text())
        top = [alias.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in node.names]
        assert "ctypes" not in top, (module.__name__, top)
