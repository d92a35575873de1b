"""A team's certificates on a real jobber server over loopback mTLS.

An issued certificate passes the handshake (Python's ssl and curl); a revoked one is
refused by the running server with no restart: at its next TLS handshake when the CA's
revocation list could be written (or the pool pins it), else at its next request (403),
and on kept-alive connections; its jobs stay on disk; the server warns about certificates near expiry in its log, and serves
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
import ssl
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


def _handshake_refusal(api: Api) -> str | None:
    """Why a new connection with ``api``'s certificate is refused at the TLS handshake, or None.

    In TLS 1.3 the client's side of the handshake ends before the server has judged its
    certificate: the server's alert arrives with the first read, before any HTTP response.
    """
    try:
        with socket.create_connection((api.host, api.port), timeout=10) as raw, \
                api.context.wrap_socket(raw, server_hostname=api.host) as tls:
            tls.sendall(b"GET /v1/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = tls.recv(64)
    except ssl.SSLError as err:
        return err.reason or str(err)
    assert first.startswith(b"HTTP/1.1 "), first
    return None


def _curl(url: str, cert: Path, key: Path, ca: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--cert", str(cert), "--key", str(key), "--cacert", str(ca),
                           f"{url}/v1/identity"], capture_output=True, text=True, timeout=30)


def _revoke_cli(root: Path, target: Path | str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobber", "certs", "revoke", str(target), *options],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "JOBBER_ROOT": str(root)})


class TestRevocation:
    def test_a_running_server_refuses_its_next_handshake_and_keeps_its_jobs(self, demo_pool, team_server, tmp_path,
                                                                             gate):
        cert, key = member(demo_pool, tmp_path, "carol")
        other, other_key = member(demo_pool, tmp_path, "ivan")
        api, others = Api(team_server.url, cert, key, demo_pool["ca"]), Api(team_server.url, other, other_key,
                                                                            demo_pool["ca"])
        job = api("POST", "/v1/jobs", {"command": "true"})
        assert job.status == 201, job.body
        assert api("GET", f"/v1/jobs/{job.json()['id']}?wait=30").status == 200
        kept = api.connection()  # a connection that stays open across the revocation
        kept.request("GET", "/v1/jobs")
        first = kept.getresponse()
        assert first.status == 200 and first.read()
        followed = others("POST", "/v1/jobs", {"command": f"echo first; while [ ! -e {gate} ]; do sleep 0.02; "
                                                          f"done; echo second"}).json()
        conn, follower = others.stream(f"/v1/jobs/{followed['id']}/log?follow=1")
        try:
            assert follower.status == 200 and follower.read1(1024) == b"first\n"

            sha = Certificate.from_file(cert, root=demo_pool["root"]).hash()
            out = _revoke_cli(demo_pool["root"], cert)  # the demo CA's key is ROOT/ca.key: a CRL is written
            assert out.returncode == 0, out.stderr
            assert "refuses its next TLS handshake" in out.stdout, out.stdout
            # Within 5 s, no restart: a new handshake with it is refused, by OpenSSL, saying why.
            refused = poll(lambda: _handshake_refusal(api), timeout=5)
            assert refused, "a revoked certificate still passed the TLS handshake 5 s later"
            assert "CERTIFICATE_REVOKED" in refused
            if shutil.which("curl") is not None:
                by_curl = _curl(team_server.url, cert, key, demo_pool["ca"])
                assert by_curl.returncode != 0 and "revoked" in by_curl.stderr, by_curl.stderr
                assert by_curl.stdout == ""
            kept.request("GET", "/v1/jobs")  # a connection made before: its next request gets 403
            second = kept.getresponse()
            assert second.status == 403 and b"revoked on" in second.read()
            kept.close()
            assert _handshake_refusal(others) is None  # another member's new connections pass
            assert others("GET", "/v1/identity").status == 200
            gate.touch()
            assert follower.read() == b"second\n"  # an established follower is kept
        finally:
            conn.close()
        assert (team_server.jobs_dir / sha / str(job.json()["id"])).is_dir()  # its jobs are kept
        assert "certificate revoked" in team_server.log()

    def test_without_the_ca_key_the_next_request_is_refused(self, demo_pool, team_server, tmp_path):
        cert, key = member(demo_pool, tmp_path, "judy")
        api = Api(team_server.url, cert, key, demo_pool["ca"])
        out = _revoke_cli(demo_pool["root"], Certificate.from_file(cert, root=demo_pool["root"]).hash(),
                          "--ca-key", str(tmp_path / "no-such.key"))
        assert out.returncode == 0, out.stderr
        assert "refuses it from its next request (403)" in out.stdout and "no revocation list was written" \
            in out.stdout, out.stdout
        refused = poll(lambda: (r := api("GET", "/v1/jobs")).status == 403 and r, timeout=5)
        assert refused, "a revoked certificate was still admitted 5 s later"
        assert "revoked on" in refused.json()["error"] and refused.json()["type"] == "CertificateError"

    def test_another_member_is_still_admitted(self, demo_pool, team_server, tmp_path):
        gone, gone_key = member(demo_pool, tmp_path, "dave")
        stays, stays_key = member(demo_pool, tmp_path, "erin")
        revoke(demo_pool["root"], Certificate.from_file(gone, root=demo_pool["root"]).hash(), "CN=dave")
        assert wait_for(lambda: Api(team_server.url, gone, gone_key, demo_pool["ca"])("GET", "/v1/jobs").status == 403,
                        timeout=5, what="the revocation to apply")
        assert Api(team_server.url, stays, stays_key, demo_pool["ca"])("GET", "/v1/jobs").status == 200


class TestRevokedPin:
    def test_a_revoked_pinned_certificate_fails_its_next_handshake(self, demo_pool, tmp_path):
        root = tmp_path / "root"
        (root / "pool").mkdir(parents=True)
        shutil.copy(demo_pool["ca"], root / "pool" / "ca.pem")
        shutil.copy(demo_pool["ca_key"], root / "ca.key")
        pinned, pinned_key = _self_signed("kim", tmp_path)
        shutil.copy(pinned, root / "pool" / "kim.pem")
        stays, stays_key = _self_signed("max", tmp_path)
        shutil.copy(stays, root / "pool" / "max.pem")
        other, other_key = member({**demo_pool, "root": root}, tmp_path, "lena")
        proc = ServerProcess(demo_pool["server"], demo_pool["server_key"], root, tmp_path / "jobs").start()
        try:
            api = Api(proc.url, pinned, pinned_key, demo_pool["ca"])
            assert _handshake_refusal(api) is None
            out = _revoke_cli(root, pinned)
            assert out.returncode == 0 and "left out of the server's trust store" in out.stdout, out.stdout
            assert wait_for(lambda: _handshake_refusal(api), timeout=5, what="the handshake to be refused")
            if shutil.which("curl") is not None:
                assert _curl(proc.url, pinned, pinned_key, demo_pool["ca"]).returncode != 0
            assert _handshake_refusal(Api(proc.url, stays, stays_key, demo_pool["ca"])) is None
            # The CA's members: a pinned certificate in the pool keeps CRLs out of the handshake
            # (OpenSSL would want one for it too), so a revoked member gets 403 after it.
            assert Api(proc.url, other, other_key, demo_pool["ca"])("GET", "/v1/identity").status == 200
            out = _revoke_cli(root, other, "--ca-key", str(demo_pool["ca_key"]))
            assert "refuses it from its next request (403)" in out.stdout and "CN=max" in out.stdout, out.stdout
            assert wait_for(lambda: Api(proc.url, other, other_key, demo_pool["ca"])("GET", "/v1/jobs").status
                            == 403, timeout=5, what="the revocation to apply")
        finally:
            proc.stop()
        assert not _stop_everything(tmp_path / "jobs"), "cgroups left behind"
        assert "does not check revocation lists" in proc.log()


def _self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed client certificate without CA powers (pinned one by one), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    paths = directory / f"{name}.pem", directory / f"{name}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


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
