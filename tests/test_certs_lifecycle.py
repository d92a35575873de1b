"""A team's certificates: ``jobber certs issue``, ``list``, ``revoke`` and expiry warnings.

Real certificates from cryptography, checked by ``Certificate.from_pem``, by openssl and
through the CLI; the server's side (a real handshake) is in test_certs_server.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from certfactory import openssl_verify, require_openssl
from jobber import Certificate, CertificateError
from jobber._certificates.demo import init_demo
from jobber._certificates.issue import issue_client
from jobber._certificates.lifecycle import expiry_warning, revoke, revoked_on


@pytest.fixture
def pool(tmp_path) -> dict[str, Path]:
    """A fresh demo pool (its CA key at ROOT/ca.key), as JOBBER_ROOT for the CLI."""
    return init_demo(tmp_path / "demo")


def jobber(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "JOBBER_ROOT": str(root), **(env or {})})


class TestIssue:
    def test_issued_certificate_is_a_client_identity_of_the_pool(self, pool, tmp_path):
        out = jobber(pool["root"], "certs", "issue", "alice", "--days", "30", "--out", str(tmp_path / "team"))
        assert out.returncode == 0, out.stderr
        cert_path, key_path = tmp_path / "team" / "alice.pem", tmp_path / "team" / "alice.key"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        cert = Certificate.from_pem(cert_path.read_bytes(), root=pool["root"])
        assert cert.subject == "CN=alice,O=jobber demo" and cert.issuer == "CN=jobber demo CA,O=jobber demo"
        assert f"sha256       {cert.hash()}" in out.stdout
        assert timedelta(days=29) < cert.not_after - datetime.now(timezone.utc) <= timedelta(days=30)
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert key.public_key() == cert._cert.public_key()

    def test_extensions_are_those_of_a_tls_client(self, pool, tmp_path):
        paths = issue_client("bob", pool["root"], out=tmp_path)
        parsed = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
        ca = x509.load_pem_x509_certificate(pool["ca"].read_bytes())
        ext = {e.oid: e for e in parsed.extensions}
        assert ext[ExtensionOID.BASIC_CONSTRAINTS].critical and not ext[ExtensionOID.BASIC_CONSTRAINTS].value.ca
        usage = ext[ExtensionOID.KEY_USAGE]
        assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
        assert list(ext[ExtensionOID.EXTENDED_KEY_USAGE].value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert ext[ExtensionOID.SUBJECT_KEY_IDENTIFIER].value == x509.SubjectKeyIdentifier.from_public_key(
            parsed.public_key())
        assert (ext[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier
                == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)

    def test_openssl_verifies_it_as_a_client_against_the_pool(self, pool, tmp_path):
        require_openssl()
        paths = issue_client("carol", pool["root"], out=tmp_path)
        ok, why = openssl_verify(pool["pool_ca"], paths["cert"])
        assert ok, why

    def test_refuses_to_overwrite_without_force(self, pool, tmp_path):
        issue_client("dan", pool["root"], out=tmp_path)
        out = jobber(pool["root"], "certs", "issue", "dan", "--out", str(tmp_path))
        assert out.returncode == 1 and "dan.pem exists: pass --force" in out.stderr
        first = (tmp_path / "dan.pem").read_bytes()
        issue_client("dan", pool["root"], out=tmp_path, force=True)
        assert (tmp_path / "dan.pem").read_bytes() != first

    @pytest.mark.parametrize("name", ["", "../evil", ".hidden", "a b", "x" * 65])
    def test_refuses_a_name_that_is_no_file_name(self, pool, tmp_path, name):
        with pytest.raises(CertificateError, match="cannot name a certificate"):
            issue_client(name, pool["root"], out=tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_refuses_bad_days(self, pool, tmp_path):
        out = jobber(pool["root"], "certs", "issue", "eve", "--days", "0", "--out", str(tmp_path))
        assert out.returncode == 1 and "at least 1 day" in out.stderr and "Traceback" not in out.stderr

    def test_without_the_ca_key_says_to_pass_it(self, pool, tmp_path):
        pool["ca_key"].unlink()
        out = jobber(pool["root"], "certs", "issue", "eve", "--out", str(tmp_path))
        assert out.returncode == 1 and "no CA key at" in out.stderr and "--ca-key" in out.stderr

    def test_a_key_of_no_pool_ca_is_refused(self, pool, tmp_path):
        stranger = tmp_path / "stranger.key"
        stranger.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        with pytest.raises(CertificateError, match="no CA in the pool .* has the public key of"):
            issue_client("eve", pool["root"], ca_key=stranger, out=tmp_path / "out")

    def test_a_key_that_is_not_a_key_is_refused(self, pool, tmp_path):
        with pytest.raises(CertificateError, match="is not a PEM private key"):
            issue_client("eve", pool["root"], ca_key=pool["ca"], out=tmp_path / "out")

    def test_an_expired_ca_issues_nothing(self, pool, tmp_path):
        later = datetime.now(timezone.utc) + timedelta(days=400)  # the demo CA lasts 365 days
        with pytest.raises(CertificateError, match="expired on .*: put a renewed CA in the pool"):
            issue_client("old", pool["root"], out=tmp_path / "out", now=later)
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("days", [10000, 10**12])
    def test_validity_ends_with_the_cas(self, pool, tmp_path, days):
        paths = issue_client("frank", pool["root"], days=days, out=tmp_path)
        ca = x509.load_pem_x509_certificate(pool["ca"].read_bytes())
        cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
        assert cert.not_valid_after_utc == ca.not_valid_after_utc


class TestRevoke:
    def test_from_pem_refuses_a_revoked_certificate_with_the_date(self, pool, tmp_path):
        paths = issue_client("alice", pool["root"], out=tmp_path)
        out = jobber(pool["root"], "certs", "revoke", str(paths["cert"]))
        assert out.returncode == 0, out.stderr
        today = datetime.now(timezone.utc)
        with pytest.raises(CertificateError, match=f"revoked on {today:%Y-%m-%d}"):
            Certificate.from_pem(paths["cert"].read_bytes(), root=pool["root"])
        Certificate.from_file(pool["client"], root=pool["root"])  # another member is untouched

    def test_revoke_by_hash_with_openssl_colons(self, pool):
        cert = Certificate.from_file(pool["client2"], root=pool["root"])
        colons = ":".join(cert.hash()[i:i + 2] for i in range(0, 64, 2)).upper()
        out = jobber(pool["root"], "certs", "revoke", colons)
        assert out.returncode == 0, out.stderr
        record = pool["root"] / "pool" / "revoked" / cert.hash()
        assert record.read_text().startswith(f"{datetime.now(timezone.utc):%Y-%m-%d}T")
        assert revoked_on(pool["root"], cert.hash()) is not None
        assert "revoked on" in jobber(pool["root"], "certs", "check", str(pool["client2"])).stderr

    def test_revoking_twice_keeps_the_first_date(self, pool):
        sha = Certificate.from_file(pool["client"], root=pool["root"]).hash()
        first = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        revoke(pool["root"], sha, "CN=demo-user", now=first)
        assert revoke(pool["root"], sha, "CN=demo-user")[1] == first
        assert revoked_on(pool["root"], sha) == first

    def test_a_hand_made_record_revokes_too(self, pool):
        sha = Certificate.from_file(pool["client"], root=pool["root"]).hash()
        (pool["root"] / "pool" / "revoked").mkdir()
        (pool["root"] / "pool" / "revoked" / sha).touch()
        with pytest.raises(CertificateError, match="revoked on"):
            Certificate.from_file(pool["client"], root=pool["root"])

    def test_the_pool_still_loads_with_its_revocations_and_copies(self, pool, tmp_path):
        paths = issue_client("gus", pool["root"], out=tmp_path)
        jobber(pool["root"], "certs", "issue", "hal", "--out", str(tmp_path))
        jobber(pool["root"], "certs", "revoke", str(paths["cert"]))
        from jobber import get_client_certificates

        assert [c.subject for c in get_client_certificates(pool["root"])] == ["CN=jobber demo CA,O=jobber demo"]

    def test_something_neither_file_nor_hash_is_refused(self, pool):
        out = jobber(pool["root"], "certs", "revoke", "nothing-here")
        assert out.returncode == 1 and "neither a certificate file nor a SHA-256 hash" in out.stderr

    def test_an_unwritable_pool_says_who_can_revoke(self, pool):
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere: the refusal needs an ordinary user")
        os.chmod(pool["root"] / "pool", 0o555)
        try:
            out = jobber(pool["root"], "certs", "revoke", str(pool["client"]))
        finally:
            os.chmod(pool["root"] / "pool", 0o755)
        assert out.returncode == 1 and "cannot record the revocation" in out.stderr


class TestList:
    def test_lists_cas_issued_and_revoked_with_full_hashes(self, pool, tmp_path):
        alice = issue_client("alice", pool["root"], out=tmp_path)
        issue_client("bob", pool["root"], days=3, out=tmp_path)
        jobber(pool["root"], "certs", "revoke", str(alice["cert"]))
        stranger = Certificate.from_file(pool["client2"], root=pool["root"]).hash()
        jobber(pool["root"], "certs", "revoke", stranger)  # issued elsewhere: known by its record only
        out = jobber(pool["root"], "certs", "list", "--json")
        assert out.returncode == 0, out.stderr
        items = {item["subject"] or item["sha256"]: item for item in json.loads(out.stdout)["identities"]}
        ca_hash = Certificate(x509.load_pem_x509_certificate(pool["ca"].read_bytes())).hash()
        assert items["CN=jobber demo CA,O=jobber demo"]["kind"] == "ca"
        assert items["CN=jobber demo CA,O=jobber demo"]["sha256"] == ca_hash
        today = f"{datetime.now(timezone.utc):%Y-%m-%d}"
        assert items["CN=alice,O=jobber demo"]["revoked_on"] == today
        assert items["CN=bob,O=jobber demo"]["kind"] == "issued"
        assert "expires in 3 days" in items["CN=bob,O=jobber demo"]["warning"]
        assert items[stranger]["kind"] == "revoked"
        table = jobber(pool["root"], "certs", "list").stdout
        assert f"revoked {today}" in table and "EXPIRES SOON" in table and ca_hash in table
        assert jobber(pool["root"], "certs").stdout == table  # `jobber certs` alone lists too

    def test_pinned_certificates_are_listed_as_pinned(self, pool):
        (pool["root"] / "pool" / "me.pem").write_bytes(pool["client"].read_bytes())
        items = json.loads(jobber(pool["root"], "certs", "list", "--json").stdout)["identities"]
        assert {item["subject"]: item["kind"] for item in items}["CN=demo-user,O=jobber demo"] == "pinned"

    def test_an_empty_pool_says_how_to_fill_it(self, tmp_path):
        out = jobber(tmp_path, "certs", "list")
        assert out.returncode == 0 and "is empty" in out.stdout


class TestExpiry:
    NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)

    @pytest.mark.parametrize(("left", "expected"), [
        (timedelta(days=15), None),
        (timedelta(days=14), "expires in 14 days"),
        (timedelta(days=3), "expires in 3 days"),
        (timedelta(hours=30), "expires in 1 day "),
        (timedelta(hours=5), "expires within a day"),
        (timedelta(seconds=-1), "expired on 2026-06-01 11:59 UTC"),
    ])
    def test_warns_within_14_days(self, left, expected):
        warning = expiry_warning(self.NOW + left, self.NOW)
        assert warning is None if expected is None else expected in warning

    def test_check_warns(self, pool, tmp_path):
        paths = issue_client("ivy", pool["root"], days=3, out=tmp_path)
        out = jobber(pool["root"], "certs", "check", str(paths["cert"]))
        assert out.returncode == 0 and "  warning  this certificate expires in 3 days" in out.stdout
        assert "warning" not in jobber(pool["root"], "certs", "check", str(pool["client"])).stdout

    def test_doctor_warns(self, pool, tmp_path):
        paths = issue_client("joe", pool["root"], days=3, out=tmp_path)
        out = jobber(pool["root"], "doctor", "--json", env={"JOBBER_CERT": str(paths["cert"])})
        checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
        assert not checks["identity expiry"]["ok"] and "expires in 3 days" in checks["identity expiry"]["found"]
        out = jobber(pool["root"], "doctor", "--json", env={"JOBBER_CERT": str(pool["client"])})
        assert "identity expiry" not in {c["name"] for c in json.loads(out.stdout)["checks"]}

    def test_jobber_cert_magic_warns(self, pool, tmp_path, monkeypatch):
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.utils.capture import capture_output

        paths = issue_client("kim", pool["root"], days=3, out=tmp_path)
        monkeypatch.setenv("JOBBER_ROOT", str(pool["root"]))
        shell = InteractiveShell.instance()
        shell.extension_manager.load_extension("jobber_magics")
        try:
            with capture_output() as captured:
                assert shell.run_cell(f"%jobber_cert {paths['cert']}").success
            with capture_output() as quiet:
                assert shell.run_cell(f"%jobber_cert {pool['client']}").success
        finally:
            shell.extension_manager.unload_extension("jobber_magics")
            shell.reset(new_session=False)
        assert captured.stdout.splitlines()[1].startswith("Warning: this certificate expires in 3 days")
        assert "Warning" not in quiet.stdout


class TestJobsOfARevokedIdentity:
    def test_an_administrator_lists_and_stops_them(self, pool, tmp_path, monkeypatch):
        paths = issue_client("leaver", pool["root"], out=tmp_path)
        cert = Certificate.from_file(paths["cert"], root=pool["root"])
        monkeypatch.setenv("JOBBER_ROOT", str(pool["root"]))
        job = cert.new_job("sleep 300")
        job.start()
        revoke(pool["root"], cert.hash(), cert.subject)
        listed = jobber(pool["root"], "certs", "jobs", cert.hash())
        assert listed.returncode == 0, listed.stderr
        assert f"{job.id:>6}  running" in listed.stdout and "sleep 300" in listed.stdout
        stopped = jobber(pool["root"], "certs", "jobs", cert.hash(), "--stop", "--grace", "1")
        assert stopped.returncode == 0, stopped.stderr
        assert job.status().state == "stopped"
        assert job.path.is_dir()  # kept, log and all

    def test_a_bad_hash_says_what_to_pass(self, pool):
        out = jobber(pool["root"], "certs", "jobs", "alice")
        assert out.returncode == 1 and "not a SHA-256 hash" in out.stderr


class TestRevocationList:
    """The CRL ``jobber certs revoke`` writes with the CA's key, as OpenSSL reads it."""

    def _openssl_crl_verdict(self, pool, leaf: Path, crl: Path, tmp_path: Path) -> tuple[bool, str]:
        require_openssl()
        out = subprocess.run(["openssl", "verify", "-crl_check", "-purpose", "sslclient", "-no-CApath",
                              "-no-CAstore", "-CAfile", str(pool["pool_ca"]), "-CRLfile", str(crl), str(leaf)],
                             capture_output=True, text=True)
        return out.returncode == 0, out.stdout + out.stderr

    def test_openssl_refuses_the_revoked_and_admits_the_others(self, pool, tmp_path):
        gone = issue_client("gone", pool["root"], out=tmp_path)["cert"]
        stays = issue_client("stays", pool["root"], out=tmp_path)["cert"]
        out = jobber(pool["root"], "certs", "revoke", str(gone))
        assert out.returncode == 0, out.stderr
        assert "refuses its next TLS handshake" in out.stdout, out.stdout
        (crl,) = (pool["root"] / "pool" / "revoked").glob("*.crl.pem")
        ok, why = self._openssl_crl_verdict(pool, gone, crl, tmp_path)
        assert not ok and "certificate revoked" in why
        ok, why = self._openssl_crl_verdict(pool, stays, crl, tmp_path)
        assert ok, why

    def test_a_revocation_by_hash_of_an_issued_certificate_is_listed(self, pool, tmp_path):
        gone = issue_client("byhash", pool["root"], out=tmp_path)["cert"]
        sha = Certificate.from_file(gone, root=pool["root"]).hash()
        out = jobber(pool["root"], "certs", "revoke", sha)  # its copy in pool/issued gives the serial
        assert "refuses its next TLS handshake" in out.stdout, out.stdout
        (crl,) = (pool["root"] / "pool" / "revoked").glob("*.crl.pem")
        assert not self._openssl_crl_verdict(pool, gone, crl, tmp_path)[0]

    def test_an_unknown_hash_cannot_be_listed_and_says_so(self, pool):
        out = jobber(pool["root"], "certs", "revoke", "ab" * 32)
        assert out.returncode == 0, out.stderr
        assert "refuses it from its next request (403)" in out.stdout and "known only by its hash" in out.stdout

    def test_without_a_ca_key_it_says_the_handshake_still_passes(self, pool, tmp_path):
        gone = issue_client("nokey", pool["root"], out=tmp_path)["cert"]
        pool["ca_key"].rename(tmp_path / "elsewhere.key")
        out = jobber(pool["root"], "certs", "revoke", str(gone))
        assert out.returncode == 0, out.stderr
        assert "after a TLS handshake that still succeeds: no revocation list was written" in out.stdout
        assert "--ca-key" in out.stdout
        assert not list((pool["root"] / "pool" / "revoked").glob("*.crl.pem"))

    def test_a_crl_signed_by_no_pool_ca_is_not_used(self, pool, tmp_path):
        from jobber._certificates.crl import handshake_anchors, handshake_crls, write_crl
        from jobber._certificates.pool import load_pool

        gone = issue_client("forged", pool["root"], out=tmp_path)["cert"]
        sha = Certificate.from_file(gone, root=pool["root"]).hash()
        revoke(pool["root"], sha, "CN=forged", certificate=gone.read_bytes())
        crl, listed = write_crl(pool["root"])
        assert listed == [sha]
        loaded = load_pool(pool["root"] / "pool")
        pem, why_not = handshake_crls(pool["root"], loaded, handshake_anchors(loaded, pool["root"]))
        assert pem.startswith("-----BEGIN X509 CRL-----") and why_not is None
        other = init_demo(tmp_path / "other")  # another CA of the same name signs a CRL put in its place
        crl.unlink()
        forged, _ = write_crl(other["root"])
        forged.rename(crl)
        pem, why_not = handshake_crls(pool["root"], loaded, handshake_anchors(loaded, pool["root"]))
        assert pem == "" and "signed by no CA of the pool" in why_not

    def test_a_ca_without_crl_sign_writes_none(self, pool, tmp_path):
        from jobber._certificates.crl import write_crl

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "no crl CA")])
        now = datetime.now(timezone.utc)
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
              .not_valid_after(now + timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
              .sign(key, hashes.SHA256()))
        (pool["root"] / "pool" / "second.ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "second.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
        with pytest.raises(CertificateError, match="without cRLSign"):
            write_crl(pool["root"], tmp_path / "second.key")
