"""Server benchmarks: remote start, live delivery to 100 followers, server memory.

    python benchmarks/bench_server.py [--followers 100] [--rounds 30]

A server (``python -m jobber serve``) runs on loopback with a demo PKI and a private jobs
directory. Every remote figure sits beside a local one measured in the same run (these
machines are noisy): ``Job.start()`` in this process, and one local ``Job.follow()``.

- start: from the call until the command runs (it opens a FIFO the benchmark reads).
- delivery: each line the job writes carries its ``date +%s.%N``; a follower's latency
  is the time it receives the line minus that stamp (same host, same clock).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jobber
from _table import pct, print_table, row
from jobber._backends.local.isolation import choose
from jobber._certificates.demo import init_demo
from jobber._jobs.store import JobStore


class Server:
    """``python -m jobber serve`` on a free loopback port; stderr goes to a file."""

    def __init__(self, pki: dict, jobs: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobber", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--cert", str(pki["server"]), "--key", str(pki["server_key"]), "--root", str(pki["root"]),
                 "--log-level", "warning"],
                stdout=out, stderr=out, env={**os.environ, "JOBBER_JOBS_DIR": str(jobs)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on (https://\S+?)/? ", log.read_text())
            if match:
                self.url = match.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"the server did not start:\n{log.read_text()}")

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def until_it_runs(fifo: Path, launch) -> float:
    t0 = time.perf_counter()
    launch()
    with open(fifo, "rb") as f:  # returns once the command has opened its end
        f.read()
    return (time.perf_counter() - t0) * 1000


def bench_start(session, store: JobStore, scratch: Path, rounds: int) -> None:
    fifo = scratch / "ran"
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)  # remote jobs run as nobody
    command = f"echo x > {fifo}"
    local, remote_start, remote_both = [], [], []
    for _ in range(rounds):
        job = store.new_job(command)
        local.append(until_it_runs(fifo, job.start))
        job.wait()
        job = session.new_job(command)
        remote_start.append(until_it_runs(fifo, job.start))
        job.wait()

        def create_and_start() -> None:
            session.new_job(command).start()

        remote_both.append(until_it_runs(fifo, create_and_start))
    base = f"local start() p50 {statistics.median(local):.1f} ms"
    row("remote start() until the command runs, p50", f"{statistics.median(remote_start):.1f} ms", base, "<= 20 ms")
    row("remote start() p90", f"{pct(remote_start, 0.9):.1f} ms", f"local p90 {pct(local, 0.9):.1f} ms", "-")
    row("remote new_job() + start(), p50", f"{statistics.median(remote_both):.1f} ms", base, "-")


def stamped_job(lines: int, interval: float) -> str:
    return f"for i in $(seq {lines}); do date +%s.%N; sleep {interval}; done"


def latencies_of(chunks, out: list[float]) -> None:
    pending = b""
    for chunk in chunks:
        now = time.time()
        pending += chunk
        *complete, pending = pending.split(b"\n")
        out.extend((now - float(line)) * 1000 for line in complete if line)


def bench_followers(session, store: JobStore, server: Server, followers: int, lines: int) -> None:
    job = session.new_job(stamped_job(lines, 0.05))
    samples: list[list[float]] = [[] for _ in range(followers)]
    threads = [threading.Thread(target=latencies_of, args=(job.follow(), samples[n])) for n in range(followers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let every follower connect before the first line
    idle_rss, _ = server.memory_kib()
    job.start()
    for thread in threads:
        thread.join()
    rss, peak = server.memory_kib()
    everything = [value for per_follower in samples for value in per_follower]
    complete = sum(len(per_follower) == lines for per_follower in samples)

    local_job = store.new_job(stamped_job(lines, 0.05))
    local: list[float] = []
    follower = threading.Thread(target=latencies_of, args=(local_job.follow(), local))
    follower.start()
    local_job.start()
    follower.join()
    base = f"1 local follow(): p50 {statistics.median(local):.1f} ms, p99 {pct(local, 0.99):.1f} ms"
    row(f"{followers} remote followers: every line to every follower", f"{complete}/{followers}", "-", f"{followers}/{followers}")
    row(f"{followers} remote followers: delivery p50", f"{statistics.median(everything):.1f} ms", base, "-")
    row(f"{followers} remote followers: delivery p99", f"{pct(everything, 0.99):.1f} ms", base, "<= 50 ms")
    row("server RSS: with the followers connected, before output", f"{idle_rss / 1024:.1f} MiB", "-", "-")
    row("server RSS after the run / peak", f"{rss / 1024:.1f} MiB / {peak / 1024:.1f} MiB", "-", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--lines", type=int, default=40)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="jobber-bench-server-"))
    os.chmod(scratch, 0o755)
    pki = init_demo(scratch / "pki")
    jobs = scratch / "jobs"
    os.environ["JOBBER_JOBS_DIR"] = str(jobs)  # the local baseline's jobs, beside the server's
    server = Server(pki, jobs, scratch / "server.log")
    print(f"isolation: {choose()[0].NAME}; server {server.url}; jobs as {'nobody' if os.geteuid() == 0 else 'you'}",
          file=sys.stderr)
    rss, _ = server.memory_kib()
    row("server RSS at start", f"{rss / 1024:.1f} MiB", "-", "-")
    session = jobber.connect(server.url, cert=str(pki["client"]), key=str(pki["client_key"]), ca=str(pki["ca"]))
    store = JobStore(hashlib.sha256(os.urandom(8)).hexdigest())
    try:
        bench_start(session, store, scratch, args.rounds)
        bench_followers(session, store, server, args.followers, args.lines)
    finally:
        server.stop()
    print_table()


if __name__ == "__main__":
    main()
