"""Core benchmarks: start, follow, stop, per-job overhead, listing. `python benchmarks/bench_core.py`

Every figure sits beside a baseline measured in the same run (these machines are noisy):
bare ``subprocess.Popen`` for start, ``tail -F`` and ``cat`` for logs, ``killpg`` for stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _table import pct, row, run_chosen
from jobber._backends.local.isolation import choose, open_cgroup
from jobber._jobs.store import JobStore


def fresh_store() -> JobStore:
    return JobStore(hashlib.sha256(os.urandom(8)).hexdigest())


def bench_start(store: JobStore, rounds: int = 30) -> None:
    fifo = Path(tempfile.mkdtemp()) / "ran"
    os.mkfifo(fifo)
    command = f"echo x > {fifo}"

    def until_it_runs(launch) -> float:
        t0 = time.perf_counter()
        launch()
        with open(fifo, "rb") as f:  # opens once the command opens its end
            f.read()
        return (time.perf_counter() - t0) * 1000

    def start_unconfined(job) -> None:
        os.environ["JOBBER_ISOLATION"] = "none"
        try:
            job.start()
        finally:
            del os.environ["JOBBER_ISOLATION"]

    def start_joining(job) -> None:
        # A/B on cgroup v2: the child migrates by cgroup.procs instead of being born in
        # its cgroup by clone3(CLONE_INTO_CGROUP).
        from jobber._backends.local import cgroup_v2

        original = cgroup_v2.Cgroup.launch_args
        cgroup_v2.Cgroup.launch_args = lambda self: ["--join", self.procs]
        try:
            job.start()
        finally:
            cgroup_v2.Cgroup.launch_args = original

    v2 = choose()[0].NAME == "cgroup-v2"
    bare, ours, unconfined, joining = [], [], [], []
    for _ in range(rounds):
        procs: list[subprocess.Popen] = []
        bare.append(until_it_runs(lambda procs=procs: procs.append(subprocess.Popen(["/bin/sh", "-c", command]))))
        procs[0].wait()
        job = store.new_job(command)
        ours.append(until_it_runs(job.start))
        job.wait()
        job = store.new_job(command)
        unconfined.append(until_it_runs(lambda job=job: start_unconfined(job)))
        job.wait()
        if v2:
            job = store.new_job(command)
            joining.append(until_it_runs(lambda job=job: start_joining(job)))
            job.wait()
    b, o, u = statistics.median(bare), statistics.median(ours), statistics.median(unconfined)
    row(f"start latency p50 ({choose()[0].NAME})", f"{o:.1f} ms ({o / b:.1f}x)", f"Popen {b:.1f} ms", "<= 3 ms and <= 3x")
    # The difference is the kernel moving the process into its cgroups (on cgroup v1 a
    # write to cgroup.procs waits for an RCU grace period).
    row("start latency p50 (no cgroup: launcher alone)", f"{u:.1f} ms ({u / b:.1f}x)", f"Popen {b:.1f} ms", "<= 3 ms and <= 3x")
    if v2:
        j = statistics.median(joining)
        row("start latency p50 (cgroup-v2 born in its cgroup, clone3)", f"{o:.1f} ms ({o / u:.2f}x the launcher alone)",
            f"launcher alone {u:.1f} ms", "<= 1.1x the launcher alone")
        row("start latency p50 (cgroup-v2 joining by cgroup.procs)", f"{j:.1f} ms ({j / u:.2f}x the launcher alone)",
            f"launcher alone {u:.1f} ms", "-")


def bench_follow_latency(store: JobStore, lines: int = 300) -> None:
    script = (
        "import time,sys\n"
        f"for i in range({lines}):\n"
        "    sys.stdout.write('%.6f\\n' % time.time()); sys.stdout.flush(); time.sleep(0.005)\n"
    )
    job = store.new_job(f"{sys.executable} -c \"{script}\"")
    tail = None
    ours, theirs = [], []

    def read_tail() -> None:
        for line in tail.stdout:
            theirs.append((time.time() - float(line)) * 1000)

    job.start()
    tail = subprocess.Popen(["tail", "-n", "+1", "-F", str(job.log_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    reader = threading.Thread(target=read_tail, daemon=True)
    reader.start()
    pending = b""
    for chunk in job.follow():
        now = time.time()
        pending += chunk
        *complete, pending = pending.split(b"\n")
        ours.extend((now - float(x)) * 1000 for x in complete)
    time.sleep(0.3)
    tail.terminate()
    reader.join(2)
    # Skip the first lines: both readers start behind the job.
    ours, theirs = ours[20:], theirs[20:]
    row("follow latency p50/p99", f"{pct(ours, .5):.2f} / {pct(ours, .99):.2f} ms",
        f"tail -F {pct(theirs, .5):.2f} / {pct(theirs, .99):.2f} ms", "p50 <= 5 ms, p99 <= 20 ms")


def bench_follow_throughput(store: JobStore, size: int = 1 << 30) -> None:
    job = store.new_job(f"head -c {size} /dev/zero")
    job.start()
    job.wait()
    t0 = time.perf_counter()
    subprocess.run(["cat", str(job.log_path)], stdout=subprocess.DEVNULL, check=True)
    cat_rate = size / (time.perf_counter() - t0) / 1e6
    code = (
        "import resource,sys,time; from jobber._jobs.store import JobStore\n"
        f"job = JobStore({store.owner!r}).get_job({job.id}); t = time.perf_counter(); n = 0\n"
        "for c in job.follow(): n += len(c)\n"
        "print(n / (time.perf_counter() - t) / 1e6, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    rate, rss = float(out[0]), float(out[1])
    row("follow throughput, 1 GiB log", f"{rate:.0f} MB/s, follower RSS {rss:.0f} MB",
        f"cat {cat_rate:.0f} MB/s", ">= 500 MB/s, RSS <= 64 MB")


def bench_log_cap(store: JobStore, size: int = 2 << 30, cap: str = "64M", rounds: int = 3) -> None:
    """A job writing as fast as it can, with ``log_max`` and without, alternately; the job
    times its own write, so start-up and finishing do not count."""
    from jobber._jobs.logcut import dropped_bytes
    from jobber._tail import last_lines

    command = (f"s=$(date +%s%N); head -c {size} /dev/zero; e=$(date +%s%N); "
               "echo; echo $((e - s))")

    def rate(log_max: object) -> tuple[float, int, int, int]:
        job = store.new_job(command, log_max=log_max)
        job.start()
        peak = 0
        while not job.status().ended:  # the disk use while it writes: how far past the cap
            try:
                peak = max(peak, os.stat(job.log_path).st_blocks * 512)
            except FileNotFoundError:
                pass
            time.sleep(0.001)
        ns = int(last_lines(job, 1))
        disk, dropped = os.stat(job.log_path).st_blocks * 512, dropped_bytes(job.log_path)
        job.remove()
        return size / (ns / 1e9) / 1e6, disk, dropped, peak

    capped, uncapped, peaks = [], [], []
    for _ in range(rounds):
        uncapped.append(rate(0)[0])
        mbps, disk, dropped, peak = rate(cap)
        capped.append(mbps)
        peaks.append(peak)
    c, u = statistics.median(capped), statistics.median(uncapped)
    row(f"log_max={cap}: a job writing {size >> 30} GiB flat out", f"{c:.0f} MB/s ({c / u:.2f}x), disk {disk / 2**20:.0f} MiB, "
        f"{dropped / 2**20:.0f} MiB dropped", f"uncapped {u:.0f} MB/s", ">= 0.9x")
    cap_bytes = int(cap[:-1]) << 20
    row(f"log_max={cap}: the log's peak disk use while it writes", f"{max(peaks) / 2**20:.0f} MiB "
        f"({max(peaks) / cap_bytes:.2f}x the cap, worst of {rounds})", "the cap", "<= 2x")


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_overhead(store: JobStore, count: int = 200) -> None:
    jobs = [store.new_job("sleep 600") for _ in range(count)]
    for job in jobs:
        job.start()
    supervisors = [json.loads((job.path / "status.json").read_bytes())["supervisor_pid"] for job in jobs]
    sleepers = [job.status().pid for job in jobs]
    # The supervisor's other child is the job's watchdog (launcher.c): it counts too.
    watchdogs = [int(child) for pid, sleeper in zip(supervisors, sleepers)
                 for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if int(child) != sleeper]
    ours = sum(_pss_kb(pid) for pid in supervisors + watchdogs) / count / 1024
    base = sum(_pss_kb(pid) for pid in sleepers) / count / 1024
    for job in jobs:
        job.stop(grace=0)
    row(f"overhead per running job ({count} jobs)", f"{ours:.2f} MB PSS (supervisor + {len(watchdogs) / count:g} watchdog)",
        f"the job's own sleep {base:.2f} MB", "<= 2 MB")


def bench_stop(store: JobStore, rounds: int = 20) -> None:
    tree = "for i in 1 2 3 4 5 6 7 8 9; do sleep 600 & done; sleep 600"
    ours, bare = [], []
    for _ in range(rounds):
        job = store.new_job(tree)
        job.start()
        while len(open_cgroup(json.loads((job.path / "confinement.json").read_bytes())).pids()) < 10:
            time.sleep(0.005)
        t0 = time.perf_counter()
        job.stop(grace=0)
        ours.append((time.perf_counter() - t0) * 1000)
        proc = subprocess.Popen(["/bin/sh", "-c", tree], start_new_session=True)
        time.sleep(0.05)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        bare.append((time.perf_counter() - t0) * 1000)
    row("stop of a 10-process tree p50", f"{statistics.median(ours):.1f} ms",
        f"killpg+wait {statistics.median(bare):.1f} ms", "<= 50 ms")


def bench_listing(count: int = 10_000) -> None:
    store = fresh_store()
    store.path.mkdir(parents=True)
    for i in range(1, count + 1):
        os.mkdir(store.path / str(i))
    t0 = time.perf_counter()
    jobs = store.get_jobs()
    ours = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    os.listdir(store.path)
    base = (time.perf_counter() - t0) * 1000
    assert len(jobs) == count
    row(f"get_jobs() over {count} jobs", f"{ours:.1f} ms", f"os.listdir {base:.1f} ms", "<= 100 ms")


def main() -> None:
    """``bench_core.py`` runs every table; ``bench_core.py start stop`` only those (the
    cgroup v2 VM runs ``start``: under emulation the rest would take minutes)."""
    os.environ.setdefault("JOBBER_JOBS_DIR", tempfile.mkdtemp(prefix="jobber-bench-") + "/jobs")
    store = fresh_store()
    print(f"isolation: {choose()[0].NAME}", file=sys.stderr)
    benches = {
        "start": lambda: bench_start(store),
        "follow": lambda: (bench_follow_latency(store), bench_follow_throughput(store)),
        "overhead": lambda: bench_overhead(store),
        "stop": lambda: bench_stop(store),
        "listing": bench_listing,
        "logcap": lambda: bench_log_cap(store),
    }
    run_chosen(benches)


if __name__ == "__main__":
    main()
