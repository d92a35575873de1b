"""Tenant uids that never collide: the default ``--uid-range`` is found outside every
account and subordinate range, and recorded tenant uids are checked again at each start.

The real part runs ``jobber serve`` as root on a host with ``useradd`` users (each given
an ``/etc/subuid`` and ``/etc/subgid`` range by ``useradd``), removed afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from jobber import JobberError
from jobber._server import tenant_uids
from jobber._server.tenant_uids import UidRegistry, default_uid_range, subordinate_ranges
from serve_for_notebooks import Api, ServerProcess

TOP = (0x7FFD0000, 0x7FFDFFFF)


class TestDefaultRange:
    def test_the_highest_free_window(self, monkeypatch):
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [])
        monkeypatch.setattr(tenant_uids, "_account_ids", lambda: {0, 1000})
        assert default_uid_range() == TOP

    def test_a_window_anything_touches_is_passed_over(self, monkeypatch):
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [("/etc/subuid", "x", TOP[1], TOP[1] + 5)])
        monkeypatch.setattr(tenant_uids, "_account_ids", lambda: {TOP[0] - 1})
        assert default_uid_range() == (TOP[0] - 2 * 65536, TOP[0] - 65536 - 1)

    def test_no_free_window_says_what_to_pass(self, monkeypatch):
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [("/etc/subuid", "x", 0, 2**32 - 2)])
        with pytest.raises(JobberError, match="pass --uid-range"):
            default_uid_range()


class TestRecordedUids:
    def test_a_subordinate_range_added_later_is_refused_with_the_fix(self, monkeypatch, tmp_path):
        registry = UidRegistry(tmp_path, tmp_path / "tenants", 300000, 300099)
        owner = "ab" * 32
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [])
        assert registry.uid_of(owner) == 300000
        registry.check()
        later = [("/etc/subuid", "dora", 296608, 362143), ("/etc/subgid", "dora", 296608, 362143)]
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: later)
        with pytest.raises(JobberError) as refused:
            registry.check()
        text = str(refused.value)
        assert "uid 300000 is inside /etc/subuid's dora:296608:65536" in text
        assert ("usermod --del-subuids 296608-362143 --add-subuids 362144-427679 dora && "
                "usermod --del-subgids 296608-362143 --add-subgids 362144-427679 dora") in text
        assert f'remove "{owner}" from {tmp_path / "tenants.json"}' in text

    def test_a_new_tenant_is_not_given_a_uid_of_a_range_added_while_running(self, monkeypatch, tmp_path):
        registry = UidRegistry(tmp_path, tmp_path / "tenants", 300000, 300099)
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [("/etc/subuid", "dora", 290000, 300049)])
        assert registry.uid_of("cd" * 32) == 300050

    def test_a_uid_that_became_an_account_is_refused(self, monkeypatch, tmp_path):
        monkeypatch.setattr(tenant_uids, "subordinate_ranges", lambda: [])
        user = pwd.getpwuid(os.geteuid() or 65534)  # an account that exists: this one, or nobody
        (tmp_path / "tenants.json").write_text(json.dumps({"version": 1, "uids": {"ef" * 32: user.pw_uid}}))
        with pytest.raises(JobberError, match=rf"uid {user.pw_uid} is now the id of the user {user.pw_name}.*"
                                              rf"usermod -u NEW {user.pw_name}"):
            UidRegistry(tmp_path, tmp_path / "tenants", 1, 2).check()


# For real: useradd users, jobber serve.

pytestmark_real = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("usermod"),
    reason="needs root, useradd and usermod")


@pytest.fixture
def add_user():
    """``add_user()`` makes a useradd user (with its subordinate ranges); all are removed after."""
    made = []

    def add() -> str:
        name = f"jbu{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
        made.append(name)
        if not any(entry[1] == name for entry in subordinate_ranges()):
            pytest.skip("useradd gives no subordinate ranges here (SUB_UID_COUNT is 0 or /etc/subuid missing)")
        return name

    yield add
    for name in made:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def state():
    path = Path(tempfile.mkdtemp(prefix="jobber-uid-range-", dir="/var/tmp"))  # reachable by tenants
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve(pki, jobs: Path, state: Path, uid_range: str | None = None) -> ServerProcess:
    return ServerProcess(pki.server_cert, pki.server_key, pki.root, jobs, state_dir=state, uid_range=uid_range,
                         private_tmp=False)


def _refusal(pki, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobber", "serve", "--port", "0", "--cert", str(pki.server_cert),
                           "--key", str(pki.server_key), "--root", str(pki.root), "--state-dir", str(state),
                           "--no-private-tmp"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def _uid_of_job(server: ServerProcess, pki, identity: tuple[Path, Path]) -> int:
    api = Api(server.url, *identity, pki.server_ca)
    reply = api("POST", "/v1/jobs", {"command": "id -u"})
    assert reply.status == 201, reply.body
    job_id = reply.json()["id"]
    assert api("GET", f"/v1/jobs/{job_id}?wait=60").json()["status"]["state"] == "exited"
    return int(api("GET", f"/v1/jobs/{job_id}/log").body)


@pytestmark_real
def test_serve_defaults_avoid_useradd_ranges_and_refuse_a_later_overlap(pki, tmp_path, state, add_user):
    for _ in range(3):
        add_user()
    ranges = subordinate_ranges()
    alice, bob_id = pki.client("alice"), pki.client("bob")
    with _serve(pki, tmp_path / "jobs", state).start() as server:
        low, high = map(int, re.search(r"from (\d+)-(\d+)", server.log()).groups())
        assert not any(first <= high and low <= last for _, _, first, last in ranges)
        tenant = _uid_of_job(server, pki, alice)
        assert low <= tenant <= high
    # A range of the server's own just past every subordinate range, where the next useradd's goes.
    start = max(last for _, _, _, last in ranges) + 1000
    with _serve(pki, tmp_path / "jobs", state, f"{start}-{start + 99}").start() as server:
        bob = _uid_of_job(server, pki, bob_id)
    assert bob == start
    later = add_user()
    refused = _refusal(pki, state)
    assert refused.returncode == 1 and "listening" not in refused.stderr, refused
    assert f"uid {bob} is inside /etc/subuid's {later}:" in refused.stderr
    fix = re.search(r"give the user another range \((usermod [^)]*)\)", refused.stderr).group(1)
    subprocess.run(fix, shell=True, check=True, capture_output=True)  # the fix, exactly as printed
    assert not any(first <= bob <= last for _, _, first, last in subordinate_ranges())
    with _serve(pki, tmp_path / "jobs", state).start() as server:
        assert _uid_of_job(server, pki, bob_id) == bob and _uid_of_job(server, pki, alice) == tenant
