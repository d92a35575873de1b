"""Shared fixtures: a private jobs directory per test, identities, and clean-up.

Every test gets its own ``$JOBBER_JOBS_DIR``; at teardown every job still running there is
stopped, and the test fails if a cgroup of it is left behind. The server tests share one
server subprocess a module (``pki``, ``server``; ``capped``: one started with the module's
``CAPPED_ARGS``) and reach it as a fresh ``tenant`` (its client certificate and key files),
with raw calls (``api``) or through ``jobber.connect`` (``session``); the magics and kernel
tests share a demo identity (``demo``, ``identity``: a Certificate). tests/contract/ runs its
``session`` against every kind of session. A module that means something else by one of
these names defines its own fixture of that name, which wins there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import certfactory and helpers

# A retried job pauses 1 s before its second attempt, 2 s before its third, ...: no test
# needs that pause (those that act during one set their own, e.g. 30 s). Set here, before
# any server or kernel starts, so that their jobs' supervisors inherit it too.
os.environ.setdefault("JOBBER_RETRY_BACKOFF", "0.2")

import jobber  # noqa: E402
from jobber import Certificate  # noqa: E402
from jobber._certificates.demo import init_demo  # noqa: E402
from jobber._jobs.store import JobStore  # noqa: E402
from serve_for_notebooks import Api, ServerProcess, TestPki  # noqa: E402


def pytest_report_header(config):
    from jobber._backends.local.isolation import choose, detect

    backend, reason = choose()
    return f"jobber isolation: host layout {detect()}, jobs use {backend.NAME}" + (f" ({reason})" if reason else "")


_SWEPT: set[Path] = set()  # the tests' own jobs directories, each swept as its test ended


@pytest.fixture(autouse=True)
def jobs_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh jobs directory for this test; running jobs in it are stopped afterwards."""
    path = tmp_path_factory.mktemp("jobber") / "jobs"
    monkeypatch.setenv("JOBBER_JOBS_DIR", str(path))
    yield path
    leftovers = _stop_everything(path)
    _SWEPT.add(path)
    assert not leftovers, f"cgroups left behind: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def sweep_every_job(tmp_path_factory):
    """At the end, stop jobs that tests kept in jobs directories of their own (servers).

    A test's own jobs directory was swept as the test ended: here its jobs' cgroups are
    only looked for again (asking each job its status, thousands of them, took a minute).
    """
    yield
    base = tmp_path_factory.getbasetemp()
    left = []
    roots = {spec.parent.parent.parent for spec in base.glob("**/jobs/*/*/spec.json")}
    for root in sorted(roots):  # each jobs directory once, however many jobs it holds
        left += _stop_everything(root, stop=root not in _SWEPT)
    assert not left, f"cgroups left behind: {sorted(set(left))}"


def _stop_everything(path: Path, stop: bool = True) -> list[str]:
    """Stop every job under ``path`` that runs or waits (with ``stop``); its cgroups left."""
    left = []
    if not path.is_dir():
        return left
    for owner in path.iterdir():
        if not owner.is_dir() or owner.name.startswith("."):  # .gpus: the host's GPU claims
            continue
        store = JobStore(owner.name, root=path)
        for job in store.get_jobs():
            try:
                if stop and not (status := job.status()).ended and status.state != "created":
                    job.stop(grace=0)
            except Exception as err:  # noqa: BLE001 - clean-up must go on
                print(f"clean-up of job {job.id} failed: {err}", file=sys.stderr)
            confinement = job.path / "confinement.json"
            if confinement.exists():
                record = json.loads(confinement.read_text())
                left += [d for d in record.get("dirs", {}).values() if os.path.isdir(d)]
    return left


@pytest.fixture
def store() -> JobStore:
    """The job store of a made-up identity (for tests that need no certificate)."""
    return JobStore(hashlib.sha256(os.urandom(16)).hexdigest())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPki:
    """A pool with a client CA, a server certificate for 127.0.0.1, and client identities."""
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory) -> ServerProcess:
    """A server subprocess for the module, with its own jobs directory.

    At teardown every job is stopped, no cgroup may be left, and the server's log must hold
    no "bug:" line (every 5xx is one).
    """
    jobs = tmp_path_factory.mktemp("server") / "jobs"
    proc = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs).start()
    yield proc
    proc.stop()
    assert not _stop_everything(jobs), "cgroups left behind"
    assert "bug:" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def capped(request, pki, tmp_path_factory) -> ServerProcess:
    """A server for the module started with its ``CAPPED_ARGS`` (caps such as ``--max-jobs``).

    At teardown its log must hold no "bug:" line.
    """
    jobs = tmp_path_factory.mktemp("capped") / "jobs"
    proc = ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs, args=list(request.module.CAPPED_ARGS)).start()
    yield proc
    proc.stop()
    assert "bug:" not in proc.log(), proc.log()[-3000:]


@pytest.fixture
def tenant(pki) -> tuple[Path, Path]:
    """A fresh client of the pool: its certificate and key files."""
    return pki.client()


@pytest.fixture
def api(pki, server, tenant) -> Api:
    """Raw HTTPS calls to the module's server as ``tenant``."""
    return Api(server.url, *tenant, pki.server_ca)


@pytest.fixture
def session(pki, server, tenant):
    """``jobber.connect`` to the module's server as ``tenant`` (a remote session)."""
    cert, key = tenant
    with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10) as remote:
        yield remote


@pytest.fixture
def gate() -> Path:
    """A file path a job (running as another uid) can wait for: the test opens it when ready.

    Under /var/tmp: a server's job has a private /tmp of its own.
    """
    directory = tempfile.mkdtemp(prefix="jobber-gate-", dir="/var/tmp")
    os.chmod(directory, 0o755)  # server jobs run as a tenant's uid, and must see the file appear
    yield Path(directory) / "open"
    shutil.rmtree(directory)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict[str, Path]:
    """A demo pool (CA, client.pem, client2.pem); JOBBER_ROOT is its directory."""
    return init_demo(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def identity(demo, monkeypatch) -> Certificate:
    """$JOBBER_ROOT and $JOBBER_CERT point at the demo pool and its first client.

    Kernels and processes the test starts inherit them (and the jobs directory).
    """
    monkeypatch.setenv("JOBBER_ROOT", str(demo["root"]))
    monkeypatch.setenv("JOBBER_CERT", str(demo["client"]))
    return Certificate.from_file(demo["client"])


@pytest.fixture(params=["compiled", "python"])
def launcher(request, monkeypatch):
    """Run the test with both supervisors: the compiled launcher and the Python one.

    A module runs every test so with ``pytestmark = pytest.mark.usefixtures("launcher")``;
    one test asks for it by name, or parametrizes it (``indirect=True``).
    """
    from jobber._backends.local import launcher_build as _launcher

    if request.param == "compiled" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler (cc, gcc) on this host: jobs would run under the Python supervisor")
    if request.param == "python":
        monkeypatch.setenv("JOBBER_LAUNCHER", "python")
    else:
        monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    _launcher.reset()
    yield request.param
    _launcher.reset()
