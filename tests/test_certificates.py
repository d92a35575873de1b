"""Tests for jobber._certificates and jobber._certificates.demo.

TestOpenSSLAgreement is the contract with the TLS layer: for every certificate of the
test set, Certificate.from_pem, `openssl verify -purpose sslclient` and a real TLS 1.3
handshake over loopback (the server's context: tls_trust_store(root) as cafile,
CERT_REQUIRED) must agree, but for leaves of pinned self-signed certificates that OpenSSL
takes as CAs, which only from_pem refuses (the server runs it on every request).
TestPinnedMeansPinned: a pinned certificate identifies only itself, CA:TRUE or not.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import pickle
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfactory import (
    CLIENT_AUTH,
    EXPIRED,
    NOT_YET_VALID,
    SERVER_AUTH,
    CertFactory,
    InCaFile,
    Issued,
    make_key,
    openssl_verify,
)
from jobber._certificates import (
    MAX_PEM_BYTES,
    Certificate,
    _clear_cache,
    _load_pool,
    default_root,
    get_client_certificates,
    tls_trust_store,
)
from jobber._certificates.demo import DEMO_FILES, init_demo
from jobber._errors import CertificateError, JobberError

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command line is not installed")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def ca(certs: CertFactory) -> Issued:
    return certs.ca("Test CA")


@pytest.fixture(scope="session")
def root(certs: CertFactory, ca: Issued) -> Path:
    return certs.root(ca)


@pytest.fixture(scope="session")
def alice(certs: CertFactory, ca: Issued) -> Issued:
    return certs.leaf("alice", issuer=ca)


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


class TestDefaultRoot:
    def test_explicit_root_wins_and_expands_user(self, monkeypatch, tmp_path):
        monkeypatch.setenv("JOBBER_ROOT", str(tmp_path / "env"))
        monkeypatch.setenv("HOME", str(tmp_path))
        assert default_root(tmp_path / "r") == tmp_path / "r"
        assert default_root("~/x") == tmp_path / "x"

    def test_environment_then_home(self, monkeypatch, tmp_path):
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("JOBBER_ROOT", str(tmp_path / "env"))
        assert default_root() == tmp_path / "env"
        monkeypatch.setenv("JOBBER_ROOT", "")
        assert default_root() == tmp_path / ".jobber"
        monkeypatch.delenv("JOBBER_ROOT")
        assert default_root() == tmp_path / ".jobber"


class TestGetClientCertificates:
    def test_missing_or_empty_pool_is_empty(self, tmp_path):
        assert get_client_certificates(tmp_path / "nowhere") == []
        (tmp_path / "pool").mkdir()
        assert get_client_certificates(tmp_path) == []

    def test_every_certificate_of_every_pem_file_once(self, certs, tmp_path):
        a, b, c = certs.ca("A"), certs.ca("B"), certs.ca("C")
        pool = tmp_path / "pool"
        pool.mkdir()
        (pool / "2-bundle.pem").write_bytes(b"# comment\n" + b.cert_pem + b"\n" + c.cert_pem)
        (pool / "1-a.pem").write_bytes(a.cert_pem)
        (pool / "3-again.pem").write_bytes(a.cert_pem)  # a duplicate is listed once
        (pool / "notes.txt").write_text("not a pem file")  # only *.pem counts
        (pool / ".editor-swap.pem").write_text("junk")  # hidden files are skipped
        listed = get_client_certificates(tmp_path)
        assert [cert.common_name for cert in listed] == ["A", "B", "C"]
        assert all(isinstance(cert, Certificate) for cert in listed)

    def test_factory_bundle_pools_hold_every_ca(self, certs):
        a, b = certs.ca("A"), certs.ca("B")
        root = certs.root(a, b, files="bundle")
        assert [p.name for p in (root / "pool").iterdir()] == ["bundle.pem"]
        assert [c.common_name for c in get_client_certificates(root)] == ["A", "B"]

    def test_root_defaults_to_environment(self, monkeypatch, root, ca):
        monkeypatch.setenv("JOBBER_ROOT", str(root))
        assert [cert.hash() for cert in get_client_certificates()] == [
            hashlib.sha256(ca.der).hexdigest()]

    def test_expired_pool_certificates_are_listed(self, certs):
        old = certs.ca("Old CA", valid=EXPIRED)
        assert get_client_certificates(certs.root(old)) == [Certificate(old.cert)]

    def test_pool_that_is_a_file(self, tmp_path):
        (tmp_path / "pool").write_text("oops")
        with pytest.raises(CertificateError, match="is not a directory: make it a directory"):
            get_client_certificates(tmp_path)

    def test_pool_file_that_is_a_directory(self, tmp_path):
        (tmp_path / "pool" / "ca.pem").mkdir(parents=True)
        with pytest.raises(CertificateError, match="not a regular file") as caught:
            get_client_certificates(tmp_path)
        assert caught.value.path == str(tmp_path / "pool" / "ca.pem")

    def test_pool_file_that_is_a_fifo_does_not_hang(self, tmp_path):
        (tmp_path / "pool").mkdir()
        os.mkfifo(tmp_path / "pool" / "ca.pem")
        with pytest.raises(CertificateError, match="not a regular file"):
            get_client_certificates(tmp_path)

    @pytest.mark.parametrize("content, message", [
        (b"", "holds no complete PEM certificate"),
        (b"hello", "holds no complete PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "holds no complete PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
         "base64 of the 1st certificate of the pool file .* is corrupt"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "corrupt DER"),
    ])
    def test_pool_file_that_is_not_pem_certificates(self, tmp_path, content, message):
        (tmp_path / "pool").mkdir()
        (tmp_path / "pool" / "bad.pem").write_bytes(content)
        with pytest.raises(CertificateError, match=message) as caught:
            get_client_certificates(tmp_path)
        assert caught.value.path == str(tmp_path / "pool" / "bad.pem")
        assert "fix or remove it" in str(caught.value) or "again" in str(caught.value)

    def test_pool_file_holding_a_private_key(self, tmp_path, ca):
        (tmp_path / "pool").mkdir()
        (tmp_path / "pool" / "ca.pem").write_bytes(ca.cert_pem + ca.key_pem)
        with pytest.raises(CertificateError, match="holds PRIVATE KEY; pool files hold only"):
            get_client_certificates(tmp_path)

    @pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                        reason="needs root and setpriv to run a check as another user")
    @pytest.mark.parametrize("locked", ["pool", "pool/ca.pem"])
    def test_unreadable_pool(self, ca, locked):
        # Root reads everything, so the check runs as nobody (uid 65534) in a subprocess,
        # under /tmp: pytest's own temporary directories are closed to other users.
        base = Path(tempfile.mkdtemp(prefix="jobber-locked-"))
        try:
            base.chmod(0o755)
            (base / "pool").mkdir(mode=0o755)
            (base / "pool" / "ca.pem").write_bytes(ca.cert_pem)
            (base / locked).chmod(0o700 if locked == "pool" else 0o600)
            code = ("import jobber._certificates as c, jobber._errors as e\n"
                    f"try: c.get_client_certificates({str(base)!r})\n"
                    "except e.CertificateError as err: print(err.path, '|', err)\n")
            result = subprocess.run(
                ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                 sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                env={**os.environ, "HOME": "/"})
        finally:
            shutil.rmtree(base)
        if result.returncode != 0:
            pytest.skip(f"cannot run python as uid 65534 here: {result.stderr[-300:]}")
        path, _, message = result.stdout.partition(" | ")
        assert path == str(base / locked)
        assert "permission denied for uid 65534" in message
        assert "chmod a+r" in message

    def test_edits_are_seen_and_unchanged_pools_are_cached(self, certs, tmp_path):
        a, b = certs.ca("A"), certs.ca("B")
        (tmp_path / "pool").mkdir()
        pool_file = tmp_path / "pool" / "ca.pem"
        pool_file.write_bytes(a.cert_pem)
        first = _load_pool(tmp_path)
        assert _load_pool(tmp_path) is first  # nothing changed: nothing re-parsed
        pool_file.write_bytes(b.cert_pem + a.cert_pem)
        assert [c.common_name for c in get_client_certificates(tmp_path)] == ["B", "A"]
        pool_file.unlink()
        assert get_client_certificates(tmp_path) == []
        _clear_cache()
        assert get_client_certificates(tmp_path) == []


@dataclass
class Handshake:
    server_error: BaseException | None = None  # the server side decides the verdict
    client_error: BaseException | None = None
    peer_der: bytes | None = None  # the client certificate the server accepted
    version: str | None = None


def tls_handshake(server: ssl.SSLContext, client: ssl.SSLContext,
                  server_hostname: str | None = None) -> Handshake:
    """One TLS handshake over loopback.

    With TLS 1.3 the client learns that its certificate was refused only when it next
    reads, so it reads the server's greeting.
    """
    result = Handshake()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server.wrap_socket(conn, server_side=True) as tls:
                    result.peer_der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"hi")
            except (ssl.SSLError, OSError) as err:
                result.server_error = err

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                    client.wrap_socket(raw, server_hostname=server_hostname) as tls:
                result.version = tls.version()
                assert tls.recv(2) == b"hi"
        except (ssl.SSLError, OSError) as err:
            result.client_error = err
        thread.join(10)
    return result


def server_context(cert: Path, key: Path, pool_pem: Path) -> ssl.SSLContext:
    """The context a jobber server builds: TLS 1.3, its trust store as cafile, CERT_REQUIRED."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=pool_pem)
    context.load_cert_chain(cert, key)
    return context


@dataclass
class Case:
    """A pool and a presented certificate (with its chain), and what must happen."""

    pool: list[Issued | InCaFile]
    presented: Issued
    refused: str | None = None  # None: accepted; else a regex the message must match
    tls_only: bool = False  # refused, but TLS accepts it: signed by a loose pin


CASES: dict[str, Callable[[CertFactory, Issued], Case]] = {}


def case(build: Callable[[CertFactory, Issued], Case]) -> Callable[[CertFactory, Issued], Case]:
    """Register a case for TestOpenSSLAgreement under its function name."""
    CASES[build.__name__] = build
    return build


def _with_chain(leaf: Issued, *chain: Issued) -> Issued:
    return Issued(leaf.cert, leaf.key, [c.cert for c in chain])


def _key_usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(["digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"], False)
    return x509.KeyUsage(**{**flags, **on})


@case
def p256_leaf(f, ca):
    return Case([ca], f.leaf("a", issuer=ca))


@case
def openssl_v1_leaf(f, ca):
    return Case([ca], f.openssl_v1_leaf("bob", issuer=ca))


@case
def openssl_v1_leaf_of_v1_root(f, ca):
    root = f.openssl_v1_leaf("V1 Root", issuer=None)
    return Case([InCaFile(root)], f.openssl_v1_leaf("bob", issuer=root))


@case
def openssl_v1_leaf_of_req_x509_ca(f, ca):
    root = f.openssl_ca("OpenSSL CA")
    return Case([InCaFile(root)], f.openssl_v1_leaf("bob", issuer=root))


@case
def openssl_v3_client_leaf(f, ca):
    return Case([ca], f.openssl_v3("c", issuer=ca, extensions=(
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n")))


@case
def openssl_v3_server_leaf(f, ca):
    return Case([ca], f.openssl_v3("s", issuer=ca, extensions="extendedKeyUsage=serverAuth\n"),
                "not for TLS client authentication .*without clientAuth")


@case
def openssl_intermediate_in_pem(f, ca):
    inter = f.openssl_intermediate("OpenSSL Intermediate", issuer=ca)
    return Case([ca], f.openssl_v1_leaf("deep", issuer=inter))


@case
def intermediate_in_pem(f, ca):
    return Case([ca], f.leaf("deep", issuer=f.ca("Intermediate", issuer=ca)))


@case
def intermediate_missing(f, ca):
    leaf = f.leaf("deep", issuer=f.ca("Intermediate", issuer=ca))
    return Case([ca], Issued(leaf.cert, leaf.key),
                "issued by CN=Intermediate, which is not in the pool")


@case
def intermediate_in_pool(f, ca):
    inter = f.ca("Pool Intermediate", issuer=ca)
    return Case([ca, inter], _with_chain(f.leaf("deep", issuer=inter)))


@case
def intermediate_in_pool_without_its_root(f, ca):
    inter = f.ca("Pool Intermediate", issuer=ca)
    return Case([inter], _with_chain(f.leaf("deep", issuer=inter)),
                "Pool Intermediate is in the pool .* but is not self-signed")


@case
def root_repeated_in_pem(f, ca):
    inter = f.ca("Intermediate", issuer=ca)
    return Case([ca], _with_chain(f.leaf("deep", issuer=inter), inter, ca))


@case
def version1_intermediate(f, ca):
    inter = f.openssl_v1_leaf("V1 Intermediate", issuer=ca)
    return Case([ca], f.leaf("deep", issuer=inter), "V1 Intermediate from the PEM .*not a CA")


@case
def intermediate_with_ca_false(f, ca):
    return Case([ca], f.leaf("deep", issuer=f.leaf("Not A CA", issuer=ca)),
                "Not A CA from the PEM .*not a CA")


@case
def pathlen_0_root_over_an_intermediate(f, ca):
    root = f.ca("Root pathlen 0", path_length=0)
    return Case([root], f.leaf("deep", issuer=f.ca("I", issuer=root)), "pathLenConstraint")


@case
def pathlen_1_root_over_an_intermediate(f, ca):
    root = f.ca("Root pathlen 1", path_length=1)
    return Case([root], f.leaf("deep", issuer=f.ca("I", issuer=root)))


@case
def expired_leaf(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, valid=EXPIRED),
                "certificate CN=x expired on 2021-01-01 00:00:00 UTC: get a new one")


@case
def leaf_not_yet_valid(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, valid=NOT_YET_VALID),
                "CN=x is not valid before 2090-01-01 00:00:00 UTC")


@case
def expired_pool_ca(f, ca):
    old = f.ca("Old CA", valid=EXPIRED)
    return Case([old], f.leaf("x", issuer=old),
                r"the CA CN=Old CA in the pool \(.*\) expired on 2021-01-01 00:00:00 UTC: renew it")


@case
def pool_ca_not_yet_valid(f, ca):
    new = f.ca("New CA", valid=NOT_YET_VALID)
    return Case([new], f.leaf("x", issuer=new), "the CA CN=New CA in the pool .*not valid before")


@case
def renewed_pool_ca_beside_its_expired_copy(f, ca):
    old = f.build(ca.cert.subject, key=ca.key, valid=EXPIRED, extensions=[
        (x509.BasicConstraints(ca=True, path_length=None), True)])
    return Case([old, ca], f.leaf("x", issuer=ca))


@case
def expired_intermediate(f, ca):
    inter = f.ca("Old Intermediate", issuer=ca, valid=EXPIRED)
    return Case([ca], f.leaf("x", issuer=inter), "Old Intermediate from the PEM expired")


@case
def foreign_ca(f, ca):
    return Case([ca], f.leaf("x", issuer=f.ca("Foreign CA")),
                "issued by CN=Foreign CA, which is not in the pool .*: copy the certificate")


@case
def chain_to_a_foreign_root(f, ca):
    foreign = f.ca("Foreign Root")
    inter = f.ca("Foreign Intermediate", issuer=foreign)
    return Case([ca], _with_chain(f.leaf("x", issuer=inter), inter, foreign),
                "ends at the self-signed CA CN=Foreign Root from the PEM")


@case
def bad_signature_under_the_pool_ca_name(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, signing_key=make_key()),
                "signature of CN=x does not verify with the key of the CA CN=Test CA in the "
                "pool .*signed by another key")


@case
def impostor_ca_without_key_identifiers(f, ca):
    return Case([ca], f.leaf("x", issuer=f.impostor(ca), key_ids=False), "does not verify")


@case
def impostor_ca_with_key_identifiers(f, ca):
    return Case([ca], f.leaf("x", issuer=f.impostor(ca)),
                "the pool has a CA of that name, but with another key")


@case
def pinned_self_signed_leaf(f, ca):
    me = f.leaf("me")
    return Case([ca, me], me)


@case
def self_signed_leaf_not_in_pool(f, ca):
    return Case([ca], f.leaf("me"), "self-signed and not in the pool .*: copy it into")


@case
def pinned_leaf_of_a_ca_outside_the_pool(f, ca):
    leaf = f.leaf("x", issuer=f.ca("Elsewhere CA"))
    return Case([leaf], leaf, "CN=x is in the pool .* but is not self-signed")


@case
def pinned_leaf_of_a_pool_ca(f, ca):
    leaf = f.leaf("x", issuer=ca)
    return Case([ca, leaf], leaf)


_PINNED = ("issued by CN={}, which is pinned in the pool as a client certificate, not "
           "trusted as a CA: to trust it as a CA, put it in .* in a file named ca.pem or "
           r"NAME.ca.pem \(it is in .*/00.pem\)")


@case
def pinned_req_x509_certificate(f, ca):
    me = f.openssl_req_x509("me")  # CA:TRUE, as openssl makes it by default
    return Case([me, ca], me)


@case
def leaf_of_a_pinned_req_x509_certificate(f, ca):
    me = f.openssl_req_x509("me")
    return Case([me, ca], f.leaf("mallory", issuer=me), _PINNED.format("me"), tls_only=True)


@case
def leaf_of_a_pinned_req_x509_certificate_sent_with_it(f, ca):
    me = f.openssl_req_x509("me")
    return Case([me, ca], _with_chain(f.leaf("mallory", issuer=me), me), _PINNED.format("me"),
                tls_only=True)


@case
def leaf_of_a_req_x509_certificate_in_a_ca_file(f, ca):
    me = f.openssl_req_x509("me")
    return Case([InCaFile(me), ca], f.leaf("mallory", issuer=me))


@case
def leaf_of_a_pinned_v1_self_signed_certificate(f, ca):
    me = f.openssl_v1_leaf("me", issuer=None)  # `openssl x509 -req -signkey`
    return Case([me, ca], f.openssl_v1_leaf("mallory", issuer=me), _PINNED.format("me"),
                tls_only=True)


@case
def leaf_of_a_pinned_ca_that_could_be_a_client_too(f, ca):
    both = f.ca("Both", key_usage=False, extra=[
        (_key_usage(digital_signature=True, key_cert_sign=True), True)])
    return Case([both, ca], f.leaf("mallory", issuer=both), _PINNED.format("Both"),
                tls_only=True)


@case
def req_x509_certificate_in_a_ca_file_as_itself(f, ca):
    me = f.openssl_req_x509("me")
    return Case([InCaFile(me)], me)


@case
def leaf_of_a_pinned_ca_false_certificate(f, ca):
    # Not a CA to OpenSSL either: refused by the handshake itself.
    me = f.leaf("me")
    return Case([me, ca], f.leaf("mallory", issuer=me), "CN=me in the pool .*not a CA")


@case
def leaf_of_a_pinned_ca_like_intermediate(f, ca):
    # Not self-signed, so left out of the TLS trust store: refused by the handshake too.
    sub = f.ca("Sub", issuer=ca, key_usage=False)
    leaf = f.leaf("mallory", issuer=sub)
    return Case([sub, ca], Issued(leaf.cert, leaf.key), _PINNED.format("Sub"))


@case
def leaf_of_a_pinned_ca_like_intermediate_sent_by_the_client(f, ca):
    # The pool's CA made it a CA: sent along, it counts as an intermediate of that CA.
    sub = f.ca("Sub", issuer=ca, key_usage=False)
    return Case([sub, ca], f.leaf("mallory", issuer=sub))


@case
def leaf_of_a_ca_like_intermediate_in_a_ca_file(f, ca):
    sub = f.ca("Sub", issuer=ca, key_usage=False)
    leaf = f.leaf("mallory", issuer=sub)
    return Case([InCaFile(sub), ca], Issued(leaf.cert, leaf.key))


@case
def pool_ca_presented_as_client(f, ca):
    return Case([ca], ca, "keyUsage without digitalSignature")


@case
def pool_ca_without_key_usage_presented_as_client(f, ca):
    plain = f.ca("Plain CA", key_usage=False)
    return Case([plain], plain)


@case
def trustme_leaf_with_critical_san(f, ca):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    leaf = authority.issue_cert("alice@example.org", "alice.example.org")
    assert leaf_has_critical_san(leaf.cert_chain_pems[0].bytes())
    # trustme's CA has digitalSignature: it could be a client certificate, so a CA file.
    return Case([InCaFile(Issued(x509.load_pem_x509_certificate(authority.cert_pem.bytes()), None))],
                Issued(x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()),
                       serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)))


def leaf_has_critical_san(pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


@case
def critical_san(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, san=[x509.DNSName("x.example")], critical_san=True))


@case
def unhandled_critical_extension(f, ca):
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    return Case([ca], f.leaf("x", issuer=ca, extra=[(unknown, True)]),
                "critical extension TLS does not handle \\(1.3.6.1.4.1.99999.1\\)")


@case
def critical_subject_key_identifier(f, ca):
    # OpenSSL's list of handled critical extensions lacks even the key identifiers.
    return Case([ca], f.build("x", issuer=ca, key_ids=False, extensions=[
        (x509.SubjectKeyIdentifier(b"12345678"), True)]), "does not handle \\(2.5.29.14\\)")


@case
def server_auth_only_leaf(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, eku=[SERVER_AUTH]), "serverAuth, without clientAuth")


@case
def any_extended_key_usage_only_leaf(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
                "without clientAuth")


@case
def leaf_without_key_usages(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, eku=None, usage=False))


@case
def leaf_key_encipherment_only(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, key="rsa2048", usage=False, extra=[
        (_key_usage(key_encipherment=True), True)]), "keyUsage without digitalSignature")


@case
def ca_restricted_to_server_auth(f, ca):
    server_ca = f.ca("Server CA", extra=[(x509.ExtendedKeyUsage([SERVER_AUTH]), False)])
    return Case([server_ca], f.leaf("x", issuer=server_ca),
                "CN=Server CA in the pool .*without clientAuth")


@case
def ca_restricted_to_client_auth(f, ca):
    client_ca = f.ca("Client CA", extra=[(x509.ExtendedKeyUsage([CLIENT_AUTH]), False)])
    return Case([client_ca], f.leaf("x", issuer=client_ca))


@case
def root_with_key_cert_sign_but_no_basic_constraints(f, ca):
    root = f.build("KU Root", extensions=[(_key_usage(key_cert_sign=True), True)])
    return Case([InCaFile(root)], f.leaf("x", issuer=root))


@case
def v3_root_without_basic_constraints_or_key_usage(f, ca):
    root = f.build("Bare Root")
    return Case([root], f.leaf("x", issuer=root), "Bare Root in the pool .*is not a CA certificate")


@case
def rsa_2048_pkcs1_chain(f, ca):
    rsa_ca = f.ca("RSA CA", key="rsa2048")
    return Case([rsa_ca], f.leaf("x", issuer=rsa_ca, key="rsa2048"))


@case
def rsa_pss_signature(f, ca):
    rsa_ca = f.ca("RSA CA", key="rsa2048")
    return Case([rsa_ca], f.leaf("x", issuer=rsa_ca, rsa_pss=True))


@case
def p384_chain(f, ca):
    p384_ca = f.ca("P-384 CA", key="p384")
    return Case([p384_ca], f.leaf("x", issuer=p384_ca, key="p384"))


@case
def ed25519_chain(f, ca):
    ed_ca = f.ca("Ed25519 CA", key="ed25519")
    return Case([ed_ca], f.leaf("x", issuer=ed_ca, key="ed25519"))


@case
def rsa_1024_leaf(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, key="rsa1024"),
                "key of 80-bit strength; TLS at security level 2 needs 112")


@case
def rsa_1024_pool_ca(f, ca):
    weak = f.ca("Weak CA", key="rsa1024")
    return Case([weak], f.leaf("x", issuer=weak),
                "CN=Weak CA in the pool .* key of 80-bit strength")


@case
def sha1_signed_leaf(f, ca):
    return Case([ca], f.openssl_v1_leaf("x", issuer=ca, digest="sha1"),
                r"weak digest \(sha1\) that TLS at security level 2 refuses")


@case
def issuer_name_in_other_case_and_spacing(f, ca):
    spelling = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "  test   ca ")])
    return Case([ca], f.build("canon", issuer=ca, issuer_name=spelling, signing_key=ca.key))


@case
def issuer_name_as_printable_string(f, ca):
    spelling = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA",
                                             _type=x509.name._ASN1Type.PrintableString)])
    return Case([ca], f.build("canon", issuer=ca, issuer_name=spelling, signing_key=ca.key))


@case
def issuer_name_differs_in_a_letter(f, ca):
    spelling = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CB")])
    return Case([ca], f.build("x", issuer=ca, issuer_name=spelling, signing_key=ca.key),
                "issued by CN=Test CB, which is not in the pool")


@case
def leaf_key_agreement_only(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, usage=False, extra=[
        (_key_usage(key_agreement=True), True)]))


@case
def pool_ca_whose_key_usage_lacks_key_cert_sign(f, ca):
    signer = f.ca("Signing CA", key_usage=False, extra=[(_key_usage(digital_signature=True), True)])
    return Case([signer], f.leaf("x", issuer=signer), "CN=Signing CA in the pool .*not a CA")


@case
def leaf_that_is_itself_a_ca(f, ca):
    return Case([ca], f.ca("Sub", issuer=ca, key_usage=False, extra=[
        (_key_usage(digital_signature=True, key_cert_sign=True), True)]))


@case
def expired_pinned_leaf(f, ca):
    me = f.leaf("me", valid=EXPIRED)
    return Case([me], me, "CN=me expired on 2021-01-01 00:00:00 UTC: make a new one")


@case
def pinned_leaf_with_a_broken_self_signature(f, ca):
    # A trust anchor's own signature is never checked (X509_V_FLAG_CHECK_SS_SIGNATURE).
    me = f.leaf("me")
    der = bytearray(me.der)
    der[-1] ^= 1
    broken = Issued(x509.load_der_x509_certificate(bytes(der)), me.key)
    return Case([broken], broken)


@case
def pinned_leaf_with_an_unhandled_critical_extension(f, ca):
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"\x05\x00")
    me = f.leaf("me", extra=[(unknown, True)])
    return Case([me], me, "critical extension TLS does not handle")


@case
def pool_intermediate_is_not_completed_by_a_root_in_the_pem(f, ca):
    inter = f.ca("Pool Intermediate", issuer=ca)
    return Case([inter], _with_chain(f.leaf("x", issuer=inter), ca),
                "Pool Intermediate is in the pool .* but is not self-signed")


def _renewed_intermediates(f: CertFactory, ca: Issued) -> tuple[Issued, Issued]:
    bc = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    old = f.build("Renewed Intermediate", issuer=ca, valid=EXPIRED, extensions=bc)
    return old, f.build("Renewed Intermediate", key=old.key, issuer=ca, extensions=bc)


@case
def expired_intermediate_in_pem_but_renewed_in_pool(f, ca):
    old, new = _renewed_intermediates(f, ca)
    return Case([ca, InCaFile(new)], _with_chain(f.leaf("x", issuer=new), old))


@case
def expired_and_renewed_intermediates_both_in_pem(f, ca):
    old, new = _renewed_intermediates(f, ca)
    return Case([ca], _with_chain(f.leaf("x", issuer=new), old, new))


@case
def self_issued_key_rollover_link_in_pem(f, ca):
    link = f.build(ca.cert.subject, issuer=ca, extensions=[
        (x509.BasicConstraints(ca=True, path_length=None), True)])
    return Case([ca], _with_chain(f.leaf("x", issuer=link), link))


@case
def authority_key_identifier_serial_mismatch(f, ca):
    akid = x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(ca.cert.issuer)], 12345)
    return Case([ca], f.build("x", issuer=ca, key_ids=False, extensions=[(akid, False)]),
                "pool has a CA of that name, but with another key")


@case
def authority_key_identifier_serial_match(f, ca):
    akid = x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(ca.cert.issuer)],
                                       ca.cert.serial_number)
    return Case([ca], f.build("x", issuer=ca, key_ids=False, extensions=[(akid, False)]))


@case
def ca_with_any_extended_key_usage_only(f, ca):
    any_ca = f.ca("Any CA", extra=[
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]), False)])
    return Case([any_ca], f.leaf("x", issuer=any_ca), "anyExtendedKeyUsage, without clientAuth")


@case
def leaf_for_server_and_client(f, ca):
    return Case([ca], f.leaf("x", issuer=ca, eku=[SERVER_AUTH, CLIENT_AUTH]))


@case
def ed448_chain(f, ca):
    ed_ca = f.ca("Ed448 CA", key="ed448")
    return Case([ed_ca], f.leaf("x", issuer=ed_ca, key="ed448"))


@case
def mixed_key_types(f, ca):
    rsa_ca = f.ca("RSA CA", key="rsa2048")
    inter = f.ca("P-384 Intermediate", issuer=rsa_ca, key="p384")
    return Case([rsa_ca], f.leaf("x", issuer=inter, key="ed25519"))


@case
def empty_subject_with_critical_san(f, ca):
    return Case([ca], f.leaf(x509.Name([]), issuer=ca, san=[x509.DNSName("a.example")],
                             critical_san=True))


@case
def netscape_client_leaf(f, ca):
    return Case([ca], f.openssl_v3("x", issuer=ca, extensions="nsCertType = client, email\n"))


@case
def netscape_server_leaf(f, ca):
    return Case([ca], f.openssl_v3("x", issuer=ca, extensions="nsCertType = server\n"),
                "nsCertType without client")


@case
def netscape_ssl_ca_root(f, ca):
    root = f.openssl_v3("NS Root", issuer=None, extensions="nsCertType = sslCA\n")
    return Case([InCaFile(root)], f.openssl_v1_leaf("x", issuer=root))


@case
def netscape_object_signing_ca_root(f, ca):
    root = f.openssl_v3("NS Root", issuer=None, extensions="nsCertType = objCA\n")
    return Case([InCaFile(root)], f.openssl_v1_leaf("x", issuer=root), "nsCertType without sslCA")


def _constrained_ca(f: CertFactory, name: str, permitted=None, excluded=None) -> Issued:
    return f.ca(name, extra=[(x509.NameConstraints(permitted_subtrees=permitted,
                                                    excluded_subtrees=excluded), True)])


@case
def name_constraints_permit_the_dns_name(f, ca):
    nc = _constrained_ca(f, "DNS CA", permitted=[x509.DNSName("example.com")])
    return Case([nc], f.leaf("alice", issuer=nc, san=[x509.DNSName("a.example.com")]))


@case
def name_constraints_refuse_a_dns_name(f, ca):
    nc = _constrained_ca(f, "DNS CA", permitted=[x509.DNSName("example.com")])
    return Case([nc], f.leaf("alice", issuer=nc, san=[x509.DNSName("xexample.com")]),
                "has the name xexample.com, which is outside the nameConstraints of the CA "
                "CN=DNS CA in the pool")


@case
def name_constraints_apply_to_a_host_like_common_name(f, ca):
    nc = _constrained_ca(f, "DNS CA", permitted=[x509.DNSName("example.com")])
    return Case([nc], f.leaf("host.other.com", issuer=nc), "outside the nameConstraints")


@case
def name_constraints_ignore_a_single_label_common_name(f, ca):
    nc = _constrained_ca(f, "DNS CA", permitted=[x509.DNSName("example.com")])
    return Case([nc], f.leaf("alice", issuer=nc))


@case
def name_constraints_on_the_subject_dn(f, ca):
    acme = x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Acme")))
    nc = _constrained_ca(f, "DN CA", permitted=[acme])
    inside = _name((NameOID.ORGANIZATION_NAME, "acme "), (NameOID.COMMON_NAME, "alice"))
    return Case([nc], f.leaf(inside, issuer=nc))


@case
def name_constraints_refuse_a_subject_dn(f, ca):
    acme = x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Acme")))
    nc = _constrained_ca(f, "DN CA", permitted=[acme])
    return Case([nc], f.leaf("alice", issuer=nc), "has the name CN=alice, which is outside")


@case
def name_constraints_bind_intermediates_too(f, ca):
    acme = x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Acme")))
    nc = _constrained_ca(f, "DN CA", permitted=[acme])
    inter = f.ca("Sub CA", issuer=nc)
    inside = _name((NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.COMMON_NAME, "alice"))
    return Case([nc], f.leaf(inside, issuer=inter),
                "intermediate CA CN=Sub CA from the PEM has the name CN=Sub CA")


@case
def name_constraints_exclude_a_dns_name(f, ca):
    nc = _constrained_ca(f, "Excluding CA", excluded=[x509.DNSName("evil.com")])
    return Case([nc], f.leaf("alice", issuer=nc, san=[x509.DNSName("a.evil.com")]),
                "excluded by the nameConstraints")


@case
def name_constraints_on_ip_addresses(f, ca):
    nc = _constrained_ca(f, "IP CA", permitted=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))])
    return Case([nc], f.leaf("alice", issuer=nc, san=[
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.IPAddress(ipaddress.ip_address("::1"))]), "has the name ::1")


@case
def name_constraints_on_email_addresses(f, ca):
    nc = _constrained_ca(f, "Mail CA", permitted=[x509.RFC822Name(".example.org"),
                                                  x509.RFC822Name("bob@other.org")])
    subject = _name((NameOID.EMAIL_ADDRESS, "bob@OTHER.org"), (NameOID.COMMON_NAME, "bob"))
    return Case([nc], f.leaf(subject, issuer=nc, san=[x509.RFC822Name("b@x.example.org")]))


@case
def name_constraints_on_email_local_parts_are_case_sensitive(f, ca):
    nc = _constrained_ca(f, "Mail CA", permitted=[x509.RFC822Name("bob@other.org")])
    return Case([nc], f.leaf("bob", issuer=nc, san=[x509.RFC822Name("Bob@other.org")]),
                "Bob@other.org, which is outside")


@case
def name_constraints_cannot_check_a_urn(f, ca):
    nc = _constrained_ca(f, "URI CA", permitted=[x509.UniformResourceIdentifier(".example.com")])
    return Case([nc], f.leaf("alice", issuer=nc, san=[
        x509.UniformResourceIdentifier("https://a.example.com:8443/x"),
        x509.UniformResourceIdentifier("urn:x:y")]), "TLS cannot check")


@pytest.fixture(scope="session")
def tls_server_identity(certs: CertFactory) -> tuple[Path, Path]:
    server_ca = certs.ca("Handshake Server CA")
    server = certs.leaf("localhost", issuer=server_ca, eku=[SERVER_AUTH],
                        san=[x509.DNSName("localhost")])
    return server.write(certs.directory / "tls-server")


@needs_openssl
class TestOpenSSLAgreement:
    """from_pem, `openssl verify` and a real handshake agree on every certificate."""

    @pytest.mark.parametrize("name", sorted(CASES))
    def test_verdicts_agree(self, name, certs, ca, tls_server_identity, tmp_path):
        spec = CASES[name](certs, ca)
        root = certs.root(*spec.pool)
        pool_pem = tmp_path / "pool.pem"
        pool_pem.write_text(tls_trust_store(root)[0])  # what the server loads
        leaf_path, _ = spec.presented.write(tmp_path, "client", chain=False)
        chain_path = None
        if spec.presented.chain:
            chain_path = tmp_path / "chain.pem"
            chain_path.write_bytes(spec.presented.chain_pem)

        try:
            Certificate.from_pem(spec.presented.fullchain_pem, root)
            ours, why = True, ""
        except CertificateError as err:
            ours, why = False, str(err)
        openssl_ok, openssl_says = openssl_verify(pool_pem, leaf_path, chain_path)
        handshake_ok, handshake_says = self._handshake(spec, tmp_path, pool_pem,
                                                       tls_server_identity)

        tls = spec.refused is None or spec.tls_only
        assert (ours, openssl_ok, handshake_ok) == (spec.refused is None, tls, tls), (
            f"from_pem: {why or 'accepted'}\nopenssl verify: {openssl_says}\n"
            f"handshake: {handshake_says or 'accepted'}")
        if spec.refused is not None:
            assert re.search(spec.refused, why), why

    @staticmethod
    def _handshake(spec: Case, tmp_path: Path, pool_pem: Path,
                   identity: tuple[Path, Path]) -> tuple[bool, str]:
        fullchain = tmp_path / "fullchain.pem"
        fullchain.write_bytes(spec.presented.fullchain_pem)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        # Level 0 lets the client present weak keys and SHA-1 certificates: the server
        # is what is being tested.
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
        client.load_cert_chain(fullchain, tmp_path / "client.key")
        result = tls_handshake(server_context(*identity, pool_pem), client)
        error = result.server_error
        if error is None:
            assert result.peer_der == spec.presented.der
            return True, ""
        assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
        return False, f"{error.verify_code} {error.verify_message}"


class TestCertificateFromPem:
    def test_accepts_bytes_str_and_bytearray(self, root, alice):
        for pem in (alice.cert_pem, alice.cert_pem.decode(), bytearray(alice.cert_pem)):
            assert Certificate.from_pem(pem, root).hash() == hashlib.sha256(alice.der).hexdigest()

    def test_returns_the_leaf_of_a_chain(self, certs, ca, root):
        inter = certs.ca("Intermediate", issuer=ca)
        leaf = certs.leaf("deep", issuer=inter)
        cert = Certificate.from_pem(leaf.fullchain_pem, root)
        assert cert.bytes() == leaf.cert_pem
        assert cert.issuer == "CN=Intermediate"

    @pytest.mark.parametrize("order", ["key first", "key last"])
    def test_a_private_key_beside_the_certificate_is_skipped(self, root, alice, order):
        pem = (alice.key_pem + alice.cert_pem if order == "key first" else
               alice.cert_pem + alice.key_pem)
        assert Certificate.from_pem(pem, root).bytes() == alice.cert_pem

    def test_uses_jobber_root_from_the_environment(self, monkeypatch, root, alice, tmp_path):
        monkeypatch.setenv("JOBBER_ROOT", str(tmp_path))
        with pytest.raises(CertificateError, match="empty or missing"):
            Certificate.from_pem(alice.cert_pem)
        monkeypatch.setenv("JOBBER_ROOT", str(root))
        assert Certificate.from_pem(alice.cert_pem).common_name == "alice"

    @pytest.mark.parametrize("make, message", [
        (lambda i: b"", "the input is empty: pass the PEM text"),
        (lambda i: " \n\t", "the input is empty"),
        (lambda i: b"hello world", "not PEM .*no -----BEGIN CERTIFICATE----- line"),
        (lambda i: i.der, r"binary \(DER\) certificate, not PEM: convert it with `openssl x509"),
        (lambda i: i.key_pem, r"PEM private key \(PRIVATE KEY\), not a certificate: pass the "
                              r"certificate that goes with it"),
        (lambda i: i.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()), r"\(EC PRIVATE KEY\)"),
        (lambda i: x509.CertificateSigningRequestBuilder().subject_name(i.cert.subject).sign(
            i.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM),
         r"certificate signing request \(CSR\), not a certificate: have a CA in the pool sign it"),
        (lambda i: i.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
         "holds a PUBLIC KEY, not a certificate"),
        (lambda i: i.cert_pem[:200], r"truncated \(no -----END CERTIFICATE----- line\)"),
        (lambda i: i.cert_pem.replace(b"\n", b"\n!", 1), "base64 of the certificate is corrupt"),
        (lambda i: b"-----BEGIN CERTIFICATE-----\nMIIBIj=\n-----END CERTIFICATE-----\n",
         "base64 of the certificate is corrupt .*copy the certificate again"),
        (lambda i: b"-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG\n-----END CERTIFICATE-----\n",
         "not a valid X.509 certificate .*corrupt DER"),
        (lambda i: i.cert_pem + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
         "the 2nd certificate of the PEM is not a valid X.509 certificate"),
        (lambda i: b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n"
                   b"-----END CERTIFICATE-----\n", "base64 .* corrupt"),
    ], ids=["empty", "blank", "text", "der", "pkcs8-key", "ec-key", "csr", "public-key",
            "truncated", "bad-base64-char", "bad-base64-padding", "corrupt-der",
            "corrupt-second-cert", "pem-headers"])
    def test_input_that_is_not_a_certificate(self, root, alice, make, message):
        with pytest.raises(CertificateError, match=message) as caught:
            Certificate.from_pem(make(alice), root)
        assert caught.value.path is None
        assert isinstance(caught.value, JobberError)

    @pytest.mark.parametrize("kind", [bytes, str])
    def test_oversized_input_is_refused_before_parsing(self, root, alice, kind):
        padded = alice.cert_pem + b"#" * (MAX_PEM_BYTES - len(alice.cert_pem))
        assert Certificate.from_pem(kind(padded) if kind is bytes else padded.decode(), root)
        with pytest.raises(CertificateError, match=r"over the 1 MiB limit .*not a bundle"):
            Certificate.from_pem(padded + b"#" if kind is bytes else padded.decode() + "#", root)

    @pytest.mark.timeout(60)  # a hang guard: a backtracking PEM regex once took hours here
    def test_a_megabyte_of_unterminated_begin_lines(self, root):
        begin = b"-----BEGIN CERTIFICATE-----\n"
        with pytest.raises(CertificateError, match=r"truncated \(no -----END CERTIFICATE"):
            Certificate.from_pem(begin * (MAX_PEM_BYTES // len(begin)), root)

    def test_a_path_is_a_type_error_pointing_at_from_file(self, root, tmp_path):
        with pytest.raises(TypeError, match=r"use Certificate\.from_file"):
            Certificate.from_pem(tmp_path / "cert.pem", root)  # type: ignore[arg-type]

    def test_empty_pool(self, tmp_path, alice):
        with pytest.raises(CertificateError, match=r"issued by CN=Test CA, but the pool .* is "
                                                   r"empty or missing: copy the certificate"):
            Certificate.from_pem(alice.cert_pem, tmp_path)

    def test_a_broken_pool_is_reported_with_its_file(self, tmp_path, alice, ca):
        (tmp_path / "pool").mkdir()
        (tmp_path / "pool" / "ca.pem").write_bytes(ca.cert_pem)
        (tmp_path / "pool" / "junk.pem").write_text("junk")
        with pytest.raises(CertificateError, match=r"junk\.pem holds no complete PEM") as caught:
            Certificate.from_pem(alice.cert_pem, tmp_path)
        assert caught.value.path == str(tmp_path / "pool" / "junk.pem")

    def test_a_ca_added_to_the_pool_takes_effect_at_once(self, certs, ca, alice, tmp_path):
        (tmp_path / "pool").mkdir()
        with pytest.raises(CertificateError, match="empty or missing"):
            Certificate.from_pem(alice.cert_pem, tmp_path)
        (tmp_path / "pool" / "ca.pem").write_bytes(ca.cert_pem)
        assert Certificate.from_pem(alice.cert_pem, tmp_path).common_name == "alice"
        (tmp_path / "pool" / "ca.pem").write_bytes(certs.ca("Other").cert_pem)
        with pytest.raises(CertificateError, match="not in the pool"):
            Certificate.from_pem(alice.cert_pem, tmp_path)


class TestCertificateFromFile:
    def test_reads_a_certificate_with_its_chain(self, certs, ca, root, tmp_path):
        inter = certs.ca("Intermediate", issuer=ca)
        cert_path, _ = certs.leaf("deep", issuer=inter).write(tmp_path)
        assert Certificate.from_file(cert_path, root).common_name == "deep"
        assert Certificate.from_file(str(cert_path), root).common_name == "deep"

    def test_errors_name_the_file(self, certs, ca, root, tmp_path):
        cert_path, _ = certs.leaf("old", issuer=ca, valid=EXPIRED).write(tmp_path)
        with pytest.raises(CertificateError, match=f"^{cert_path}: the certificate CN=old "
                                                   f"expired on") as caught:
            Certificate.from_file(cert_path, root)
        assert caught.value.path == str(cert_path)

    def test_unreadable_files(self, root, tmp_path):
        with pytest.raises(CertificateError, match=r"cannot read the certificate file .*missing"):
            Certificate.from_file(tmp_path / "missing", root)
        with pytest.raises(CertificateError, match="is not a regular file"):
            Certificate.from_file(tmp_path, root)
        big = tmp_path / "big.pem"
        with big.open("wb") as file:
            file.truncate(MAX_PEM_BYTES + 1)
        with pytest.raises(CertificateError, match=r"big\.pem is over 1 MiB") as caught:
            Certificate.from_file(big, root)
        assert caught.value.path == str(big)

    def test_pool_errors_keep_the_pool_file(self, alice, tmp_path):
        cert_path, _ = alice.write(tmp_path / "me")
        (tmp_path / "pool").write_text("not a directory")
        with pytest.raises(CertificateError, match=r"^the pool .* is not a directory") as caught:
            Certificate.from_file(cert_path, tmp_path)
        assert caught.value.path == str(tmp_path / "pool")


class TestCertificate:
    def test_bytes_is_the_leaf_pem_and_round_trips(self, root, alice):
        cert = Certificate.from_pem(alice.fullchain_pem, root)
        assert cert.bytes() == alice.cert_pem
        assert Certificate.from_pem(cert.bytes(), root) == cert

    @needs_openssl
    def test_hash_is_the_openssl_sha256_fingerprint(self, root, alice, tmp_path):
        (tmp_path / "alice.pem").write_bytes(alice.cert_pem)
        out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                              str(tmp_path / "alice.pem")], capture_output=True, text=True,
                             check=True).stdout
        fingerprint = out.strip().split("=", 1)[1].replace(":", "").lower()
        assert Certificate.from_pem(alice.cert_pem, root).hash() == fingerprint
        assert len(fingerprint) == 64

    def test_names(self, certs, root, alice):
        cert = Certificate.from_pem(alice.cert_pem, root)
        assert (cert.subject, cert.issuer, cert.common_name) == ("CN=alice", "CN=Test CA", "alice")
        no_cn = certs.build(_name((NameOID.ORGANIZATION_NAME, "Acme")))
        assert Certificate(no_cn.cert).common_name is None
        assert Certificate(no_cn.cert).subject == "O=Acme"

    def test_validity_is_aware_utc(self, certs):
        cert = Certificate(certs.leaf("x", valid=EXPIRED).cert)
        assert (cert.not_before, cert.not_after) == EXPIRED
        assert cert.not_after.tzinfo is not None
        assert cert.not_after.utcoffset() == timedelta(0)

    def test_is_ca(self, certs, ca, alice):
        assert Certificate(ca.cert).is_ca
        assert not Certificate(alice.cert).is_ca
        assert Certificate(certs.openssl_v1_leaf("V1 Root", issuer=None).cert).is_ca
        assert not Certificate(certs.openssl_v1_leaf("v1 leaf", issuer=ca).cert).is_ca

    def test_equality_and_hash_follow_the_der(self, root, alice, ca):
        one, two = Certificate.from_pem(alice.cert_pem, root), Certificate(alice.cert)
        assert one == two and hash(one) == hash(two) and len({one, two}) == 1
        assert one != Certificate(ca.cert)
        assert one != alice.cert_pem and one != one.hash()

    def test_repr_says_who_and_which(self, alice):
        cert = Certificate(alice.cert)
        assert repr(cert).startswith("<Certificate 'CN=alice' issued by 'CN=Test CA', valid until ")
        assert cert.hash()[:16] in repr(cert)

    def test_pickles(self, alice):
        cert = Certificate(alice.cert)
        assert pickle.loads(pickle.dumps(cert)) == cert

    def test_job_methods_delegate_to_the_store(self, monkeypatch, alice):
        calls = []

        class JobStore:
            def __init__(self, cert_hash):
                calls.append(("store", cert_hash))

            def __getattr__(self, name):
                return lambda *args: calls.append((name, *args)) or name

        monkeypatch.setitem(sys.modules, "jobber._jobs.store",
                            types.SimpleNamespace(JobStore=JobStore))
        cert = Certificate(alice.cert)
        assert cert.get_jobs() == "get_jobs"
        assert cert.get_job(7) == "get_job"
        assert cert.generate_job_id() == "generate_job_id"
        assert cert.new_job("echo hi") == "new_job"
        assert calls[1::2] == [("get_jobs", None), ("get_job", 7), ("generate_job_id",),
                               ("new_job", "echo hi", None)]
        assert set(calls[0::2]) == {("store", cert.hash())}


class TestPinnedMeansPinned:
    """CAs issue identities; a pinned certificate identifies only itself, CA:TRUE or not.

    The verdicts of the TLS handshake on the same pools are in TestOpenSSLAgreement
    (``*pinned*`` cases) and, against a running server, in test_server_security.py.
    """

    @pytest.mark.parametrize("name, is_ca", [
        ("ca.pem", True), ("CA.pem", True), ("corp.ca.pem", True), ("Corp.CA.pem", True),
        ("00.pem", False), ("erica.pem", False), ("myca.pem", False), ("ca-bundle.pem", False),
        ("corp-ca.pem", False), ("ca.pem.pem", False),
    ])
    def test_the_file_name_says_ca(self, certs, name, is_ca):
        me = certs.openssl_req_x509("me")
        root = certs.root()
        (root / "pool" / name).write_bytes(me.cert_pem)
        mallory = certs.leaf("mallory", issuer=me)
        if is_ca:
            assert Certificate.from_pem(mallory.cert_pem, root).common_name == "mallory"
        else:
            with pytest.raises(CertificateError, match=f"pinned in the pool as a client "
                                                       f"certificate, .*it is in .*/{re.escape(name)}"):
                Certificate.from_pem(mallory.cert_pem, root)
        assert Certificate.from_pem(me.cert_pem, root).common_name == "me"  # itself, either way

    def test_the_message_says_who_signed_it_and_how_to_trust_it(self, certs):
        me = certs.openssl_req_x509("me")
        root = certs.root(me)
        with pytest.raises(CertificateError) as caught:
            Certificate.from_pem(certs.leaf("mallory", issuer=me).cert_pem, root)
        assert str(caught.value) == (
            f"the certificate CN=mallory was issued by CN=me, which is pinned in the pool as a "
            f"client certificate, not trusted as a CA: to trust it as a CA, put it in "
            f"{root / 'pool'} in a file named ca.pem or NAME.ca.pem (it is in "
            f"{root / 'pool' / '00.pem'}); a pinned certificate identifies only itself")
        assert caught.value.path is None

    def test_an_intermediate_signed_by_a_pinned_certificate(self, certs):
        me = certs.openssl_req_x509("me")
        sub = certs.ca("Sub", issuer=me)
        with pytest.raises(CertificateError, match="the intermediate CA CN=Sub .in the chain of "
                                                   "CN=mallory. was issued by CN=me, which is pinned"):
            Certificate.from_pem(certs.leaf("mallory", issuer=sub).fullchain_pem, certs.root(me))

    def test_renaming_the_file_applies_at_once(self, certs):
        me = certs.openssl_req_x509("me")
        root = certs.root(me)
        mallory = certs.leaf("mallory", issuer=me).cert_pem
        with pytest.raises(CertificateError, match="pinned"):
            Certificate.from_pem(mallory, root)
        (root / "pool" / "00.pem").rename(root / "pool" / "me.ca.pem")
        assert Certificate.from_pem(mallory, root).issuer == "CN=me"

    def test_in_a_ca_file_under_one_name_it_is_a_ca_under_every_name(self, certs):
        me = certs.openssl_req_x509("me")
        root = certs.root(me, InCaFile(me))
        assert len(get_client_certificates(root)) == 1
        assert Certificate.from_pem(certs.leaf("mallory", issuer=me).cert_pem, root)

    def test_every_certificate_of_a_ca_bundle_is_a_ca(self, certs):
        a, b = certs.openssl_req_x509("A"), certs.openssl_v1_leaf("B", issuer=None)
        pinned = certs.openssl_req_x509("P")
        root = certs.root(InCaFile(a), InCaFile(b), pinned, files="bundle")
        assert sorted(p.name for p in (root / "pool").iterdir()) == ["bundle.ca.pem", "bundle.pem"]
        for issuer in (a, b):
            assert Certificate.from_pem(certs.leaf("x", issuer=issuer).cert_pem, root)
        with pytest.raises(CertificateError, match="issued by CN=P, which is pinned"):
            Certificate.from_pem(certs.leaf("x", issuer=pinned).cert_pem, root)

    def test_a_plain_ca_needs_no_ca_file(self, certs, ca):
        # CA:TRUE and keyCertSign without digitalSignature: it cannot be a client itself.
        root = certs.root()
        (root / "pool" / "whatever.pem").write_bytes(ca.cert_pem)
        assert Certificate.from_pem(certs.leaf("x", issuer=ca).cert_pem, root)

    def test_the_tls_trust_store(self, certs, ca):
        loose = certs.openssl_req_x509("loose")  # must be in, to pass as itself
        sub = certs.ca("Sub", issuer=ca, key_usage=False)  # would be a trusted intermediate
        strict = certs.leaf("strict")  # CA:FALSE: OpenSSL refuses it as an issuer
        marked = certs.openssl_req_x509("marked")
        root = certs.root(ca, loose, sub, strict, InCaFile(marked))
        pem, warnings = tls_trust_store(root)
        stored = [x509.load_pem_x509_certificate(b) for b in re.findall(
            rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", pem.encode(), re.S)]
        assert stored == [ca.cert, loose.cert, strict.cert, marked.cert]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"{root / 'pool' / '01.pem'}: CN=loose is pinned (its file "
                                      f"is not named ca.pem or NAME.ca.pem) but has "
                                      f"basicConstraints CA:TRUE, so the TLS handshake also")
        assert "refused (403)" in warnings[0] and "CA:FALSE" in warnings[0]
        assert "rename the file to NAME.ca.pem" in warnings[0]
        assert tls_trust_store(certs.root(ca)) == (ca.cert_pem.decode(), [])
        assert tls_trust_store(certs.root()) == ("", [])

    def test_a_v1_pin_is_warned_of_in_its_own_words(self, certs):
        old = certs.openssl_v1_leaf("old", issuer=None)
        [warning] = tls_trust_store(certs.root(old))[1]
        assert "CN=old is pinned (its file is not named ca.pem or NAME.ca.pem) but is a " \
               "version-1 self-signed certificate, so" in warning

    def test_every_pool_certificate_is_still_listed(self, certs, ca):
        me, sub = certs.openssl_req_x509("me"), certs.ca("Sub", issuer=ca, key_usage=False)
        assert get_client_certificates(certs.root(ca, me, sub)) == [
            Certificate(c.cert) for c in (ca, me, sub)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_demo(tmp_path_factory.mktemp("demo") / "jobber")


class TestInitDemo:
    @staticmethod
    def load(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    def test_writes_every_file_with_private_keys_0600(self, demo):
        assert set(demo) == {*DEMO_FILES, "pool", "root"}
        for key, name in DEMO_FILES.items():
            assert demo[key] == demo["root"] / name
            mode = demo[key].stat().st_mode & 0o777
            assert mode == (0o600 if key.endswith("_key") else 0o644), key
        assert demo["pool"] == demo["root"] / "pool"
        assert demo["pool_ca"].read_bytes() == demo["ca"].read_bytes()
        assert sorted(p.name for p in demo["root"].iterdir()) == sorted(
            [n for n in DEMO_FILES.values() if "/" not in n] + ["pool"])

    def test_keys_are_unencrypted_pkcs8_p256_matching_their_certificates(self, demo):
        for name in ("ca", "client", "client2", "server"):
            pem = demo[f"{name}_key"].read_bytes()
            assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
            key = serialization.load_pem_private_key(pem, password=None)
            assert key.curve.name == "secp256r1"
            assert key.public_key() == self.load(demo[name]).public_key()

    def test_the_ca(self, demo):
        ca = self.load(demo["ca"])
        basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert basic.critical and basic.value.ca
        assert usage.value.key_cert_sign
        now = datetime.now(timezone.utc)
        assert timedelta(minutes=55) < now - ca.not_valid_before_utc < timedelta(minutes=65)
        assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(days=365)

    def test_the_leaves(self, demo):
        def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
            return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

        client, client2, server = (self.load(demo[n]) for n in ("client", "client2", "server"))
        assert Certificate(client).common_name == "demo-user"
        assert Certificate(client2).common_name == "demo-user-2"
        assert eku(client) == eku(client2) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]

    def test_the_directory_is_a_root_that_accepts_both_clients(self, demo):
        one = Certificate.from_file(demo["client"], demo["root"])
        two = Certificate.from_pem(demo["client2"].read_bytes(), demo["root"])
        assert one.hash() != two.hash()
        assert get_client_certificates(demo["root"]) == [Certificate(self.load(demo["ca"]))]
        with pytest.raises(CertificateError, match="without clientAuth"):
            Certificate.from_file(demo["server"], demo["root"])

    def test_the_demo_ca_is_a_ca_of_the_pool_with_nothing_to_warn_of(self, demo):
        pool = _load_pool(demo["root"])
        [entry] = pool.entries
        assert pool.is_ca(entry) and entry.plain_ca  # by its looks, and by its file name
        assert tls_trust_store(demo["root"]) == (demo["ca"].read_text(), [])

    @pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
    def test_mutual_tls_13_handshake_over_loopback(self, demo, host):
        server = server_context(demo["server"], demo["server_key"], demo["pool_ca"])
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
        client.load_verify_locations(demo["ca"])
        client.load_cert_chain(demo["client"], demo["client_key"])
        result = tls_handshake(server, client, server_hostname=host)
        assert result.server_error is None and result.client_error is None
        assert result.version == "TLSv1.3"
        assert result.peer_der == self.load(demo["client"]).public_bytes(serialization.Encoding.DER)

    def test_refuses_to_overwrite_unless_forced(self, tmp_path):
        first = init_demo(tmp_path)
        ca_pem = first["ca"].read_bytes()
        with pytest.raises(CertificateError, match=r"already holds demo certificates \(ca.pem, "
                                                   r".*\): pass force=True") as caught:
            init_demo(tmp_path)
        assert caught.value.path == str(first["ca"])
        assert first["ca"].read_bytes() == ca_pem
        first["client_key"].chmod(0o644)
        again = init_demo(tmp_path, force=True)
        assert again["ca"].read_bytes() != ca_pem
        assert again["client_key"].stat().st_mode & 0o777 == 0o600
        assert Certificate.from_file(again["client"], tmp_path).common_name == "demo-user"

    def test_one_leftover_file_is_enough_to_refuse(self, tmp_path):
        (tmp_path / "pool").mkdir()
        (tmp_path / "pool" / "ca.pem").write_text("mine")
        with pytest.raises(CertificateError, match=r"\(pool/ca.pem\)"):
            init_demo(tmp_path)
        assert (tmp_path / "pool" / "ca.pem").read_text() == "mine"

    def test_unwritable_directory(self, tmp_path):
        (tmp_path / "file").write_text("")
        with pytest.raises(CertificateError, match="cannot write the demo certificates"):
            init_demo(tmp_path / "file" / "demo")

    def test_no_directory_it_makes_is_writable_by_others_whatever_the_umask(self, tmp_path):
        previous = os.umask(0)
        try:
            made = init_demo(tmp_path / "new" / "root")
        finally:
            os.umask(previous)
        for directory in (tmp_path / "new", made["root"], made["pool"]):
            assert directory.stat().st_mode & 0o777 == 0o755, directory
        assert made["client_key"].stat().st_mode & 0o777 == 0o600
