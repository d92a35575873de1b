"""One session fixture, three kinds: every contract test runs against each.

    local    a ``jobber.Certificate`` (the demo client): jobs in cgroups on this host
    remote   ``jobber.connect`` to a real ``jobber serve`` on loopback, real mTLS (one server
             a module: ``server`` and ``pki`` of tests/conftest.py), as a fresh tenant
    slurm    the same Certificate with ``$JOBBER_BACKEND=slurm``: the real cluster when one
             answers (``make test-slurm`` brings it up), else ``fake_slurm`` on PATH

``-k slurm`` or ``-m slurm`` picks the Slurm runs (``-m remote`` the remote ones: the VMs run
``-m "not slurm and not remote"``, the local runs only). ``JOBBER_TEST_SLURM=cluster`` (set by
``make test-slurm``) fails them rather than use the fake when no cluster answers.

Names used here, one meaning each: ``kind`` is the kind's name, ``session`` what a test
drives (the same methods whatever the kind), ``expect`` what the kind answers where kinds
rightly differ (the backend's name, isolation) or refuses by design.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import jobber
from contract import fake_slurm
from slurm_cluster import UNREACHABLE

KINDS = ["local", pytest.param("remote", marks=pytest.mark.remote), pytest.param("slurm", marks=pytest.mark.slurm)]
_REAL_SLURM_REQUIRED = os.environ.get("JOBBER_TEST_SLURM") == "cluster"


@dataclass(frozen=True)
class Expect:
    """What a session kind answers where kinds rightly differ."""

    kind: str
    backend: str
    """``job.backend`` and ``status.backend``."""
    isolations: tuple[str, ...]
    """What ``status.isolation`` may say."""
    real_cluster: bool = False
    """Slurm only: the real cluster (else the fake)."""

    @property
    def slurm(self) -> bool:
        return self.kind == "slurm"

    def refused_on_slurm(self, option: str) -> str:
        """The start of the message ``new_job`` gives for a lifecycle option Slurm refuses."""
        return f"{option} is not available for Slurm jobs"

    @property
    def wait_s(self) -> float:
        """How long a short job may take to end: a real scheduler polls in seconds."""
        return 120.0 if self.real_cluster else 30.0


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def expect(kind) -> Expect:
    local = ("cgroup-v1", "cgroup-v2", "none")
    if kind == "slurm":
        return Expect(kind, "slurm", ("slurm",), real_cluster=UNREACHABLE is None)
    return Expect(kind, kind, local)


@pytest.fixture
def session(kind, request, identity, monkeypatch, tmp_path_factory):
    """The session under test: ``new_job``, ``get_job(s)``, ``find_job``, ``prune``,
    ``set_queue``, ``queues``, ``sweep``, and its jobs' verbs."""
    if kind == "local":
        yield identity
    elif kind == "remote":
        yield request.getfixturevalue("session_of_tenant")()
    else:
        monkeypatch.setenv("JOBBER_BACKEND", "slurm")
        if UNREACHABLE is None:
            yield identity
            return
        if _REAL_SLURM_REQUIRED:
            pytest.fail(f"JOBBER_TEST_SLURM=cluster, but {UNREACHABLE}")
        root = tmp_path_factory.mktemp("fake-slurm")
        monkeypatch.setenv("PATH", f"{fake_slurm.install(root)}:{os.environ['PATH']}")
        yield identity
        left = fake_slurm.shutdown(root)
        assert not left, f"fake Slurm jobs still running: {left}"


@pytest.fixture
def session_of_tenant(request, pki, server, tenant):
    """Opens another remote session as ``tenant`` (closed at teardown)."""
    opened = []

    def connect():
        cert, key = tenant
        opened.append(jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10))
        return opened[-1]

    yield connect
    for remote in opened:
        remote.close()


@pytest.fixture
def reopen(kind, request, demo):
    """Opens the session's identity again, as another process would (the same jobs)."""
    if kind == "remote":
        return request.getfixturevalue("session_of_tenant")
    return lambda: jobber.Certificate.from_file(demo["client"])


def ran(job, timeout: float = 30.0) -> jobber.JobStatus:
    """Start ``job`` and wait for its end; its final status."""
    job.start()
    status = job.wait(timeout)
    assert status.ended, status
    return status


def log_of(job) -> bytes:
    """The job's whole log, through the public ``tail``."""
    buf = bytearray(1 << 16)
    return bytes(buf[: job.tail(buf)])
