"""Magics benchmarks: `python benchmarks/bench_magics.py [--seconds S] [--rate LINES_PER_S]`

(a) Kernel-side CPU of a live view following a chatty job: a real ipykernel shows a
    JobWidget of a job printing 100k lines/s; the updater thread's CPU time is read from
    /proc/<kernel>/task/<thread>/stat, the whole kernel's from /proc/<kernel>/stat (that
    includes the iopub thread sending the updates). Goal: updater <= 10% of a core.
(b) What `%load_ext jobber_magics` costs: in a fresh interpreter that has IPython loaded
    (as a kernel has), and `python -X importtime`'s heaviest imports. Goal: <= 300 ms.

Every figure sits beside a baseline from the same run: the kernel's own CPU while idle,
and `python -c pass`. It needs cgroups or not (the job's isolation does not matter) and
makes its own demo identity and jobs directory, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client import KernelManager

from jobber._certificates.demo import init_demo

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The job: `rate` lines a second, written in a burst every 5 ms (as a logger flushing would).
CHATTY_JOB = """python3 -u -c '
import sys, time
start, n = time.monotonic(), 0
while True:
    elapsed = time.monotonic() - start
    if elapsed > {seconds}:
        break
    target = int(elapsed * {rate})
    sys.stdout.write("".join(f"step {{i}}: loss=0.{{i % 997:03d}} lr=3e-4 ok\\n" for i in range(n, target)))
    sys.stdout.flush()
    n = target
    time.sleep(0.005)
print(f"wrote {{n}} lines")
'
"""

# Runs in the kernel: follow the job with a displayed widget and sample the updater's CPU.
MEASURE = """
import os, time
from IPython.display import display
from jobber_magics import JobWidget

def _cpu_seconds(path):
    fields = open(path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / {ticks}

_widget = JobWidget(bench_job)
display(_widget)
_task = f"/proc/self/task/{{_widget._thread.native_id}}/stat"
_started, _thread_cpu = time.monotonic(), 0.0
while _widget.updating:
    try:
        _thread_cpu = _cpu_seconds(_task)
    except (FileNotFoundError, ProcessLookupError):
        break
    time.sleep(0.05)
print(json.dumps({{"updater_cpu_s": _thread_cpu, "followed_s": time.monotonic() - _started,
                  "status": bench_job.status().describe()}}))
"""


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Kernel:
    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.pid = int(self.run("import os; print(os.getpid())").strip())
        self.log_comms: set[str] = set()
        self.log_updates = 0

    def run(self, code: str, timeout: float = 300) -> str:
        """Execute; return stdout. Counts widget updates seen meanwhile."""
        msg_id = self.client.execute(code)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["msg_type"] == "comm_open" and "view_key" in msg["content"]["data"]["state"]:  # a live view
                self.log_comms.add(msg["content"]["comm_id"])
            elif msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] in self.log_comms:
                self.log_updates += 1
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
        raise TimeoutError(code)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def bench_follow(seconds: float, rate: int) -> None:
    print(f"(a) a live view following a job that prints {rate:,} lines/s for {seconds:g} s")
    kernel = Kernel()
    try:
        kernel.run("%load_ext jobber_magics\nimport json")
        idle_before = process_cpu(kernel.pid)
        time.sleep(2)
        idle = (process_cpu(kernel.pid) - idle_before) / 2
        kernel.run("%%jobber_run --no-follow --name bench_job\n" + CHATTY_JOB.format(seconds=seconds, rate=rate))
        before, started = process_cpu(kernel.pid), time.monotonic()
        result = json.loads(kernel.run(MEASURE.format(ticks=CLOCK_TICKS)).strip().splitlines()[-1])
        wall = time.monotonic() - started
        kernel_cpu = process_cpu(kernel.pid) - before
        tail = kernel.run("%jobber_tail {bench_job.id} -n 1").strip()
    finally:
        kernel.shutdown()
    followed = result["followed_s"]
    updater = result["updater_cpu_s"] / followed * 100
    print(f"  job: {result['status']}, {tail}")
    print(f"  updater thread: {result['updater_cpu_s']:.2f} CPU-s in {followed:.1f} s = {updater:.1f}% of a core "
          f"(goal <= 10%)")
    print(f"  whole kernel (updater + iopub + zmq + the sampling loop): {kernel_cpu / wall * 100:.1f}% of a core; "
          f"idle kernel baseline {idle * 100:.1f}%")
    print(f"  live view messages sent (log frames + state updates): {kernel.log_updates} in {followed:.1f} s = "
          f"{kernel.log_updates / followed:.1f}/s (at most 5 frames/s, each with one state update, by design)")


def median_runs(commands: list[str], rounds: int) -> list[float]:
    """Median wall time of `python -c COMMAND` for each command, run in turns (drift hits all)."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(rounds):
        for slot, command in enumerate(commands):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", command], check=True, stdout=subprocess.DEVNULL)
            times[slot].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def bench_load(rounds: int = 11) -> None:
    print("(b) the cost of %load_ext jobber_magics")
    in_shell = (
        "import time\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "wall, cpu = time.perf_counter(), time.process_time()\n"
        "shell.run_line_magic('load_ext', 'jobber_magics')\n"
        "print(time.perf_counter() - wall, time.process_time() - cpu)\n"
    )
    loads = [[float(x) for x in subprocess.run([sys.executable, "-c", in_shell], check=True, capture_output=True,
                                               text=True).stdout.split()] for _ in range(rounds)]
    wall = statistics.median(w for w, _ in loads) * 1000
    cpu = statistics.median(c for _, c in loads) * 1000
    # CPU time too: on a loaded machine wall time mostly measures the other processes.
    print(f"  %load_ext in a fresh shell with IPython already imported (as in a kernel): median "
          f"{wall:.0f} ms wall, {cpu:.0f} ms CPU over {rounds} (goal <= 300 ms; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    bare, ipython, ours = median_runs(["pass", "import IPython", "import IPython, jobber_magics._magics"], rounds)
    print(f"  whole processes: `python -c pass` {bare * 1000:.0f} ms, `import IPython` {ipython * 1000:.0f} ms, "
          f"`import IPython, jobber_magics._magics` {ours * 1000:.0f} ms: the extension adds "
          f"{(ours - ipython) * 1000:.0f} ms")
    importtime = subprocess.run([sys.executable, "-X", "importtime", "-c", "import IPython; import jobber_magics._magics"],
                                capture_output=True, text=True, check=True).stderr
    rows = []
    for line in importtime.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # the header, or something else on stderr
        if parts[2] in ("jobber_magics._magics", "jobber", "jobber._certificates", "jobber.cli", "ipywidgets"):
            rows.append(f"{parts[2]} {int(parts[1]) / 1000:.0f} ms")
    print("  -X importtime, cumulative: " + ", ".join(rows) + "; ipywidgets is not imported until a view is shown")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the chatty job runs")
    parser.add_argument("--rate", type=int, default=100_000, help="lines per second it prints")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobber-bench-magics-"))
    demo = init_demo(work / "pki")
    os.environ.update(JOBBER_ROOT=str(demo["root"]), JOBBER_CERT=str(demo["client"]),
                      JOBBER_JOBS_DIR=str(work / "jobs"))
    try:
        bench_follow(args.seconds, args.rate)
        bench_load()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
