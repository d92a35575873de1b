"""A team's certificates on a real jobber server over loopback mTLS.

An issued certificate passes the handshake (Python's ssl and curl); a revoked one is
refused by the running server, on new and kept-alive connections, with no restart, and its
jobs stay on disk; the server warns about certificates near expiry in its log, and serves
a replaced certificate of its own from the next handshake while a follower stays connected.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import _stop_everything
from jobber import Certificate
from jobber._certificates.demo import init_demo
from jobber._certificates.issue import issue_client
from jobber._certificates.lifecycle import revoke
from polling import poll, wait_for
from serve_for_notebooks import Api, ServerProcess


@pytest.fixture(scope="module")
def demo_pool(tmp_path_factory) -> dict[str, Path]:
    return init_demo(tmp_path_factory.mktemp("team"))


@pytest.fixture(scope="module")
def team_server(demo_pool, tmp_path_factory) -> ServerProcess:
    """A server whose pool is the demo pool, for the module."""
    jobs = tmp_path_factory.mktemp("team-server") / "jobs"
    proc = ServerProcess(demo_pool["server"], demo_pool["server_key"], demo_pool["root"], jobs).start()
    yield proc
    proc.stop()
    assert not _stop_everything(jobs), "cgroups left behind"
    assert "bug:" not in proc.log(), proc.log()


def member(demo_pool: dict[str, Path], tmp_path: Path, name: str, days: int = 365) -> tuple[Path, Path]:
    paths = issue_client(name, demo_pool["root"], days=days, out=tmp_path)
    return paths["cert"], paths["key"]


class TestIssuedCertificate:
    def test_passes_the_handshake(self, demo_pool, team_server, tmp_path):
        cert, key = member(demo_pool, tmp_path, "alice")
        reply = Api(team_server.url, cert, key, demo_pool["ca"])("GET", "/v1/identity")
        assert reply.status == 200, reply.body
        assert reply.json()["hash"] == Certificate.from_file(cert, root=demo_pool["root"]).hash()

    def test_curl_is_admitted(self, demo_pool, team_server, tmp_path):
        if shutil.which("curl") is None:
            pytest.skip("no curl on this host")
        cert, key = member(demo_pool, tmp_path, "bob")
        out = subprocess.run(["curl", "-sS", "--cert", str(cert), "--key", str(key), "--cacert", str(demo_pool["ca"]),
                              f"{team_server.url}/v1/identity"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["hash"] == Certificate.from_file(cert, root=demo_pool["root"]).hash()


class TestRevocation:
    def test_a_running_server_refuses_it_and_keeps_its_jobs(self, demo_pool, team_server, tmp_path):
        cert, key = member(demo_pool, tmp_path, "carol")
        api = Api(team_server.url, cert, key, demo_pool["ca"])
        job = api("POST", "/v1/jobs", {"command": "true"})
        assert job.status == 201, job.body
        assert api("GET", f"/v1/jobs/{job.json()['id']}?wait=30").status == 200
        kept = api.connection()  # a connection that stays open across the revocation
        kept.request("GET", "/v1/jobs")
        first = kept.getresponse()
        assert first.status == 200 and first.read()

        sha = Certificate.from_file(cert, root=demo_pool["root"]).hash()
        out = subprocess.run([sys.executable, "-m", "jobber", "certs", "revoke", str(cert)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "JOBBER_ROOT": str(demo_pool["root"])})
        assert out.returncode == 0, out.stderr
        # Within 5 s, no restart: the next request on a new connection is refused, saying why.
        refused = poll(lambda: (r := api("GET", "/v1/jobs")).status == 403 and r, timeout=5)
        assert refused, "a revoked certificate was still admitted 5 s later"
        assert "revoked on" in refused.json()["error"] and refused.json()["type"] == "CertificateError"
        kept.request("GET", "/v1/jobs")  # and the kept-alive connection's next request too
        assert kept.getresponse().status == 403
        kept.close()
        assert (team_server.jobs_dir / sha / str(job.json()["id"])).is_dir()  # its jobs are kept
        assert "revoked on" in team_server.log()

    def test_another_member_is_still_admitted(self, demo_pool, team_server, tmp_path):
        gone, gone_key = member(demo_pool, tmp_path, "dave")
        stays, stays_key = member(demo_pool, tmp_path, "erin")
        revoke(demo_pool["root"], Certificate.from_file(gone, root=demo_pool["root"]).hash(), "CN=dave")
        assert wait_for(lambda: Api(team_server.url, gone, gone_key, demo_pool["ca"])("GET", "/v1/jobs").status == 403,
                        timeout=5, what="the revocation to apply")
        assert Api(team_server.url, stays, stays_key, demo_pool["ca"])("GET", "/v1/jobs").status == 200


def _server_cert(demo_pool: dict[str, Path], common_name: str, directory: Path) -> tuple[bytes, bytes]:
    """A new server certificate for 127.0.0.1 from the demo CA (cert PEM, key PEM)."""
    ca_key = serialization.load_pem_private_key(demo_pool["ca_key"].read_bytes(), None)
    ca = x509.load_pem_x509_certificate(demo_pool["ca"].read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=3))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _served_certificate(api: Api) -> x509.Certificate:
    host, port = api.host, api.port
    with socket.create_connection((host, port), timeout=10) as raw, \
            api.context.wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


class TestServerCertificate:
    @pytest.fixture
    def own_server(self, demo_pool, tmp_path):
        """A server with a copy of the demo server certificate, which the test replaces."""
        cert, key = tmp_path / "server.pem", tmp_path / "server.key"
        shutil.copy(demo_pool["server"], cert)
        shutil.copy(demo_pool["server_key"], key)
        member(demo_pool, tmp_path / "soon", "frank", days=3)  # an issued identity near expiry
        proc = ServerProcess(cert, key, demo_pool["root"], tmp_path / "jobs").start()
        yield proc
        proc.stop()
        assert not _stop_everything(tmp_path / "jobs"), "cgroups left behind"
        assert "bug:" not in proc.log(), proc.log()

    def test_the_log_warns_at_start_of_a_certificate_near_expiry(self, own_server):
        assert "certificate CN=frank,O=jobber demo" in own_server.log()
        assert "expires in 3 days" in own_server.log()

    def test_a_replaced_certificate_is_served_without_a_restart_or_a_dropped_follower(
            self, demo_pool, own_server, tmp_path, gate):
        cert, key = member(demo_pool, tmp_path, "gina")
        api = Api(own_server.url, cert, key, demo_pool["ca"])
        job = api("POST", "/v1/jobs", {"command": f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; "
                                                  f"echo second"}).json()
        conn, follower = api.stream(f"/v1/jobs/{job['id']}/log?follow=1")
        try:
            assert follower.status == 200 and follower.read1(1024) == b"first\n"
            new_cert, new_key = _server_cert(demo_pool, "renewed server", tmp_path)
            # Both files renamed into place, key first: between the two renames the pair does not
            # match, and the server must keep serving the old one.
            (tmp_path / "new.key").write_bytes(new_key)
            (tmp_path / "new.pem").write_bytes(new_cert)
            os.replace(tmp_path / "new.key", own_server.key)
            os.replace(tmp_path / "new.pem", own_server.cert)
            served = wait_for(lambda: (c := _served_certificate(api)).subject.rfc4514_string() == "CN=renewed server"
                              and c, timeout=10, what="the renewed certificate")
            assert served.public_bytes(serialization.Encoding.PEM) == new_cert
            assert own_server.proc.poll() is None  # the same process: no restart
            gate.touch()
            assert follower.read() == b"second\n"  # the follower was not dropped
        finally:
            conn.close()
        assert "the server's certificate or key changed" in own_server.log()
        assert "the server's certificate" in own_server.log() and "expires in 3 days" in own_server.log()

    def test_sighup_reloads_at_once_and_keeps_connections(self, demo_pool, own_server, tmp_path):
        cert, key = member(demo_pool, tmp_path, "hugo")
        api = Api(own_server.url, cert, key, demo_pool["ca"])
        kept = api.connection()
        kept.request("GET", "/v1/jobs")
        assert kept.getresponse().read()
        warned = own_server.log().count("expires in 3 days")  # at start
        assert warned
        own_server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: own_server.log().count("expires in 3 days") == 2 * warned, timeout=10,
                 what="the reload's expiry warnings")
        assert "SIGHUP: reloading" in own_server.log() and own_server.proc.poll() is None
        kept.request("GET", "/v1/jobs")  # the connection made before the reload still works
        assert kept.getresponse().status == 200
        kept.close()
        assert api("GET", "/v1/jobs").status == 200
