"""The warm launcher (``jobber/_backends/local/warm.py``): function jobs forked from a loaded Python.

Real jobs in real cgroups, this test process's own real warm launcher (started from its
second function job, on a socket pair). Whether a job ran warm is told by the job itself:
its supervisor (its parent) is a fork of the warm launcher, whose command line names
``warm_boot.py``. Where it matters a job is run both ways (``JOBBER_WARM=0``
is the cold path) and the two must agree.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

import jobber._backends.local.backend as local_backend
from jobber import JobError, Limits
from jobber._backends.local import warm
from jobber._backends.local.isolation import choose
from polling import poll, wait_for

# The job's functions travel by value: a job must not import this module (and with it
# pytest and jobber) to call them, so that what a job has loaded is the runner's doing.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BACKEND, UNCONFINED_REASON = choose()
pytestmark = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")
WAIT_S = 120.0  # a deadline, never a measure
MiB = 1 << 20


# --- what the jobs run (each imports what it needs: it runs in the job's own process) ---

def parent_cmdline() -> str:
    import os

    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        return f.read().decode(errors="replace").replace("\0", " ")


def ran_warm() -> bool:
    return "warm_boot.py" in parent_cmdline()


def facts() -> dict:
    """What a job sees of itself, read before it imports anything."""
    import sys

    preloaded = sorted(m for m in sys.modules if m == "jobber" or m.startswith("jobber."))
    import os

    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    umask = os.umask(0)
    os.umask(umask)
    import jobber

    with open("/proc/self/cgroup") as f:
        cgroups = f.read()
    return {"preloaded": preloaded, "fds": fds, "umask": umask, "cwd": os.getcwd(), "argv0": sys.argv[0],
            "main_file": getattr(sys.modules["__main__"], "__file__", None), "limits": jobber.Limits.__name__,
            "env": dict(os.environ), "path": list(sys.path), "cgroups": cgroups, "warm": ran_warm()}


def pools() -> tuple[list[int], list[int], bool]:
    import concurrent.futures
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        pooled = pool.map(abs, [-1, -2, -3])
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as ex:
        executed = list(ex.map(abs, [-4, -5]))
    return pooled, executed, ran_warm()


def a_random() -> tuple[float, bool]:
    import random

    return random.random(), ran_warm()


def talk_then_wait(path: str) -> tuple[str, bool]:
    import os
    import time

    print("started warm" if ran_warm() else "started cold")  # -u: no flush needed
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done", ran_warm()


def wait_for_file(path: str, note: str | None = None) -> str:
    import os
    import time

    if note:
        with open(note, "w") as f:
            f.write(str(ran_warm()))
    while not os.path.exists(path):
        time.sleep(0.02)
    return "opened"


def hold_memory(mib: int, note: str) -> int:
    with open(note, "a") as f:
        f.write(f"{ran_warm()}\n")
    block = bytearray(mib * MiB)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block) // MiB


def spawn_child_and_wait(note: str) -> None:
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "300"])
    with open(note + ".tmp", "w") as f:
        f.write(json.dumps({"child": child.pid, "warm": ran_warm()}))
    os.rename(note + ".tmp", note)
    time.sleep(300)


def square(x: int) -> int:
    return x * x


# --- helpers on the test's side ---

def launcher_pids() -> list[int]:
    """This process's warm launcher, while it runs: [pid], else []."""
    return [warm.pid] if warm.pid is not None and warm._control is not None and not gone(warm.pid) else []


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop_launcher() -> None:
    """Let this process's warm launcher go (it exits on its socket pair's EOF)."""
    running = launcher_pids()
    warm.stop()
    wait_for(lambda: all(gone(pid) for pid in running), WAIT_S, "the warm launcher to end")


def warm_up(store) -> None:
    """Run jobs until one runs warm (this process's second function job starts its launcher)."""
    assert poll(lambda: run(store, ran_warm), WAIT_S, every=0), "no job ran warm"


def run(store, fn, *args, **options):
    with store.executor(**options) as ex:
        return ex.submit(fn, *args).result(WAIT_S)


@pytest.fixture(params=["warm", "cold"])
def mode(request, monkeypatch) -> str:
    """Run the test warm, then cold (``JOBBER_WARM=0``): the two must agree."""
    if request.param == "cold":
        monkeypatch.setenv("JOBBER_WARM", "0")
    else:
        monkeypatch.delenv("JOBBER_WARM", raising=False)
        monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    return request.param


# --- 1. which jobs go warm ---

def test_a_function_job_starts_warm_and_cold_when_told(store, monkeypatch):
    monkeypatch.delenv("JOBBER_WARM", raising=False)
    warm_up(store)
    assert "warm_boot.py" in run(store, parent_cmdline)
    assert launcher_pids(), "this process has a warm launcher"
    monkeypatch.setenv("JOBBER_WARM", "0")
    cold = run(store, parent_cmdline)
    assert "warm_boot.py" not in cold and "supervisor" in cold
    monkeypatch.setenv("JOBBER_WARM", "1")
    monkeypatch.setenv("JOBBER_LAUNCHER", "python")
    assert "warm_boot.py" not in run(store, parent_cmdline)


def test_a_command_job_never_starts_warm(store):
    run(store, square, 2)  # a warm launcher runs
    job = store.new_job("tr '\\0' ' ' < /proc/$PPID/cmdline")
    job.start()
    assert job.wait(WAIT_S).state == "exited"
    said = job.log_path.read_text()
    assert "supervisor" in said and "warm_boot.py" not in said


# --- 2. a warm job is what a cold one would be ---

def test_the_job_sees_the_callers_environment_of_now(store, mode, monkeypatch):
    if mode == "warm":
        stop_launcher()
    monkeypatch.setenv("JOBBER_TEST_GONE", "was set when the launcher started")
    monkeypatch.delenv("JOBBER_TEST_LATE", raising=False)
    if mode == "warm":
        warm_up(store)  # a launcher started with GONE set
    monkeypatch.delenv("JOBBER_TEST_GONE")
    monkeypatch.setenv("JOBBER_TEST_LATE", "set after")
    seen = run(store, facts, env={"JOBBER_TEST_OPTION": "given"})
    assert seen["warm"] is (mode == "warm")
    assert seen["env"].get("JOBBER_TEST_LATE") == "set after" and "JOBBER_TEST_GONE" not in seen["env"]
    assert seen["env"].get("JOBBER_TEST_OPTION") == "given"


def test_the_job_looks_like_a_new_interpreter(store, mode, monkeypatch, tmp_path):
    old = os.umask(0o027)
    try:
        monkeypatch.chdir(tmp_path)
        seen = run(store, facts)
    finally:
        os.umask(old)
    assert seen["warm"] is (mode == "warm")
    assert seen["umask"] == 0o027
    assert seen["cwd"] == str(tmp_path)
    assert seen["argv0"] == warm.RUNNER and seen["main_file"] == warm.RUNNER
    assert seen["preloaded"] == [], "no jobber module loaded before the function imports one"
    assert seen["limits"] == "Limits"
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) == 4, f"only 0-2 (and listdir's): {seen['fds']}"


def test_the_cwd_option(store, mode, tmp_path):
    seen = run(store, facts, cwd=str(tmp_path))
    assert seen["warm"] is (mode == "warm") and seen["cwd"] == str(tmp_path)


def test_the_jobs_own_cgroup(store, mode):
    with store.executor() as ex:
        fut = ex.submit(facts)
        seen = fut.result(WAIT_S)
    record = json.loads((fut.job.path / "confinement.json").read_text())
    dirs = list(record["dirs"].values())
    paths = [line.split(":", 2)[2] for line in seen["cgroups"].splitlines() if line.split(":", 2)[2] != "/"]
    assert seen["warm"] is (mode == "warm") and dirs
    for d in dirs:
        assert str(fut.job.id) in d and any(d.endswith(p) for p in paths), (d, seen["cgroups"])


def test_the_pythonpath_of_the_jobs_environment_is_honoured(store, mode, tmp_path):
    """A job's interpreter reads PYTHONPATH (PYTHONHASHSEED, ...) as it starts; a warm one
    must honour them as the cold one does."""
    seen = run(store, facts, env={"PYTHONPATH": str(tmp_path)})
    assert seen["warm"] is (mode == "warm")
    assert str(tmp_path) in seen["path"]


def test_process_pools_work_in_the_job(store, mode):
    pooled, executed, was_warm = run(store, pools)
    assert (pooled, executed, was_warm) == ([1, 2, 3], [4, 5], mode == "warm")


def test_two_warm_jobs_draw_different_randoms(store):
    with store.executor() as ex:
        (first, warm1), (second, warm2) = ex.submit(a_random).result(WAIT_S), ex.submit(a_random).result(WAIT_S)
    assert warm1 and warm2 and first != second


def test_prints_reach_the_log_while_the_warm_job_runs(store, tmp_path):
    go = tmp_path / "go"
    with store.executor() as ex:
        fut = ex.submit(talk_then_wait, str(go))
        wait_for(lambda: fut.job.log_path.exists() and b"started" in fut.job.log_path.read_bytes(), WAIT_S,
                 "the print while the job runs")
        assert not fut.done() and b"started warm" in fut.job.log_path.read_bytes()
        go.touch()
        assert fut.result(WAIT_S) == ("done", True)


# --- 3. limits hold warm ---

def test_an_oom_kill_warm(store, tmp_path):
    note = tmp_path / "note"
    with store.executor(Limits(memory="100M")) as ex:
        fut = ex.submit(hold_memory, 400, str(note))
        with pytest.raises(JobError, match="OOM-killed"):
            fut.result(WAIT_S)
    assert note.read_text() == "True\n"


def test_an_oom_killed_warm_job_returns_on_the_attempt_that_fits(store, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")
    note = tmp_path / "note"
    with store.executor(Limits(memory="150M"), retries=2, oom_growth=3) as ex:
        fut = ex.submit(hold_memory, 300, str(note))
        assert fut.result(WAIT_S) == 300
    assert [a.state for a in fut.job.attempts] == ["oom-killed", "exited"]
    # The next attempt is launched by the retry's own process (run_next_attempt.py), a
    # one-off starter: it starts it cold, as a process's first function job is.
    assert note.read_text().split() == ["True", "False"]


def test_a_warm_job_times_out(store, tmp_path):
    note = tmp_path / "note"
    with store.executor(timeout=1) as ex:
        fut = ex.submit(wait_for_file, str(tmp_path / "never"), str(note))
        with pytest.raises(JobError, match="timed out"):
            fut.result(WAIT_S)
    assert fut.job.status().state == "timed-out" and note.read_text() == "True"


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stopping_a_warm_job_ends_its_whole_tree(store, tmp_path, how):
    note = tmp_path / "note"
    with store.executor() as ex:
        fut = ex.submit(spawn_child_and_wait, str(note))
        wait_for(note.exists, WAIT_S, "the job's child to start")
        started = json.loads(note.read_text())
        assert started["warm"] and not gone(started["child"])
        if how == "stop":
            assert fut.job.stop(grace=1).state == "stopped"
        else:
            assert fut.cancel() and fut.job.status().state == "stopped"
    assert poll(lambda: gone(started["child"]), WAIT_S), "the job's child outlived it"


# --- 4. nobody else can reach it ---

def test_the_warm_launcher_has_no_socket_anyone_could_connect_to(store):
    """Its only socket is its end of the pair its starter made: no path, no abstract name, not
    listening (a name would let another process, of any uid, knock)."""
    warm_up(store)
    (launcher,) = launcher_pids()
    sockets = {os.readlink(f"/proc/{launcher}/fd/{fd}") for fd in os.listdir(f"/proc/{launcher}/fd")}
    sockets = {link[len("socket:["):-1] for link in sockets if link.startswith("socket:[")}
    assert len(sockets) == 1, sockets
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[6] in sockets:
            assert len(fields) == 7, f"the launcher's socket has a name: {fields[7]}"
            assert not int(fields[3], 16) & 0x10000, "the launcher's socket listens"
            assert fields[4] == "0005", "a SOCK_SEQPACKET pair end"


ENDS_WITH_ITS_STARTER = textwrap.dedent("""\
    import os, sys
    from jobber._jobs.store import JobStore
    store = JobStore(sys.argv[1])
    from jobber._backends.local import warm
    with store.executor() as ex:
        print([ex.submit(abs, -n).result(120) for n in (1, 2)], warm.pid, flush=True)
    sys.stdin.read()
""")


def test_the_warm_launcher_ends_with_its_starter(store, tmp_path):
    starter = subprocess.Popen([sys.executable, "-c", ENDS_WITH_ITS_STARTER, store.owner], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        results, theirs = starter.stdout.readline().rsplit(" ", 1)
        theirs = int(theirs)
        assert results == "[1, 2]" and not gone(theirs) and "warm_boot.py" in Path(f"/proc/{theirs}/cmdline").read_text()
        starter.stdin.close()
        assert starter.wait(WAIT_S) == 0
        wait_for(lambda: gone(theirs), WAIT_S, "the warm launcher to end with the process that started it")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()


# --- 5. robustness ---

def test_a_fresh_launcher_serves_its_first_job(store):
    """Started anew (a process's second function job), the warm launcher serves the very
    request that started it: that job runs warm, not cold."""
    for attempt in range(20):
        stop_launcher()
        assert not run(store, ran_warm), "a process's first function job starts cold"
        assert run(store, ran_warm), f"fresh launcher {attempt}: its first job ran cold"


def test_jobs_outlive_a_killed_launcher_and_the_next_submit_starts_another(store, tmp_path):
    go = tmp_path / "go"
    with store.executor() as ex:
        futures = [ex.submit(wait_for_file, str(go), str(tmp_path / f"note{i}")) for i in range(2)]
        wait_for(lambda: all((tmp_path / f"note{i}").exists() for i in range(2)), WAIT_S, "both jobs to run")
        assert all((tmp_path / f"note{i}").read_text() == "True" for i in range(2))
        (killed,) = launcher_pids()
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: not launcher_pids(), WAIT_S, "the launcher to die")
        go.touch()
        assert [f.result(WAIT_S) for f in futures] == ["opened", "opened"]
        assert ex.submit(square, 4).result(WAIT_S) == 16
    warm_up(store)
    assert launcher_pids() and killed not in launcher_pids()


def _send(raw: bytes) -> bytes:
    """Hand the warm launcher a request's socket as ``warm.begin`` does, with ``raw`` on it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs:
        warm._control.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
    ours.settimeout(WAIT_S)
    reply = b""
    with ours:
        try:
            ours.sendall(raw)
            ours.shutdown(socket.SHUT_WR)
            while chunk := ours.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed unread: no answer either
    return reply


def framed(body: bytes) -> bytes:
    return struct.pack("!Q", len(body)) + body


GARBAGE = {
    "random bytes": os.urandom(4096),
    "a short header": b"\x00\x01\x02",
    "a huge length": struct.pack("!Q", 1 << 62) + b"{}",
    "a length past the body": struct.pack("!Q", 1000) + b"{}",
    "not JSON": framed(b"\xff\xfe{}x"),
    "a JSON object that is no launch": framed(b'{"a": 1}'),
    "a JSON list": framed(b"[1]"),
    "a JSON string": framed(b'"hi"'),
    "a launch of wrong types": framed(b'{"job_dir": 1, "options": "x", "env": [], "umask": "022"}'),
}


@pytest.mark.parametrize("what", list(GARBAGE))
def test_garbage_neither_crashes_the_launcher_nor_starts_anything(store, what, tmp_path):
    warm_up(store)
    (serving,) = launcher_pids()
    jobs = len(store.get_jobs())
    assert _send(GARBAGE[what]) == b""
    assert poll(lambda: serving not in launcher_pids(), 0.5) is False, f"the launcher died of {what}"
    assert run(store, square, 5) == 25, "a real job after it"
    assert launcher_pids() == [serving], f"the launcher died of {what}"
    assert len(store.get_jobs()) == jobs + 1 and all(j.status().state == "exited" for j in store.get_jobs())


@pytest.mark.parametrize("what", ["no socket", "two sockets", "a message of nothing"])
def test_garbage_on_the_pair_neither_crashes_the_launcher_nor_starts_anything(store, what):
    warm_up(store)
    (serving,) = launcher_pids()
    jobs = len(store.get_jobs())
    spare = [socket.socketpair() for _ in range(2)]
    try:
        if what == "no socket":
            warm._control.send(b"L")
        elif what == "two sockets":
            fds = array.array("i", [spare[0][1].fileno(), spare[1][1].fileno()])
            warm._control.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        else:
            warm._control.send(b"")
    finally:
        for pair in spare:
            for end in pair:
                end.close()
    assert run(store, square, 5) == 25, "a real job after it"
    assert launcher_pids() == [serving], f"the launcher died of {what}"
    assert len(store.get_jobs()) == jobs + 1 and all(j.status().state == "exited" for j in store.get_jobs())


# --- 6. a queue's executor: answers read in the background ---

def test_map_through_a_queue_warm(store):
    store.set_queue("q", parallel=2)
    with store.executor(queue="q") as ex:
        assert list(ex.map(square, range(20), timeout=WAIT_S)) == [x * x for x in range(20)]
        assert ex.submit(ran_warm).result(WAIT_S)


def test_a_launch_failing_in_the_background_fails_its_job_saying_why(store, monkeypatch):
    real = local_backend._supervisor_argv

    def with_an_unknown_option(*args, **kwargs):
        argv = real(*args, **kwargs)
        at = argv.index("--cwd")
        return [*argv[:at], "--no-such-option", *argv[at:]]

    warm_up(store)  # (a process's first function job starts cold: its launcher says it in its own words)
    monkeypatch.setattr(local_backend, "_supervisor_argv", with_an_unknown_option)
    store.set_queue("q", parallel=2)
    with store.executor(queue="q") as ex:
        futures = [ex.submit(square, x) for x in range(3)]
        for fut in futures:
            with pytest.raises(JobError, match=r"never ran: job \d+ did not start: .*unknown launcher option --no-such-option"):
                fut.result(WAIT_S)
    for fut in futures:
        status = fut.job.status()
        assert status.state == "failed" and "unknown launcher option --no-such-option" in (status.note or ""), status
        assert status.note.count("did not start") == 1, status.note
    monkeypatch.setattr(local_backend, "_supervisor_argv", real)
    with store.executor(queue="q") as ex:
        assert ex.submit(square, 3).result(WAIT_S) == 9, "the queue's places were given back"


# --- 8. what a review found ---

def kill_my_group_on_exit() -> int:
    import subprocess

    # A common shell idiom: kill my background helpers (my whole process group) on exit.
    return subprocess.run("sleep 100 & trap 'kill 0' EXIT; true", shell=True).returncode


def test_a_jobs_kill_0_reaches_neither_its_supervisor_nor_the_launcher_nor_other_jobs(store, mode, tmp_path):
    if mode == "warm":
        warm_up(store)
    serving = launcher_pids()
    go = tmp_path / "go"
    with store.executor() as ex:
        other = ex.submit(wait_for_file, str(go), str(tmp_path / "note"))
        wait_for((tmp_path / "note").exists, WAIT_S, "the other job to run")
        killer = ex.submit(kill_my_group_on_exit)
        ended = killer.job.wait(WAIT_S)
        assert ended.ended and "supervisor" not in (ended.note or ""), ended  # its supervisor saw it end
        go.touch()
        assert other.result(WAIT_S) == "opened", "the other job was killed with its neighbour's group"
    assert launcher_pids() == serving, "the warm launcher was killed by a job's kill 0"


def clock_and_locale() -> tuple[str, str, bool]:
    import os
    import time

    return os.environ.get("TZ", ""), time.strftime("%Z"), ran_warm()


@pytest.mark.parametrize("mode", ["warm", "cold"], indirect=True)
def test_a_time_zone_of_its_own_is_the_jobs(store, mode):
    tz, zone, _ = run(store, clock_and_locale, env={"TZ": "Asia/Tokyo"})
    assert (tz, zone) == ("Asia/Tokyo", "JST")


def test_a_stopped_launcher_is_given_up_on_as_a_cold_launcher_is(store, monkeypatch):
    warm_up(store)
    (serving,) = launcher_pids()
    monkeypatch.setattr(warm, "REPLY_TIMEOUT_S", 2.0)
    os.kill(serving, signal.SIGSTOP)
    try:
        job = store.new_function_job(_packed(square, 3))
        with pytest.raises(JobError, match=f"job {job.id}: its supervisor did not answer within 2 s"):
            job.start()
    finally:
        os.kill(serving, signal.SIGCONT)
    # Woken, the launcher finds the request given up on and starts nothing: the job is as
    # it was before the start (no cgroup: the fixture checks), and starts again.
    assert run(store, square, 2) == 4, "the launcher serves again"
    assert job.status().state == "created" and not (job.path / "launched").exists()
    job.start()
    assert job.result(WAIT_S) == 9


def _packed(fn, *args):
    from jobber._jobs.pycall import pack_call

    return pack_call(fn, args, {})
