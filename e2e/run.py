"""Run jobber's browser end-to-end tests: JupyterLab on loopback, Playwright driving Chromium.

Usage (from the repository, with the project's venv; `.ci/e2e.sh` installs what it needs)::

    .venv/bin/python e2e/run.py                 # the Playwright tests, then clean-up
    .venv/bin/python e2e/run.py --grep Stop     # arguments after the options go to Playwright
    .venv/bin/python e2e/run.py --serve         # only the server, to poke at it by hand

What it sets up, in a fresh temporary directory (as `make demo` does, but private):

* a demo certificate pool (`jobber certs init-demo`), ``JOBBER_ROOT`` and ``JOBBER_CERT``;
* its own ``JOBBER_JOBS_DIR``, Jupyter config, data, runtime, settings and workspace dirs,
  and ``IPYTHONDIR``, so nothing of the developer's own set-up leaks in or is changed;
* a server root holding *copies* of ``notebooks/01-quickstart.ipynb`` and of the e2e
  notebooks, so saving in the browser never touches committed files;
* JupyterLab on 127.0.0.1 at a free port, with a random token.

Afterwards, whatever happened: every job of the pool's identity is stopped, JupyterLab is
shut down through its API (which shuts its kernels down), then its process group is
killed; any process still carrying this run's marker variable, and any cgroup of a job
left behind, makes the run fail. Screenshots, the Playwright report and the server log
land in ``artifacts/e2e/``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
E2E = REPO / "e2e"
ARTIFACTS = REPO / "artifacts" / "e2e"
PLAYWRIGHT = E2E / "node_modules" / "@playwright" / "test" / "cli.js"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# Every process of the run inherits this variable: how leftovers are found at the end
# (kernels run in sessions of their own, and jobs outlive the kernel by design).
MARKER = "JOBBER_E2E_RUN"

# Notebooks served to the browser: (source, path under the server root).
NOTEBOOKS = [
    (REPO / "notebooks" / "01-quickstart.ipynb", "notebooks/01-quickstart.ipynb"),
    (E2E / "notebooks" / "long-job.ipynb", "notebooks/long-job.ipynb"),
    (E2E / "notebooks" / "long-job.ipynb", "notebooks/log-view.ipynb"),
    (E2E / "notebooks" / "long-job.ipynb", "notebooks/rerun.ipynb"),
    (E2E / "notebooks" / "long-job.ipynb", "notebooks/restart.ipynb"),
    (E2E / "notebooks" / "long-job.ipynb", "notebooks/dark.ipynb"),
    (E2E / "notebooks" / "oom-job.ipynb", "notebooks/oom-job.ipynb"),
    (E2E / "notebooks" / "flood-job.ipynb", "notebooks/flood-job.ipynb"),
    (E2E / "notebooks" / "lifecycle-job.ipynb", "notebooks/lifecycle-job.ipynb"),
    (E2E / "notebooks" / "sweep-job.ipynb", "notebooks/sweep-job.ipynb"),
    (E2E / "notebooks" / "python-job.ipynb", "notebooks/python-job.ipynb"),
    (E2E / "notebooks" / "train.py", "notebooks/train.py"),
]

# JupyterLab would otherwise ask about news and look for updates online (a toast over
# the notebook, and requests that this closed network refuses).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    # JupyterLab 4.6 sends widget messages over kernel subshells; after a notebook is closed
    # and reopened, ipykernel 7 drops them ("Unknown subshell_id" in the server log), so a
    # Stop button does nothing. Off, as binder/postBuild sets it (see the README).
    "@jupyterlab/apputils-extension/kernels-settings.jupyterlab-settings": {
        "commsOverSubshells": "disabled",
    },
}


def log(message: str) -> None:
    print(f"e2e: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(work: Path, run_id: str) -> dict[str, str]:
    """Make the demo pool, the private Jupyter dirs and the server root; return the env.

    Every process of the run (JupyterLab, kernels, jobs, Chromium) inherits ``MARKER``.
    """
    demo = work / "demo"
    subprocess.run([sys.executable, "-m", "jobber", "certs", "init-demo", str(demo)],
                   check=True, stdout=subprocess.DEVNULL)
    root = work / "root"
    for source, target in NOTEBOOKS:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / target)
    settings = work / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env.update({
        MARKER: run_id,
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),  # as with an activated venv
        "JOBBER_ROOT": str(demo),
        "JOBBER_CERT": str(demo / "client.pem"),
        "JOBBER_JOBS_DIR": str(work / "jobs"),
        "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(work / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "lab-workspaces"),
        "IPYTHONDIR": str(work / "ipython"),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop("JOBBER_SERVER", None)
    env.pop("JOBBER_BACKEND", None)
    return env


def start_lab(env: dict[str, str], root: Path, port: int, token: str, log_path: Path) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with open(log_path, "wb") as out:  # the server keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def api(base: str, token: str, path: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def wait_ready(server: subprocess.Popen, base: str, token: str, log_path: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"e2e: JupyterLab exited with {server.returncode}:\n{tail(log_path)}")
        try:
            api(base, token, "/api/status", timeout=2)
            # The lab page itself: the extension manager and the widget extension load here.
            api(base, token, "/lab", timeout=10)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    raise SystemExit(f"e2e: JupyterLab did not answer within {timeout:.0f} s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_jobs(env: dict[str, str]) -> list[str]:
    """Stop every job of the demo identity; return the problems (and cgroups left behind)."""
    os.environ["JOBBER_JOBS_DIR"] = env["JOBBER_JOBS_DIR"]
    import jobber

    problems = []
    cert = jobber.Certificate.from_file(env["JOBBER_CERT"], root=env["JOBBER_ROOT"])
    for job in cert.get_jobs():
        try:
            status = job.status()
            if not status.ended and status.state != "created":
                log(f"stopping job {job.id}, still {status.state}: {job.command.splitlines()[0]!r}")
                job.stop(grace=1)
        except jobber.JobberError as err:
            problems.append(f"job {job.id} could not be stopped: {err}")
        confinement = Path(job.path) / "confinement.json"
        if confinement.exists():
            record = json.loads(confinement.read_text())
            problems += [f"job {job.id} left its cgroup {d}" for d in record.get("dirs", {}).values()
                         if os.path.isdir(d)]
    return problems


def marked_processes(run_id: str) -> list[tuple[int, str]]:
    """Processes (not this one) whose environment carries this run's marker."""
    found = []
    needle = f"{MARKER}={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def shut_down(server: subprocess.Popen, base: str, token: str) -> None:
    """Shut JupyterLab and its kernels down politely, then make sure of it."""
    if server.poll() is None:
        try:
            api(base, token, "/api/shutdown", method="POST")
        except (urllib.error.URLError, OSError) as err:
            log(f"shutdown request failed ({err}): terminating the server")
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log("JupyterLab still runs 20 s after the shutdown request: SIGTERM")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


def sweep(run_id: str, deadline: float = 10.0) -> list[str]:
    """Leftover processes of the run (killed here, and reported)."""
    end = time.monotonic() + deadline
    while (left := marked_processes(run_id)) and time.monotonic() < end:
        time.sleep(0.2)  # kernels and supervisors need a moment to go after their parents
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [f"process {pid} was left running: {cmd}" for pid, cmd in left]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="start the server, print its URL, wait for Ctrl-C")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args, playwright_args = parser.parse_known_args()
    # A timeout's SIGTERM must still run the clean-up below (jobs outlive their kernel).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if not args.serve and not PLAYWRIGHT.exists():
        log(f"{PLAYWRIGHT} is missing: run `npm ci --prefix e2e` (or .ci/e2e.sh)")
        return 2
    if not Path(CHROMIUM).exists():
        log(f"{CHROMIUM} is missing: `apt-get install chromium` (or .ci/e2e.sh)")
        return 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(8)
    work = Path(tempfile.mkdtemp(prefix="jobber-e2e-"))
    env = prepare(work, run_id)
    port, token = free_port(), secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    server = start_lab(env, work / "root", port, token, ARTIFACTS / "jupyterlab.log")
    problems: list[str] = []
    status = 1
    try:
        wait_ready(server, base, token, ARTIFACTS / "jupyterlab.log")
        log(f"JupyterLab is up at {base}/lab (after {time.monotonic() - started:.1f} s)")
        if args.serve:
            print(f"{base}/lab/tree/notebooks/01-quickstart.ipynb?token={token}", flush=True)
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
            status = 0
        else:
            test_env = dict(env, JUPYTER_BASE_URL=base, JUPYTER_TOKEN=token,
                            E2E_ARTIFACTS=str(ARTIFACTS), E2E_CHROMIUM=CHROMIUM)
            status = subprocess.run(["node", str(PLAYWRIGHT), "test", "--config", str(E2E / "playwright.config.js"),
                                     *playwright_args], cwd=E2E, env=test_env, check=False).returncode
    except SystemExit as stop:  # SIGTERM, or JupyterLab did not start: clean up all the same
        status = stop.code if isinstance(stop.code, int) else 1
        if isinstance(stop.code, str):
            print(stop.code, flush=True)
    finally:
        problems += stop_jobs(env)
        shut_down(server, base, token)
        problems += sweep(run_id)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        log(f"clean-up: {problem}")
    outcome = "served" if args.serve and status == 0 else f"exit status {status}"
    log(f"done in {time.monotonic() - started:.1f} s: {outcome}"
        + (f", {len(problems)} clean-up problem(s)" if problems else ", nothing left behind"))
    return status or (1 if problems else 0)


if __name__ == "__main__":
    sys.exit(main())
