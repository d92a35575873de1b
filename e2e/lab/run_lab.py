"""Run the Jobs panel's browser tests: two JupyterLabs from the installed wheel, two tenants.

Run it with the Python of a fresh venv holding the built wheel (`.ci/lab_e2e.sh` builds the
wheel, makes the venv and runs this); arguments go on to Playwright::

    $VENV/bin/python e2e/lab/run_lab.py [--grep NAME]
    $VENV/bin/python e2e/lab/run_lab.py --serve     # only the two servers, to look around

What it sets up, in a fresh temporary directory (as e2e/run.py does, whose pieces it uses):

* a demo certificate pool; tenant A is its ``client.pem``, tenant B its ``client2.pem``;
* one ``JOBBER_JOBS_DIR`` for both (the tenants' jobs lie side by side, as on a shared host);
* JupyterLab A (``JOBBER_CERT`` = A) and JupyterLab B (``JOBBER_CERT`` = B), each from this
  venv, at a free port with a random token, with private Jupyter runtime and workspace dirs,
  and each with a server root of its own (copies of ``e2e/lab/notebooks/``).

Before the tests it checks that ``jobber``, ``jobber_lab`` and ``jupyter`` come from this
venv and not from the checkout. Afterwards, whatever happened: every job of both tenants is
stopped, both JupyterLabs are shut down, and any process of the run left over, or any cgroup
of a job, fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

LAB = Path(__file__).resolve().parent
E2E = LAB.parent
REPO = E2E.parent
sys.path.insert(0, str(E2E))
import run  # noqa: E402  (e2e/run.py: the pieces of the notebook tests' harness)

ARTIFACTS = REPO / "artifacts" / "e2e"
VENV = Path(sys.prefix)


def log(message: str) -> None:
    print(f"lab-e2e: {message}", flush=True)


def check_installed() -> list[str]:
    """Problems if jobber, jobber_lab or jupyter would not come from this venv."""
    import jobber
    import jobber_lab

    problems = []
    if sys.prefix == sys.base_prefix:
        problems.append(f"{sys.executable} is not a venv's Python")
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in (jobber, jobber_lab):
        where = Path(module.__file__).resolve()
        if not where.is_relative_to(site) or where.is_relative_to(REPO):
            problems.append(f"{module.__name__} is imported from {where}, not from {site}")
    log(f"jobber from {Path(jobber.__file__).parent}, jobber_lab from {Path(jobber_lab.__file__).parent}")
    jupyter = shutil.which("jupyter", path=str(VENV / "bin"))
    if not jupyter:
        problems.append(f"no jupyter in {VENV / 'bin'}: install the wheel with [notebook] and jupyterlab")
    return problems


def prepare_tenant_b(env_a: dict[str, str], work: Path) -> dict[str, str]:
    """Tenant B's environment: A's, with B's certificate and Jupyter dirs of its own."""
    demo = Path(env_a["JOBBER_ROOT"])
    env = dict(env_a, JOBBER_CERT=str(demo / "client2.pem"))
    # Settings of its own too: a spec changes B's jobber settings, never A's.
    shutil.copytree(env_a["JUPYTERLAB_SETTINGS_DIR"], work / "lab-settings-b")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(work / "lab-settings-b")
    for name, sub in (("JUPYTER_RUNTIME_DIR", "jupyter-runtime-b"), ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces-b")):
        env[name] = str(work / sub)
    return env


def serve_root(root: Path) -> None:
    """Copies of the panel tests' notebooks (saving in the browser never touches committed files)."""
    (root / "lab").mkdir(parents=True, exist_ok=True)
    for notebook in sorted((LAB / "notebooks").glob("*.ipynb")):
        shutil.copyfile(notebook, root / "lab" / notebook.name)


def start(name: str, env: dict[str, str], root: Path) -> tuple[object, str, str, Path]:
    port, token = run.free_port(), secrets.token_hex(24)
    log_path = ARTIFACTS / f"jupyterlab-{name}.log"
    server = run.start_lab(env, root, port, token, log_path)
    return server, f"http://127.0.0.1:{port}", token, log_path


def identity(base: str, token: str) -> dict:
    return json.loads(run.api(base, token, "/jobber/api/identity"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="start both servers, print their URLs, wait for Ctrl-C")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args, playwright_args = parser.parse_known_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    problems = check_installed()
    if not args.serve and not run.PLAYWRIGHT.exists():
        problems.append(f"{run.PLAYWRIGHT} is missing: run `npm ci --prefix e2e` (or .ci/lab_e2e.sh)")
    if not Path(run.CHROMIUM).exists():
        problems.append(f"{run.CHROMIUM} is missing: `apt-get install chromium` (or .ci/lab_e2e.sh)")
    if problems:
        for problem in problems:
            log(problem)
        return 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(8)
    work = Path(tempfile.mkdtemp(prefix="jobber-lab-e2e-"))
    os.chdir(work)  # nothing started here runs in the checkout
    env_a = run.prepare(work, run_id)  # demo pool, jobs dir, private Jupyter dirs (PATH: this venv)
    env_b = prepare_tenant_b(env_a, work)
    serve_root(work / "root")
    serve_root(work / "root-b")
    started = time.monotonic()
    servers = []
    status = 1
    try:
        for name, env, root in (("a", env_a, work / "root"), ("b", env_b, work / "root-b")):
            servers.append(start(name, env, root))
        for server, base, token, log_path in servers:
            run.wait_ready(server, base, token, log_path)
        (_, base_a, token_a, _), (_, base_b, token_b, _) = servers
        ids = [identity(base, token) for base, token in ((base_a, token_a), (base_b, token_b))]
        log(f"JupyterLab A at {base_a}/lab ({ids[0].get('subject')}), B at {base_b}/lab ({ids[1].get('subject')}),"
            f" after {time.monotonic() - started:.1f} s")
        if args.serve:
            print(f"A: {base_a}/lab?token={token_a}\nB: {base_b}/lab?token={token_b}", flush=True)
            try:
                servers[0][0].wait()
            except KeyboardInterrupt:
                pass
            status = 0
        else:
            test_env = dict(env_a, JUPYTER_BASE_URL=base_a, JUPYTER_TOKEN=token_a,
                            LAB_B_URL=base_b, LAB_B_TOKEN=token_b, LAB_B_CERT=env_b["JOBBER_CERT"],
                            LAB_ROOT=str(work / "root"), E2E_ARTIFACTS=str(ARTIFACTS), E2E_CHROMIUM=run.CHROMIUM)
            status = subprocess.run(["node", str(run.PLAYWRIGHT), "test", "--config", str(LAB / "playwright.config.js"),
                                     *playwright_args], cwd=E2E, env=test_env, check=False).returncode
    except SystemExit as stop:  # SIGTERM, or a JupyterLab did not start: clean up all the same
        status = stop.code if isinstance(stop.code, int) else 1
        if isinstance(stop.code, str):
            print(stop.code, flush=True)
    finally:
        cleanup = run.stop_jobs(env_a) + run.stop_jobs(env_b)
        for server, base, token, _ in servers:
            run.shut_down(server, base, token)
        cleanup += run.sweep(run_id)
        if args.keep:
            log(f"kept {work}")
        else:
            os.chdir("/")
            shutil.rmtree(work, ignore_errors=True)
    for problem in cleanup:
        log(f"clean-up: {problem}")
    log(f"done in {time.monotonic() - started:.1f} s: exit status {status}"
        + (f", {len(cleanup)} clean-up problem(s)" if cleanup else ", nothing left behind"))
    return status or (1 if cleanup else 0)


if __name__ == "__main__":
    sys.exit(main())
