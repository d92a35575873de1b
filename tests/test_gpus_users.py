"""GPUs are the host's, not a user's: two Unix users (made here with ``useradd``, removed
after), each with a jobs directory of their own, share two fake GPUs (``mknod``, as
``tests/test_gpus.py`` makes them). Their jobs run as the users themselves, through the
public API, in a Python started with ``runuser``.

Exclusivity is witnessed by the jobs themselves: a job takes a ``flock`` on a witness file
per GPU it was given (``CUDA_VISIBLE_DEVICES``) for as long as it runs, and records a
conflict when another job holds one: two jobs given one GPU at once cannot both hold it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from jobber._backends.local import gpu_claims, gpus
from polling import wait_for

# The users need a Python they may run: this one may live under root's 0700 home (pyenv);
# the system's, of the same major.minor, with this checkout and its site-packages, will do.
PYTHON = next((p for p in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
               if os.access(p, os.X_OK) and all(os.stat(d).st_mode & 0o001 for d in Path(p).resolve().parents)), None)
PYTHONPATH = ":".join([str(Path(__file__).resolve().parents[1]), *(p for p in sys.path if p.endswith("site-packages"))])

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"),
                       reason="needs root, useradd and runuser (to make two users and fake GPU nodes)"),
    pytest.mark.skipif(PYTHON is None, reason=f"no Python {sys.version_info.major}.{sys.version_info.minor} that "
                                              "other users may run (this one is under a private directory)"),
]

# Run as a user: start one job per (gpus, seconds, marker) in argv's JSON, print their ids.
SUBMIT = textwrap.dedent("""\
    import hashlib, json, sys
    from jobber import Limits
    from jobber._jobs.store import JobStore
    store = JobStore(hashlib.sha256(b"gpu user").hexdigest())
    ids = []
    for command, count in json.loads(sys.argv[1]):
        job = store.new_job(command, Limits(gpus=count))
        job.start()
        ids.append(job.id)
    if sys.argv[2] == "wait":
        for job_id in ids:
            store.get_job(job_id).wait(300)
    print(json.dumps({i: store.get_job(i).status().state for i in ids}))
""")

# The job: flock each given GPU's witness, note a conflict, hold it a while.
WITNESS = textwrap.dedent("""\
    import fcntl, os, sys, time
    held = []
    for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(","):
        fd = os.open(f"{sys.argv[1]}/gpu{gpu}", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(f"{sys.argv[1]}/conflicts", "a") as f:
                f.write(f"GPU {gpu} given to two jobs at once\\n")
        held.append(fd)
    time.sleep(float(sys.argv[2]))
    with open(f"{sys.argv[1]}/done", "a") as f:
        f.write(os.environ["CUDA_VISIBLE_DEVICES"] + "\\n")
""")


class User:
    def __init__(self, name: str, shared: Path) -> None:
        self.name = name
        self.jobs_dir = Path(f"/home/{name}/jobs")
        self.shared = shared

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": f"/home/{self.name}", "JOBBER_JOBS_DIR": str(self.jobs_dir),
                "JOBBER_GPUS": os.environ["JOBBER_GPUS"], "JOBBER_ISOLATION": "none", "LANG": "C.UTF-8",
                "PYTHONPATH": PYTHONPATH}

    def submit(self, jobs: list[tuple[str, int]], wait: bool, **env: str) -> subprocess.Popen:
        return subprocess.Popen(["runuser", "-u", self.name, "--", PYTHON, "-c", SUBMIT, json.dumps(jobs),
                                 "wait" if wait else "start"], env={**self.env(), **env}, cwd=self.shared,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def notes(self) -> list[str]:
        return [f"{s.get('note')}: {log.read_text()[-300:]}" for s, log in
                zip(self.statuses(), sorted(self.jobs_dir.glob("*/*/log")))]

    def statuses(self) -> list[dict]:
        found = []
        for status in self.jobs_dir.glob("*/*/status.json"):
            try:
                found.append(json.loads(status.read_text()))
            except (OSError, ValueError):
                continue
        return found


def witness(shared: Path, seconds: float, gate: Path | None = None) -> str:
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done; " if gate else ""
    return f"{wait}{PYTHON} -c '{WITNESS}' {shared} {seconds}"


@pytest.fixture
def shared():
    """A directory both users reach: the fake GPUs and the witness files."""
    path = Path(f"/tmp/jobber-gpu-users-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    for minor in (0, 1):
        os.mknod(path / f"nvidia{minor}", stat.S_IFCHR | 0o666, os.makedev(gpus.NVIDIA_MAJOR, minor))
    for name in ("gpu0", "gpu1", "conflicts", "done", "u2-ran"):
        (path / name).touch()
        os.chmod(path / name, 0o666)  # both users' jobs write them
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def users(shared, monkeypatch):
    """Two users, u1 and u2; at the end, their processes are killed and they are removed."""
    monkeypatch.setenv("JOBBER_GPUS", f"{shared}/nvidia0,{shared}/nvidia1")
    tag = uuid.uuid4().hex[:6]
    made = []
    try:
        for n in (1, 2):
            name = f"jg{tag}u{n}"
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
            made.append(User(name, shared))
        yield made
    finally:
        for user in made:
            subprocess.run(["pkill", "-KILL", "-u", user.name], capture_output=True)  # only this test's users
            wait_for(lambda u=user: subprocess.run(["pgrep", "-u", u.name], capture_output=True).returncode != 0,
                     30, f"{user.name}'s processes to end")
            subprocess.run(["userdel", "-r", user.name], capture_output=True)
    wait_for(lambda: not gpu_claims.in_use(gpus.discover()), 30, "every GPU claim to be given back")


def test_no_gpu_is_ever_given_to_two_jobs_at_once(users, shared):
    rng = random.Random(os.environ.get("JOBBER_TEST_SEED", "23"))
    plans = [[(witness(shared, rng.uniform(0, 0.3)), rng.choice((1, 1, 2))) for _ in range(25)] for _ in users]
    runs = [user.submit(plan, wait=True) for user, plan in zip(users, plans)]
    for user, run in zip(users, runs):
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert set(json.loads(out).values()) == {"exited"}, (out, user.notes())
    assert (shared / "conflicts").read_text() == ""
    assert len((shared / "done").read_text().splitlines()) == 50


def test_a_waiting_job_of_u2_starts_when_u1s_job_ends_with_nobody_looking(users, shared):
    u1, u2 = users
    gate = shared / "gate"
    first = u1.submit([(witness(shared, 0, gate), 2)], wait=False)
    assert first.wait(60) == 0, first.stderr.read()
    wait_for(lambda: gpu_claims.in_use(gpus.discover()) == {0, 1}, 60, "u1's job to hold both GPUs")
    second = u2.submit([(witness(shared, 0), 1)], wait=False)
    assert second.wait(60) == 0, second.stderr.read()
    assert [s.get("note") for s in u2.statuses()] == ["waiting for 1 GPU: 2 of 2 in use on this host"]
    gate.touch()  # u1's job ends; nobody of u2 looks at its job: its waiter admits it
    wait_for(lambda: [s["state"] for s in u2.statuses()] == ["exited"], 60, "u2's job to run once u1's ended")
    assert (shared / "conflicts").read_text() == ""


def test_the_claim_of_a_supervisor_killed_with_kill_9_is_released(users, shared):
    u1, u2 = users
    gate = shared / "gate"
    first = u1.submit([(witness(shared, 0, gate), 2)], wait=False)
    assert first.wait(60) == 0, first.stderr.read()
    wait_for(lambda: [s.get("state") for s in u1.statuses()] == ["running"], 60, "u1's job to run")
    status = u1.statuses()[0]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not gpu_claims.in_use(gpus.discover()), 30, "the dead supervisor's GPUs to be given back")
    second = u2.submit([(f"echo $CUDA_VISIBLE_DEVICES > {shared}/u2-ran", 2)], wait=False)
    assert second.wait(60) == 0, second.stderr.read()
    wait_for(lambda: (shared / "u2-ran").read_text() == "0,1\n", 60, "u2's job to be given both GPUs")


# Opens each node read-write and prints what it got (ENXIO: the open reached the missing
# driver; EACCES: the node is covered).
OPENER = "import errno, os, sys\nfor p in sys.argv[1:]:\n    try:\n        os.close(os.open(p, os.O_RDWR))\n" \
         "        print(p, 'opened')\n    except OSError as e:\n        print(p, errno.errorcode[e.errno])"


@pytest.mark.parametrize("launcher", ["compiled", "python"])
def test_a_job_without_gpus_cannot_open_a_gpu_another_users_job_holds(users, shared, launcher):
    """No cgroup for an ordinary user here (isolation none): the job's GPU nodes are covered
    in a user and mount namespace of its own (device_cover)."""
    u1, u2 = users
    for node in ("nvidia0", "nvidia1"):
        os.chmod(shared / node, 0o666)  # as a GPU's node is (mknod's mode went through the umask)
    gate = shared / "gate"
    holder = u1.submit([(witness(shared, 0, gate), 2)], wait=False, JOBBER_LAUNCHER=launcher)
    assert holder.wait(60) == 0, holder.stderr.read()
    wait_for(lambda: gpu_claims.in_use(gpus.discover()) == {0, 1}, 60, "u1's job to hold both GPUs")
    nodes = f"{shared}/nvidia0 {shared}/nvidia1"
    for fence, got in (("off", "ENXIO"), ("on", "EACCES")):
        run = u2.submit([(f"{PYTHON} -c \"{OPENER}\" {nodes}", None)], wait=True, JOBBER_LAUNCHER=launcher,
                        JOBBER_GPU_FENCE=fence)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        [job_id] = json.loads(out)
        record = json.loads(next(u2.jobs_dir.glob(f"*/{job_id}/confinement.json")).read_text())
        assert record.get("gpus", {}).get("fenced_by") == ("mount namespace" if fence == "on" else None), record
        log = next(u2.jobs_dir.glob(f"*/{job_id}/log")).read_text()
        assert log == f"{shared}/nvidia0 {got}\n{shared}/nvidia1 {got}\n", (fence, log, u2.notes())
    gate.touch()
    wait_for(lambda: not gpu_claims.in_use(gpus.discover()), 60, "u1's job to end")
