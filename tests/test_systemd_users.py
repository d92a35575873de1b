"""Two people on one systemd host: each one's jobs confined by its own delegated cgroup, and
out of the other's sight and reach.

Runs for real in the systemd VM (``make test-systemd-user``: pure cgroup v2, systemd as PID
1), as root, for two ordinary users the VM made (``--extra-user``), each with a lingering
user manager: the test acts as each of them with ``runuser``, as their own Jupyter kernels
would, with the default jobs directory (``~/.local/state/jobber/jobs``). Each user's part
runs in one Python process (the VM emulates its CPU: every interpreter start costs seconds).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from polling import wait_for

USERS = os.environ.get("JOBBER_TEST_USERS", "").split()
pytestmark = pytest.mark.skipif(
    len(USERS) != 2 or os.geteuid() != 0,
    reason="needs root and two users with lingering user managers (make test-systemd-user runs this in the "
           "systemd VM with --extra-user)")

# A user's own part: a demo identity, a job that runs on (its log holds a secret) and one
# that outgrows its memory limit, at the same time as the other user's.
_START = r"""
import json, os, sys
from jobber import Certificate, Limits
from jobber._certificates.demo import init_demo
from jobber._jobs.store import jobs_dir
memory = sys.argv[1]
paths = init_demo(os.path.expanduser("~/pki"))
cert = Certificate.from_file(paths["client"], root=paths["root"])
running = cert.new_job(f"echo secret-$(id -un); exec sleep 600", Limits(memory=memory, pids=20))
running.start()
hog = cert.new_job("tail /dev/zero", Limits(memory=memory))
hog.start()
status = running.status()
record = json.loads((running.path / "confinement.json").read_bytes())
print(json.dumps({"jobs_dir": str(jobs_dir()), "cert": str(paths["client"]), "pool": str(paths["pool_ca"]),
                  "root": str(paths["root"]),
                  "hash": cert.hash(), "running": running.id, "pid": status.pid, "isolation": status.isolation,
                  "note": status.isolation_note, "cgroup": record["dirs"]["unified"], "log": str(running.path / "log"),
                  "hog": hog.wait(300).state}))
"""

# What a user can do to the other's jobs: with the other's certificate (a public file) and
# the other's jobs directory named, every verb is refused; with its own default directory,
# nothing of the other's is there; the other's processes, cgroup and log are out of reach.
_PROBE = r"""
import contextlib, io, json, os, signal, sys
from jobber.cli import main
other = json.loads(sys.argv[1])
os.environ.update(JOBBER_CERT=sys.argv[2], JOBBER_ROOT=sys.argv[3])
def cli(*argv, jobs_dir=None):
    if jobs_dir:
        os.environ["JOBBER_JOBS_DIR"] = jobs_dir
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:
            rc = exc.code
    os.environ.pop("JOBBER_JOBS_DIR", None)
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}
def attempt(fn):
    try:
        fn()
    except OSError as err:
        return type(err).__name__
    return "done"
def kill_cgroup():
    with open(os.path.join(other["cgroup"], "cgroup.kill"), "w") as file:
        file.write("1")
job = str(other["running"])
print(json.dumps({
    "ls_there": cli("ls", jobs_dir=other["jobs_dir"]), "status_there": cli("status", job, jobs_dir=other["jobs_dir"]),
    "logs_there": cli("logs", job, jobs_dir=other["jobs_dir"]), "stop_there": cli("stop", job, jobs_dir=other["jobs_dir"]),
    "ls_here": cli("ls"), "status_here": cli("status", job),
    "listdir": attempt(lambda: os.listdir(other["jobs_dir"])), "read_log": attempt(lambda: open(other["log"]).read()),
    "signal": attempt(lambda: os.kill(other["pid"], signal.SIGTERM)), "cgroup_kill": attempt(kill_cgroup),
}))
"""

_STOP = r"""
import sys
from jobber import Certificate
cert = Certificate.from_file(sys.argv[1], root=sys.argv[2])
print(cert.get_job(int(sys.argv[3])).stop(grace=1).state)
"""


def _as(user: str, code: str, *args: str, env: list[str] | tuple[()] = ()) -> subprocess.Popen:
    """Python ``code`` run as ``user``, in its own session's environment (as its kernel would be)."""
    entry = pwd.getpwnam(user)
    rundir = f"/run/user/{entry.pw_uid}"
    env = [*env, f"HOME={entry.pw_dir}", f"USER={user}", f"LOGNAME={user}", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1",
           f"XDG_RUNTIME_DIR={rundir}", f"DBUS_SESSION_BUS_ADDRESS=unix:path={rundir}/bus",
           f"PATH={Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"]
    return subprocess.Popen(["runuser", "-u", user, "--", "env", "-i", *env, sys.executable, "-c", code, *args],
                            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _answers(*procs: subprocess.Popen) -> list[dict]:
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        answers.append(json.loads(out.splitlines()[-1]))
    return answers


@pytest.fixture
def shared_dir():
    """A directory both users can read (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="jobber-users-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_two_users_run_confined_jobs_at_once_and_never_reach_each_others(shared_dir):
    a, b = USERS
    limits = {a: "48M", b: "80M"}  # each user's own limits, told apart in the cgroups
    started = dict(zip(USERS, _answers(*(_as(user, _START, limits[user]) for user in USERS))))
    for user, mine in started.items():
        home = pwd.getpwnam(user).pw_dir
        assert mine["jobs_dir"] == f"{home}/.local/state/jobber/jobs", mine
        assert mine["isolation"] == "cgroup-v2" and "delegated by systemd" in mine["note"], mine
        uid = pwd.getpwnam(user).pw_uid
        assert f"/user.slice/user-{uid}.slice/user@{uid}.service/" in mine["cgroup"], mine
        assert Path(mine["cgroup"], "memory.max").read_text().strip() == str(int(limits[user][:-1]) << 20)
        assert mine["hog"] == "oom-killed", mine  # its memory limit held
        assert os.path.exists(f"/proc/{mine['pid']}")  # both run at the same time
        wait_for(lambda m=mine, u=user: f"secret-{u}" in Path(m["log"]).read_text(), 60, f"{user}'s output")

    probes = []
    for me, other in ((a, b), (b, a)):
        # The other's certificate and pool, copied where I can read them (they are public).
        copy = shared_dir / f"{me}-has-{other}"
        (copy / "pool").mkdir(parents=True)
        shutil.copy(started[other]["cert"], copy / "client.pem")
        shutil.copy(started[other]["pool"], copy / "pool" / "ca.pem")
        for path in (copy, copy / "pool"):
            os.chmod(path, 0o755)
        probes.append(_as(me, _PROBE, json.dumps(started[other]), str(copy / "client.pem"), str(copy)))
    for (me, other), probe in zip(((a, b), (b, a)), _answers(*probes)):
        for verb in ("ls_there", "status_there", "logs_there", "stop_there"):
            answer = probe[verb]
            assert answer["rc"] != 0 and "ermission denied" in answer["err"], (me, verb, answer)
            assert f"secret-{other}" not in answer["out"]
        assert "secret" not in probe["ls_here"]["out"]  # my own directory holds nothing of the other's
        assert probe["status_here"]["rc"] != 0, probe["status_here"]
        assert probe["listdir"] == probe["read_log"] == probe["signal"] == probe["cgroup_kill"] == "PermissionError", probe
        assert os.path.exists(f"/proc/{started[other]['pid']}"), f"{me} reached {other}'s job"

    stops = [_as(user, _STOP, started[user]["cert"], started[user]["root"], str(started[user]["running"]))
             for user in USERS]
    for proc in stops:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "stopped", err
    for mine in started.values():
        assert not os.path.exists(mine["cgroup"])


# As one of the users: jobs with and without a GPU, under each launcher, each opening both
# fake nodes and then trying to take the fence down (umount, also from a namespace of its own).
_GPU_JOBS = r"""
import json, os, sys
from jobber import Limits
from jobber._jobs.store import JobStore
probe, nodes = sys.argv[1], sys.argv[2:]
store = JobStore("ab" * 32)
answers = {}
for launcher in ("compiled", "python"):
    os.environ["JOBBER_LAUNCHER"] = launcher
    for gpus in (None, 1):
        job = store.new_job(f"{sys.executable} {probe} {' '.join(nodes)}", Limits(gpus=gpus))
        job.start()
        status = job.wait(300)
        record = json.loads((job.path / "confinement.json").read_bytes())
        answers[f"{launcher}-{gpus}"] = {"state": status.state, "log": (job.path / "log").read_text(),
                                         "gpus": record.get("gpus"), "note": status.isolation_note}
print(json.dumps(answers))
"""

_OPEN_AND_UNDO = r"""
import ctypes, errno, os, stat, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
for path in sys.argv[1:]:
    print(path, "is a", "device" if stat.S_ISCHR(os.stat(path).st_mode) else "file")
    try:
        os.close(os.open(path, os.O_RDWR))
        print(path, "opened")
    except OSError as err:
        print(path, errno.errorcode[err.errno])
    print(path, "umount", "done" if libc.umount2(path.encode(), 2) == 0 else errno.errorcode[ctypes.get_errno()])
nested = ("import ctypes, errno, sys; libc = ctypes.CDLL(None, use_errno=True); "
          "print('nested', 'done' if libc.umount2(sys.argv[1].encode(), 2) == 0 else errno.errorcode[ctypes.get_errno()])")
print(subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", nested, sys.argv[1]],
                     capture_output=True, text=True).stdout.strip() or "nested unshare refused")
"""


def test_a_job_without_gpus_cannot_open_a_gpu_node_under_delegation(shared_dir):
    """cgroup v2 under systemd delegation: no BPF device program for an ordinary user, so
    the nodes are covered in a user and mount namespace of the job's own."""
    nodes = []
    for minor in (0, 1):
        path = shared_dir / f"nvidia{minor}"
        os.mknod(path, stat.S_IFCHR, os.makedev(195, minor))  # fake NVIDIA GPUs: no driver
        os.chmod(path, 0o666)  # as a GPU's node is (mknod's mode goes through the umask)
        nodes.append(str(path))
    (shared_dir / "probe.py").write_text(_OPEN_AND_UNDO)
    (answers,) = _answers(_as(USERS[0], _GPU_JOBS, str(shared_dir / "probe.py"), *nodes,
                              env=[f"JOBBER_GPUS={','.join(nodes)}"]))
    for launcher in ("compiled", "python"):
        for gpus, reachable in ((None, set()), (1, {nodes[0]})):
            answer = answers[f"{launcher}-{gpus}"]
            assert answer["state"] == "exited", answer
            assert answer["gpus"]["fenced_by"] == "mount namespace", answer
            assert "GPUs not fenced" not in answer["note"], answer
            for node in nodes:
                # ENXIO: the open reached the (missing) driver; EACCES: the cover file.
                seen = ("device", "ENXIO") if node in reachable else ("file", "EACCES")
                assert f"{node} is a {seen[0]}\n{node} {seen[1]}\n" in answer["log"], answer
            fenced = next(node for node in nodes if node not in reachable)
            assert f"{fenced} umount EPERM" in answer["log"], answer
            assert "nested done" not in answer["log"], answer
