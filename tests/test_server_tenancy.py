"""One tenant's job against another's, on a real ``jobber serve`` run as root on loopback.

Tenant A runs a long job holding a secret in its environment; tenant B's jobs then try,
and must fail, to: read A's ``/proc/PID/environ`` and ``/proc/PID/mem``, ptrace-attach
A's job (ctypes ``PTRACE_ATTACH`` and ``strace -p``), ``kill -9`` it, read A's log and
rewrite its ``status.json``, read the server's TLS key, see a secret of the server's
environment, see what A left in /tmp, and list the other tenants' cgroups. Each refused
attack has a control that B can do the same to a process of its own, so the refusal is
the tenancy's and not a missing tool. Every job has umask 077, NoNewPrivs and open files
1024/4096; uids differ per tenant and are kept across a restart. The whole set runs
twice: with the per-job mount namespace (private /tmp, /proc hidepid=2) and with
``--no-private-tmp``, where the uids alone must hold.

And the refusals: ``jobber serve`` not as root without ``--single-tenant``, ``--job-user``
without it, a server key others could read, a state directory tenants cannot reach.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobber._server.tenant_uids import default_uid_range
from serve_for_notebooks import Api, ServerProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a uid per tenant needs the server to run as root")

SECRET = f"server-secret-{os.getpid()}-{time.monotonic_ns()}"
A_SECRET = "tenant-a-environment-secret"
A_TMP_SECRET = "tenant-a-tmp-secret"
# Without a private /tmp, A's file lands in the host's /tmp: a name of this run's own (a file
# an earlier, interrupted run left there belongs to another uid: /tmp is sticky).
A_FILE = f"a-file-{os.getpid()}"
# A range of this module's own: the top 1,000 uids of the window a server finds by default,
# which lies outside every passwd uid and /etc/subuid entry of this host (a fixed range met
# the subordinate ranges of the host's `useradd` users).
LOW, HIGH = default_uid_range()[1] - 999, default_uid_range()[1]
PTRACE_ATTACH = ("import ctypes, sys\n"
                 "libc = ctypes.CDLL(None, use_errno=True)\n"
                 "r = libc.ptrace(16, int(sys.argv[1]), None, None)\n"  # PTRACE_ATTACH
                 "print('attached' if r == 0 else f'refused errno {ctypes.get_errno()}')\n")


def _fresh_dir(prefix: str, mode: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))  # outside /tmp: jobs have their own
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def state() -> Path:
    path = _fresh_dir("jobber-tenancy-state-", 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def key_dir(pki) -> Path:
    """The server's certificate and key as an operator keeps them: the key root's alone
    (0600), in a directory every user may walk (so only the key's mode protects it)."""
    path = _fresh_dir("jobber-tenancy-keys-", 0o755)
    shutil.copy(pki.server_cert, path / "server.pem")
    shutil.copy(pki.server_key, path / "server.key")
    os.chmod(path / "server.pem", 0o644)
    os.chmod(path / "server.key", 0o600)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Served:
    proc: ServerProcess
    jobs: Path
    private: bool


@pytest.fixture(scope="module", params=["private-tmp", "no-private-tmp"])
def served(request, pki, key_dir, state, tmp_path_factory) -> Served:
    jobs = tmp_path_factory.mktemp("tenancy") / "jobs"
    private = request.param == "private-tmp"
    proc = ServerProcess(key_dir / "server.pem", key_dir / "server.key", pki.root, jobs, state_dir=state,
                         uid_range=f"{LOW}-{HIGH}", private_tmp=private, env={"JOBBER_TEST_SECRET": SECRET}).start()
    yield Served(proc, jobs, private)
    proc.stop()
    assert "bug:" not in proc.log(), proc.log()
    if private:
        assert "do not let jobber give each job a mount namespace" not in proc.log()


@dataclass
class Tenant:
    api: Api
    hash: str


@pytest.fixture(scope="module")
def tenants(pki, served) -> tuple[Tenant, Tenant]:
    found = []
    for name in ("tenant-a", "tenant-b"):
        api = Api(served.proc.url, *pki.client(name), pki.server_ca)
        found.append(Tenant(api, api("GET", "/v1/identity").json()["hash"]))
    return found[0], found[1]


def run(tenant: Tenant, command: str, env: dict[str, str] | None = None) -> str:
    """Run ``command`` as one of the tenant's jobs to its end; its output."""
    reply = tenant.api("POST", "/v1/jobs", {"command": command, **({"env": env} if env else {})})
    assert reply.status == 201, reply.body
    job_id = reply.json()["id"]
    ended = tenant.api("GET", f"/v1/jobs/{job_id}?wait=60").json()
    assert ended["status"]["state"] in ("exited", "failed"), ended
    return tenant.api("GET", f"/v1/jobs/{job_id}/log").body.decode(errors="replace")


@dataclass
class Victim:
    job_id: int
    pid: int
    dir: Path


@pytest.fixture(scope="module")
def victim(tenants, served) -> Victim:
    """A's job: a secret in its environment, a file in its /tmp, then asleep."""
    a, _b = tenants
    reply = a.api("POST", "/v1/jobs", {
        "command": f"echo {A_TMP_SECRET} > /tmp/{A_FILE}; echo ready; exec sleep 600",
        "env": {"A_SECRET": A_SECRET}})
    assert reply.status == 201, reply.body
    job_id = reply.json()["id"]
    deadline = time.monotonic() + 30
    while a.api("GET", f"/v1/jobs/{job_id}/log").body != b"ready\n":
        assert time.monotonic() < deadline, a.api("GET", f"/v1/jobs/{job_id}").json()
        time.sleep(0.05)
    status = a.api("GET", f"/v1/jobs/{job_id}").json()["status"]
    assert status["state"] == "running", status
    yield Victim(job_id, status["pid"], served.jobs / a.hash / str(job_id))
    a.api("POST", f"/v1/jobs/{job_id}/stop", {"grace": 0})
    if not served.private:
        Path("/tmp", A_FILE).unlink(missing_ok=True)


def still_running(tenants, victim) -> bool:
    a, _b = tenants
    state = a.api("GET", f"/v1/jobs/{victim.job_id}").json()["status"]["state"]
    return state == "running" and os.path.exists(f"/proc/{victim.pid}")


class TestTenantBAgainstTenantA:
    def test_each_tenant_has_a_uid_of_its_own_and_no_other_group(self, tenants):
        a, b = tenants
        uid_a, groups_a = run(a, "id -u; id -G").split()
        uid_b, groups_b = run(b, "id -u; id -G").split()
        assert uid_a != uid_b
        assert all(LOW <= int(uid) <= HIGH for uid in (uid_a, uid_b))
        assert (groups_a, groups_b) == (uid_a, uid_b)  # gid = uid, no supplementary groups

    def test_b_cannot_read_the_environment_of_a_job_of_a(self, tenants, victim):
        _a, b = tenants
        out = run(b, f"cat /proc/{victim.pid}/environ; echo rc=$?; "
                     "tr '\\0' '\\n' < /proc/$$/environ | grep -c JOBBER_JOB_ID")
        assert A_SECRET not in out
        assert "rc=1" in out, out
        assert out.splitlines()[-1] == "1", out  # control: its own environment it can read

    def test_b_cannot_open_the_memory_of_a_job_of_a(self, tenants, victim):
        _a, b = tenants
        out = run(b, f"{{ true < /proc/{victim.pid}/mem; }} 2>/dev/null && echo opened || echo refused; "
                     "sleep 30 & sleep 0.2; true < /proc/$!/mem && echo own opened; kill $!")
        assert out.splitlines() == ["refused", "own opened"], out

    def test_b_cannot_ptrace_a_job_of_a(self, tenants, victim):
        _a, b = tenants
        attach = f"python3 -c {shlex.quote(PTRACE_ATTACH)}"
        out = run(b, f"{attach} {victim.pid}; sleep 30 & sleep 0.2; {attach} $!; kill -9 $!")
        assert out.splitlines() == ["refused errno 1", "attached"], out  # EPERM
        assert still_running(tenants, victim)

    @pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
    def test_b_cannot_strace_a_job_of_a(self, tenants, victim):
        _a, b = tenants
        out = run(b, f"strace -p {victim.pid} -e trace=none -o /dev/null; echo rc=$?")
        assert "Operation not permitted" in out and "rc=1" in out, out
        assert still_running(tenants, victim)

    def test_b_cannot_kill_a_job_of_a(self, tenants, victim):
        _a, b = tenants
        out = run(b, f"kill -9 {victim.pid}; echo rc=$?; sleep 30 & kill -9 $! && echo own killed")
        assert "rc=1" in out and "own killed" in out, out
        time.sleep(0.2)
        assert still_running(tenants, victim)

    def test_b_cannot_read_the_log_nor_rewrite_the_status_of_a_job_of_a(self, tenants, victim, served):
        _a, b = tenants
        status_before = (victim.dir / "status.json").read_bytes()
        out = run(b, f"cat {victim.dir}/log; echo rc=$?; echo pwned > {victim.dir}/status.json; echo rc=$?; "
                     f"ls {served.jobs}; echo rc=$?")
        assert "ready" not in out and "rc=0" not in out, out
        assert (victim.dir / "status.json").read_bytes() == status_before
        assert (victim.dir / "log").read_bytes() == b"ready\n"
        assert still_running(tenants, victim)

    def test_b_cannot_read_the_servers_key(self, tenants, key_dir):
        _a, b = tenants
        key = key_dir / "server.key"
        out = run(b, f"test -e {key} && echo the key is there; cat {key}; echo rc=$?")
        assert "the key is there" in out and "rc=1" in out, out  # reachable, yet unreadable
        assert "PRIVATE KEY" not in out

    def test_no_job_sees_the_servers_environment(self, tenants):
        _a, b = tenants
        out = run(b, "env; echo --; cat /proc/$PPID/environ; echo rc=$?", env={"MINE": "1"})
        env_text, _, parent = out.partition("--\n")
        env = dict(line.split("=", 1) for line in env_text.splitlines())
        assert SECRET not in out
        assert set(env) == {"PATH", "HOME", "USER", "LANG", "TMPDIR", "JOBBER_JOB_ID", "JOBBER_JOB_TAG", "PWD",
                            "MINE"}, env
        assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["LANG"] == "C.UTF-8"
        assert env["HOME"] == env["PWD"] and env["HOME"].endswith(f"/tenants/{env['USER']}/home"), env
        assert "rc=1" in parent  # nor through its supervisor (root's): the server's environment

    def test_b_does_not_see_what_a_left_in_tmp(self, tenants, victim, served):
        a, b = tenants
        out = run(b, f"ls -A /tmp; echo --; cat /tmp/{A_FILE}; echo rc=$?; echo $TMPDIR")
        assert A_TMP_SECRET not in out and "rc=1" in out, out
        if served.private:
            assert A_FILE not in out.split("--")[0], out  # not even its name
            assert out.splitlines()[-1] == "/tmp"
            # A's /tmp is A's own, and lasts from one of its jobs to the next.
            assert run(a, f"cat /tmp/{A_FILE}") == f"{A_TMP_SECRET}\n"
        else:
            assert out.splitlines()[-1].endswith("/tmp") and out.splitlines()[-1] != "/tmp"

    def test_umask_no_new_privileges_and_open_files(self, tenants):
        _a, b = tenants
        out = run(b, "grep -E '^(Umask|NoNewPrivs|Groups):' /proc/self/status; ulimit -n; ulimit -Hn")
        fields = dict(line.split(":\t") for line in out.splitlines()[:3])
        assert fields["Umask"] == "0077" and fields["NoNewPrivs"] == "1", fields
        assert out.splitlines()[3:] == ["1024", "4096"], out

    def test_b_sees_only_its_own_processes(self, tenants, victim, served):
        if not served.private:
            pytest.skip("without the mount namespace /proc lists every process (the uids still hold)")
        _a, b = tenants
        listed = run(b, "ls /proc").split()
        assert str(victim.pid) not in listed and str(served.proc.pid) not in listed and "1" not in listed

    def test_b_cannot_list_other_tenants_cgroups(self, tenants, victim, served):
        a, b = tenants
        record = json.loads((victim.dir / "confinement.json").read_text())
        if not record.get("dirs"):
            pytest.skip(f"isolation {record.get('isolation')}: no cgroup")
        owner_dir = Path(next(iter(record["dirs"].values()))).parent
        listing = run(b, f"ls {owner_dir.parent}; echo rc=$?")
        assert a.hash not in listing, listing  # no tenant's hash, no job ids
        if served.private:  # cgroupfs hidden but for B's job's own cgroup: the way to it alone
            assert [line.split(".")[0] for line in listing.splitlines()[:-1]] == [b.hash], listing
        else:
            assert "rc=2" in listing, listing
        assert "rc=2" in run(b, f"ls {owner_dir}; echo rc=$?")


    def test_b_cannot_list_other_pids_through_cgroupfs(self, tenants, victim, served):
        """hidepid=2 hides A's job from B's /proc; every cgroup.procs and tasks file is
        world-readable, and lists pids too (the hierarchies jobs are not moved into list
        every process of the host)."""
        if not served.private:
            pytest.skip("without the mount namespace cgroupfs is the host's, as /proc is (the uids still hold)")
        _a, b = tenants
        out = run(b, "echo $$; { cat /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/*/tasks /sys/fs/cgroup/cgroup.procs "
                     "$(find /sys/fs/cgroup -name cgroup.procs -o -name tasks); } 2>/dev/null | sort -un")
        own, *listed = out.split()
        for pid in (victim.pid, served.proc.pid, 1):
            assert str(pid) not in listed, out
        assert own in listed or not json.loads((victim.dir / "confinement.json").read_text()).get("dirs"), out


class TestLongCommands:
    def test_a_200_kb_command_runs_on_the_server(self, tenants):
        """It once met the kernel's 128 KiB per argument: 409 "Argument list too long",
        and the job stuck in created. (2 MB is over the server's 1 MiB request body.)"""
        a, _b = tenants
        filler = "a" * 200_000
        assert run(a, f"x='{filler}'; echo ${{#x}}") == "200000\n"


class TestUidsAreKept:
    def test_across_a_restart_and_recorded_once(self, pki, key_dir, tmp_path):
        state = _fresh_dir("jobber-tenancy-restart-", 0o711)
        try:
            jobs = tmp_path / "jobs"
            ids = {name: pki.client(name) for name in ("alice", "bob", "carol")}

            def uid_of(proc: ServerProcess, name: str) -> int:
                api = Api(proc.url, *ids[name], pki.server_ca)
                return int(run(Tenant(api, ""), "id -u"))

            with ServerProcess(key_dir / "server.pem", key_dir / "server.key", pki.root, jobs, state_dir=state,
                               uid_range=f"{LOW}-{HIGH}") as first:
                before = {name: uid_of(first, name) for name in ("alice", "bob")}
            with ServerProcess(key_dir / "server.pem", key_dir / "server.key", pki.root, jobs, state_dir=state,
                               uid_range=f"{LOW}-{HIGH}") as second:
                after = {name: uid_of(second, name) for name in ("bob", "alice", "carol")}
            assert after["alice"] == before["alice"] and after["bob"] == before["bob"]
            assert len(set(after.values())) == 3
            registry = state / "tenants.json"
            assert stat.S_IMODE(registry.stat().st_mode) == 0o600
            assert sorted(json.loads(registry.read_text())["uids"].values()) == sorted(after.values())
            for uid in after.values():
                base = state / "tenants" / str(uid)
                st = base.stat()
                assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o711)  # the tenant cannot swap its dirs
                for name in ("home", "tmp"):
                    st = (base / name).stat()
                    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, uid, 0o700)
        finally:
            shutil.rmtree(state, ignore_errors=True)


def serve_argv(cert: Path, key: Path, root: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "jobber", "serve", "--port", "0", "--cert", str(cert), "--key", str(key),
            "--root", str(root), *more]


def refusal(argv: list[str], **kwargs) -> str:
    """Run ``jobber serve`` that must refuse at once: its stderr."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, **kwargs)
    assert result.returncode == 1, result
    assert "listening" not in result.stderr
    return result.stderr


class TestRefusals:
    def test_not_root_without_single_tenant(self, pki, tmp_path):
        """As nobody (the system Python with this checkout and the venv's packages)."""
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is not installed")
        import sysconfig

        site = sysconfig.get_paths()["purelib"]
        repo = Path(__file__).resolve().parent.parent
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--reset-env",
                "env", f"PYTHONPATH={repo}:{site}", "PYTHONDONTWRITEBYTECODE=1", "HOME=/",
                "/usr/bin/python3", *serve_argv(pki.server_cert, pki.server_key, pki.root)[1:]]
        stderr = refusal(argv, cwd="/")
        assert "not root" in stderr and "--single-tenant" in stderr and "Run it as root" in stderr, stderr

    def test_job_user_without_single_tenant(self, pki):
        stderr = refusal(serve_argv(pki.server_cert, pki.server_key, pki.root, "--job-user", "nobody"))
        assert "--job-user nobody would run every tenant's jobs as that one user" in stderr
        assert "--single-tenant" in stderr

    def test_a_server_key_others_can_read(self, pki, key_dir, state):
        readable = key_dir / "readable.key"
        shutil.copy(key_dir / "server.key", readable)
        os.chmod(readable, 0o644)
        try:
            stderr = refusal(serve_argv(key_dir / "server.pem", readable, pki.root, "--state-dir", str(state)))
        finally:
            readable.unlink()
        assert f"chmod 600 {readable}" in stderr, stderr

    def test_a_state_dir_the_tenants_cannot_reach(self, pki, tmp_path):
        hidden = tmp_path / "hidden"
        hidden.mkdir(mode=0o700)
        stderr = refusal(serve_argv(pki.server_cert, pki.server_key, pki.root, "--state-dir",
                                    str(hidden / "state"), "--no-private-tmp"))
        assert "could not reach their homes" in stderr and "chmod o+x" in stderr, stderr

    def test_a_state_dir_under_tmp(self, pki):
        stderr = refusal(serve_argv(pki.server_cert, pki.server_key, pki.root, "--state-dir", "/tmp/jobber-state"))
        assert "under /tmp" in stderr, stderr

    def test_a_uid_range_holding_root(self, pki):
        stderr = refusal(serve_argv(pki.server_cert, pki.server_key, pki.root, "--uid-range", "0-100"))
        assert "--uid-range 0-100" in stderr, stderr


def test_a_uid_range_overlapping_subordinate_ids_is_named(tmp_path):
    """Rootless containers of a user with /etc/subuid entries run as those ids."""
    from jobber._server.tenancy import _subordinate_overlap

    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\n")
    assert _subordinate_overlap(200000, 265535, (str(subuid),)) == f"{subuid}'s bob:165536:65536 (165536-231071)"
    assert _subordinate_overlap(300000, 365535, (str(subuid),)) is None
