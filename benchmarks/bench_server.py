"""Server benchmarks: remote start, live delivery to 100 followers, server memory, bounded clients.

    python benchmarks/bench_server.py [--followers 100] [--rounds 30] [--flood 20000] [--load 64]

A server (``python -m jobber serve``) runs on loopback with a demo PKI and a private jobs
directory. Every remote figure sits beside a local one measured in the same run (these
machines are noisy): ``Job.start()`` in this process, and one local ``Job.follow()``.

- start: from the call until the command runs (it opens a FIFO the benchmark reads).
- delivery: each line the job writes carries its ``date +%s.%N``; a follower's latency
  is the time it receives the line minus that stamp (same host, same clock).
- flood: idle TCP connections (no TLS byte) from many loopback addresses against the
  default caps: what the server holds, its memory, an authenticated request meanwhile
  (baseline: the same request before the flood), the log lines it cost; then a client
  trickling its headers a byte a second, until the server cuts it.
- fairness: tenant A's status requests (from a process of its own) while tenant B runs
  64 listings and 64 stops with a grace period at once; baseline: A unloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jobber
from _table import pct, print_table, row
from jobber._backends.local.isolation import choose
from jobber._certificates.demo import init_demo
from jobber._jobs.store import JobStore


class Server:
    """``python -m jobber serve`` on a free loopback port; stderr goes to a file."""

    def __init__(self, pki: dict, jobs: Path, log: Path, args: tuple[str, ...] = ()) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobber", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--cert", str(pki["server"]), "--key", str(pki["server_key"]), "--root", str(pki["root"]),
                 "--log-level", "warning",
                 # Root: a uid per tenant, their homes beside the jobs; anyone else: jobs run as you.
                 *(["--state-dir", str(jobs.parent / "state")] if os.geteuid() == 0 else ["--single-tenant"]), *args],
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
    os.chmod(fifo, 0o666)  # remote jobs run as the tenant's uid
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


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _fds(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


class PeakFds(threading.Thread):
    """The most descriptors the server held while this ran, read every few milliseconds."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.done = server, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, _fds(self.server))
            except OSError:
                pass
            self.done.wait(0.002)


def bench_flood(server: Server, session, count: int) -> None:
    """``count`` idle TCP connections (250 per loopback address), then a header trickler."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(count, (hard if hard != resource.RLIM_INFINITY else count + 512) - 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 256), hard))
    job = session.new_job("true")
    quiet = [_timed(job.status) for _ in range(20)]
    rss_before, _ = server.memory_kib()
    log_before = len(server.log.read_text().splitlines())
    port = int(server.url.rsplit(":", 1)[1])
    socks = []
    idle_fds = _fds(server)
    sampler = PeakFds(server)
    sampler.start()
    started = time.perf_counter()
    for n in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((f"127.0.{1 + n // 250 % 250}.{2 + n % 250}", 0))
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    opened = time.perf_counter() - started
    time.sleep(2.0)
    held, (rss, _) = _fds(server), server.memory_kib()
    loaded = [_timed(job.status) for _ in range(20)]
    sampler.done.set()
    sampler.join()
    for sock in socks:
        sock.close()
    time.sleep(2.0)
    rss_after, peak = server.memory_kib()
    lines = len(server.log.read_text().splitlines()) - log_before
    base = f"before the flood: p50 {statistics.median(quiet):.1f} ms"
    row(f"{count} idle TCP connections opened in {opened:.1f} s: descriptors the server holds 2 s on / at most",
        f"{held} / {sampler.peak}", f"--max-connections 4096; {idle_fds} before the flood",
        "<= 4096 + 32 (one accept batch) + its own")
    row("status request during the flood, p50 / max", f"{statistics.median(loaded):.1f} / {max(loaded):.1f} ms", base,
        "answers")
    row("server RSS: before / with the flood / after / peak",
        f"{rss_before / 1024:.0f} / {rss / 1024:.0f} / {rss_after / 1024:.0f} / {peak / 1024:.0f} MiB",
        f"before: {rss_before / 1024:.0f} MiB", "within 100 MiB of before")
    row("server log lines the flood cost", str(lines), f"{count} connections", "a few summaries")
    context = session.transport._context
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            context.wrap_socket(raw, server_hostname=session.transport._host) as tls:
        tls.sendall(b"GET /v1/identity HTTP/1.1\r\nHost: x\r\n")
        started = time.perf_counter()
        while time.perf_counter() - started < 120:
            try:
                tls.sendall(b"X")
                tls.settimeout(1.0)
                if tls.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        cut = time.perf_counter() - started
    row("a client trickling its headers a byte a second: cut after", f"{cut:.1f} s", "--header-timeout 10", "~10 s")


_ASKER = """
import json, sys, time
import jobber
url, cert, key, ca, job_id, flag = sys.argv[1:7]
session = jobber.connect(url, cert=cert, key=key, ca=ca)
job = session.get_job(int(job_id))
took = []
while True:
    started = time.perf_counter()
    job.status()
    took.append((time.perf_counter() - started) * 1000)
    try:
        open(flag).close()
        break
    except FileNotFoundError:
        time.sleep(0.05)
started = time.perf_counter()
job.stop(grace=5)
print(json.dumps({"status": took, "stop": (time.perf_counter() - started) * 1000}))
"""


def bench_fairness(server: Server, pki: dict, scratch: Path, load: int) -> None:
    """A's requests while B runs ``load`` listings and ``load`` stops with grace at once."""
    a = jobber.connect(server.url, cert=str(pki["client"]), key=str(pki["client_key"]), ca=str(pki["ca"]))
    b = jobber.connect(server.url, cert=str(pki["client2"]), key=str(pki["client2_key"]), ca=str(pki["ca"]),
                       timeout=120)
    mine = a.new_job("sleep 300")
    mine.start()
    quiet = [_timed(mine.status) for _ in range(20)]
    stubborn = [b.new_job("trap '' TERM; sleep 300") for _ in range(load)]
    for job in stubborn:
        job.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: b.new_job("true"), range(150)))
    flag = scratch / "b-is-done"
    asker = subprocess.Popen([sys.executable, "-c", _ASKER, server.url, str(pki["client"]), str(pki["client_key"]),
                              str(pki["ca"]), str(mine.id), str(flag)], stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(2 * load) as pool:
        stops = [pool.submit(job.stop, 4) for job in stubborn]
        listings = [pool.submit(b.get_jobs) for _ in range(load)]
        for future in listings:
            future.result()
        flag.touch()
        for future in stops:
            future.result()
    b_took = time.perf_counter() - started
    measured = json.loads(asker.communicate(timeout=120)[0])
    took = measured["status"]
    base = f"A alone: p50 {statistics.median(quiet):.1f} ms, max {max(quiet):.1f} ms"
    row(f"A's status while B runs {load} listings + {load} stops (grace 4 s), p50 / p90 / max",
        f"{statistics.median(took):.1f} / {pct(took, 0.9):.1f} / {max(took):.1f} ms", base, "max well under 2 s")
    row("A's stop (grace 5, the job ends at SIGTERM) meanwhile", f"{measured['stop']:.0f} ms", base, "< 2 s")
    row(f"B's {load} listings + {load} stops, all answered in", f"{b_took:.1f} s", "grace 4 s", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--flood", type=int, default=20000, help="idle connections (fewer if RLIMIT_NOFILE is lower)")
    parser.add_argument("--load", type=int, default=64, help="tenant B's listings, and its stops, at once")
    args = parser.parse_args()
    # Not under /tmp: a server's job has a private /tmp, and must reach the fifo.
    scratch = Path(tempfile.mkdtemp(prefix="jobber-bench-server-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    pki = init_demo(scratch / "pki")
    jobs = scratch / "jobs"
    os.environ["JOBBER_JOBS_DIR"] = str(jobs)  # the local baseline's jobs, beside the server's
    server = Server(pki, jobs, scratch / "server.log")
    print(f"isolation: {choose()[0].NAME}; server {server.url}; jobs as {'a uid per tenant' if os.geteuid() == 0 else 'you'}",
          file=sys.stderr)
    rss, _ = server.memory_kib()
    row("server RSS at start", f"{rss / 1024:.1f} MiB", "-", "-")
    session = jobber.connect(server.url, cert=str(pki["client"]), key=str(pki["client_key"]), ca=str(pki["ca"]))
    store = JobStore(hashlib.sha256(os.urandom(8)).hexdigest())
    try:
        bench_start(session, store, scratch, args.rounds)
        bench_followers(session, store, server, args.followers, args.lines)
        bench_flood(server, session, args.flood)
        bench_fairness(server, pki, scratch, args.load)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)  # /var/tmp outlives a reboot
    print_table()


if __name__ == "__main__":
    main()
