"""Certificates for tests: made with cryptography, or with the openssl command line.

    factory = CertFactory(tmp_path)
    ca = factory.ca("Test CA")                       # ECDSA P-256, CA:TRUE, keyCertSign
    alice = factory.leaf("alice", issuer=ca)         # clientAuth, valid now
    old = factory.leaf("old", issuer=ca, valid=EXPIRED)
    v1 = factory.openssl_v1_leaf("bob", issuer=ca)   # `openssl req` + `openssl x509 -req`
    root = factory.root(ca)                          # a jobber root whose pool holds ca
    root = factory.root(InCaFile(v1_root), pinned)   # 00.ca.pem (trusted as a CA), 01.pem
    mine = factory.openssl_req_x509("me")            # `openssl req -x509 -newkey`: CA:TRUE
    alice.write(tmp_path)                            # alice.pem (+ chain), alice.key

Every helper returns an `Issued`: `.cert_pem`, `.key_pem`, `.chain_pem`, `.write(dir)`.
Keys are made fresh (EC and Ed25519 take microseconds) except RSA, which is generated
once per process and slot.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CLIENT_AUTH",
    "CURRENT",
    "EXPIRED",
    "NOT_YET_VALID",
    "SERVER_AUTH",
    "CertFactory",
    "InCaFile",
    "Issued",
    "key_pem",
    "make_key",
    "openssl_verify",
]

PrivateKey = (ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
              | ed448.Ed448PrivateKey)
UTC = dt.timezone.utc
EXPIRED = (dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 1, tzinfo=UTC))
NOT_YET_VALID = (dt.datetime(2090, 1, 1, tzinfo=UTC), dt.datetime(2091, 1, 1, tzinfo=UTC))
CURRENT = None  # the default: from an hour ago for 30 days
KEY_KINDS = ("p256", "p384", "rsa2048", "rsa1024", "ed25519", "ed448")
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


@functools.cache
def _rsa_key(bits: int, slot: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_key(kind: str = "p256", slot: int = 0) -> PrivateKey:
    """A private key of ``kind`` (see KEY_KINDS); RSA keys are cached per (bits, slot)."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind.startswith("rsa"):
        return _rsa_key(int(kind[3:]), slot)
    raise ValueError(f"unknown key kind {kind!r}; use one of {KEY_KINDS}")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    """A certificate, its private key, and the intermediates that lead to its CA."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def name(self) -> str:
        cns = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cns[0].value) if cns else "unnamed"

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    @property
    def chain_pem(self) -> bytes:
        return b"".join(_pem(c) for c in self.chain)

    @property
    def fullchain_pem(self) -> bytes:
        return self.cert_pem + self.chain_pem

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def write(self, directory: Path, stem: str | None = None,
              chain: bool = True) -> tuple[Path, Path]:
        """Write ``<stem>.pem`` (with the intermediates unless chain=False) and ``<stem>.key``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or self.name.replace(" ", "_")
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.fullchain_pem if chain else self.cert_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


@dataclass(frozen=True)
class InCaFile:
    """A pool entry for `CertFactory.root` to write to a CA file (``NN.ca.pem``).

    The pool trusts such a certificate as a CA whatever it looks like; one in a plain
    ``NN.pem`` is pinned unless it is plainly a CA (CA:TRUE, keyCertSign, no
    digitalSignature), as `CertFactory.ca` makes them.
    """

    entry: Issued | x509.Certificate | bytes


def _name(common_name: str | x509.Name) -> x509.Name:
    if isinstance(common_name, x509.Name):
        return common_name
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _hash_for(key: PrivateKey, digest: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return digest or (hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey)
                      and key.curve.key_size == 384 else hashes.SHA256())


class CertFactory:
    """Makes certificates under ``directory`` (openssl's scratch files go there too)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._roots = itertools.count()
        self._scratches = itertools.count()

    def build(self, subject: str | x509.Name, *, key: PrivateKey | str = "p256",
              issuer: Issued | None = None, issuer_name: x509.Name | None = None,
              signing_key: PrivateKey | None = None,
              valid: tuple[dt.datetime, dt.datetime] | None = CURRENT,
              extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
              digest: hashes.HashAlgorithm | None = None, rsa_pss: bool = False,
              key_ids: bool = True) -> Issued:
        """The general builder: ``extensions`` is (value, critical) pairs, added as given.

        Self-signed unless ``issuer`` is given; ``issuer_name``/``signing_key`` override
        what is taken from the issuer (to forge names or signatures).
        """
        private = make_key(key) if isinstance(key, str) else key
        now = dt.datetime.now(UTC)
        not_before, not_after = valid or (now - dt.timedelta(hours=1), now + dt.timedelta(days=30))
        name = _name(subject)
        signer = signing_key or (issuer.key if issuer else private)
        builder = (x509.CertificateBuilder()
                   .subject_name(name)
                   .issuer_name(issuer_name or (issuer.cert.subject if issuer else name))
                   .public_key(private.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before)
                   .not_valid_after(not_after))
        if key_ids:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
            if issuer is not None and signing_key is None:
                builder = builder.add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                    False)
        for value, critical in extensions:
            builder = builder.add_extension(value, critical)
        kwargs = {}
        if rsa_pss:
            kwargs["rsa_padding"] = padding.PSS(padding.MGF1(hashes.SHA256()),
                                                padding.PSS.DIGEST_LENGTH)
        cert = builder.sign(signer, _hash_for(signer, digest), **kwargs)
        chain = ([issuer.cert, *issuer.chain] if issuer and not _is_root(issuer.cert) else [])
        return Issued(cert, private, chain)

    def ca(self, name: str | x509.Name = "Test CA", *, issuer: Issued | None = None,
           path_length: int | None = None, key_usage: bool = True,
           extra: Sequence[tuple[x509.ExtensionType, bool]] = (), **kwargs) -> Issued:
        """A CA: basicConstraints critical CA:TRUE, keyUsage keyCertSign+cRLSign."""
        exts = [(x509.BasicConstraints(ca=True, path_length=path_length), True)]
        if key_usage:
            exts.append((_key_usage(key_cert_sign=True, crl_sign=True), True))
        return self.build(name, issuer=issuer, extensions=[*exts, *extra], **kwargs)

    def leaf(self, name: str = "alice", *, issuer: Issued | None = None,
             eku: Iterable[x509.ObjectIdentifier] | None = (CLIENT_AUTH,),
             usage: bool = True, san: Sequence[x509.GeneralName] = (),
             critical_san: bool = False,
             extra: Sequence[tuple[x509.ExtensionType, bool]] = (), **kwargs) -> Issued:
        """An end-entity certificate (self-signed without ``issuer``): clientAuth by default."""
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True)]
        if usage:
            exts.append((_key_usage(digital_signature=True), True))
        if eku is not None:
            exts.append((x509.ExtendedKeyUsage(list(eku)), False))
        if san:
            exts.append((x509.SubjectAlternativeName(list(san)), critical_san))
        return self.build(name, issuer=issuer, extensions=[*exts, *extra], **kwargs)

    def impostor(self, ca: Issued, **kwargs) -> Issued:
        """A CA with ``ca``'s subject name but its own key, and no key identifiers.

        What it signs names ``ca`` as issuer, so a pool holding ``ca`` finds a candidate
        whose signature check then fails.
        """
        return self.ca(ca.cert.subject, key_ids=False, **kwargs)

    def root(self, *pool: Issued | x509.Certificate | bytes | InCaFile,
             files: str = "split") -> Path:
        """A new jobber root whose ``pool/`` holds ``pool``.

        One file each (``00.pem``, ``01.ca.pem`` for an `InCaFile`, ...), or with
        ``files="bundle"`` one ``bundle.pem`` (and one ``bundle.ca.pem`` for the
        `InCaFile` entries).
        """
        root = self.directory / f"root{next(self._roots)}"
        (root / "pool").mkdir(parents=True)
        entries = [(p.entry, ".ca.pem") if isinstance(p, InCaFile) else (p, ".pem") for p in pool]
        pems = [(p.cert_pem if isinstance(p, Issued) else
                 _pem(p) if isinstance(p, x509.Certificate) else p, suffix)
                for p, suffix in entries]
        if files == "bundle":
            for suffix in dict.fromkeys(suffix for _, suffix in pems):
                (root / "pool" / f"bundle{suffix}").write_bytes(
                    b"".join(pem for pem, s in pems if s == suffix))
        else:
            for i, (pem, suffix) in enumerate(pems):
                (root / "pool" / f"{i:02d}{suffix}").write_bytes(pem)
        return root

    def _scratch(self, stem: str) -> Path:
        path = self.directory / "openssl" / f"{stem}-{next(self._scratches)}"
        path.mkdir(parents=True)
        return path

    def _openssl(self, *args: str | os.PathLike[str], cwd: Path, req: str = "") -> None:
        require_openssl()
        env = {**os.environ, "OPENSSL_CONF": str(_minimal_config(cwd, req))}
        subprocess.run(["openssl", *map(str, args)], cwd=cwd, env=env, check=True,
                       capture_output=True)

    def _csr(self, work: Path, name: str, key: PrivateKey) -> None:
        (work / "key.pem").write_bytes(key_pem(key))
        self._openssl("req", "-new", "-key", "key.pem", "-subj", f"/CN={name}",
                      "-out", "req.csr", cwd=work)

    def _sign_csr(self, work: Path, issuer: Issued | None, key: PrivateKey,
                  extfile: str | None, digest: str = "sha256") -> Issued:
        args = ["x509", "-req", "-in", "req.csr", "-days", "30", f"-{digest}",
                "-set_serial", str(x509.random_serial_number()), "-out", "cert.pem"]
        if issuer is None:
            args += ["-signkey", "key.pem"]
        else:
            (work / "ca.pem").write_bytes(issuer.cert_pem)
            (work / "ca.key").write_bytes(issuer.key_pem)
            args += ["-CA", "ca.pem", "-CAkey", "ca.key"]
        if extfile is not None:
            (work / "ext.cnf").write_text(extfile)
            args += ["-extfile", "ext.cnf"]
        self._openssl(*args, cwd=work)
        cert = x509.load_pem_x509_certificate((work / "cert.pem").read_bytes())
        chain = [issuer.cert, *issuer.chain] if issuer and not _is_root(issuer.cert) else []
        return Issued(cert, key, chain)

    def openssl_v1_leaf(self, name: str = "bob", *, issuer: Issued | None,
                        key: str = "p256", digest: str = "sha256") -> Issued:
        """The everyday recipe: `openssl req -new` + `openssl x509 -req -CA` (version 1).

        With ``issuer=None`` it is self-signed (`openssl x509 -req -signkey`), which is
        also how a version-1 root CA is made. ``digest="sha1"`` makes what cryptography
        refuses to sign.
        """
        work, private = self._scratch(name), make_key(key)
        self._csr(work, name, private)
        return self._sign_csr(work, issuer, private, None, digest)

    def openssl_v3(self, name: str, *, issuer: Issued | None, extensions: str,
                   key: str = "p256", digest: str = "sha256") -> Issued:
        """`openssl x509 -req` with an extfile holding ``extensions`` (one per line)."""
        work, private = self._scratch(name), make_key(key)
        self._csr(work, name, private)
        return self._sign_csr(work, issuer, private, extensions, digest)

    def openssl_ca(self, name: str = "OpenSSL CA", *, key: str = "p256") -> Issued:
        """`openssl req -x509 -new` with the extensions of openssl.cnf's stock v3_ca."""
        work, private = self._scratch(name), make_key(key)
        (work / "key.pem").write_bytes(key_pem(private))
        self._openssl("req", "-x509", "-new", "-key", "key.pem", "-subj", f"/CN={name}",
                      "-days", "365", "-extensions", "v3_ca", "-out", "cert.pem", cwd=work)
        return Issued(x509.load_pem_x509_certificate((work / "cert.pem").read_bytes()), private)

    def openssl_req_x509(self, name: str = "me") -> Issued:
        """`openssl req -x509 -newkey ec` with a stock openssl.cnf, whose [req] says
        ``x509_extensions = v3_ca``: self-signed, basicConstraints critical CA:TRUE, key
        identifiers, no keyUsage or extendedKeyUsage. Made to be pinned as a client
        certificate, it is a CA too as far as OpenSSL is concerned."""
        work = self._scratch(name)
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", "key.pem", "-subj", f"/CN={name}", "-days", "30",
                      "-out", "cert.pem", cwd=work, req="x509_extensions = v3_ca\n")
        key = serialization.load_pem_private_key((work / "key.pem").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((work / "cert.pem").read_bytes())
        return Issued(cert, key)  # type: ignore[arg-type]

    def openssl_intermediate(self, name: str, *, issuer: Issued) -> Issued:
        """A v3 intermediate CA signed with `openssl x509 -req -CA -extfile`."""
        return self.openssl_v3(name, issuer=issuer, extensions=(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"))


def _is_root(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _key_usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(["digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"], False)
    flags.update(on)
    return x509.KeyUsage(**flags)


def _minimal_config(directory: Path, req: str = "") -> Path:
    # Our own openssl.cnf, so the results do not depend on the distribution's defaults;
    # ``req`` is more of its [req] section, ending in a newline.
    path = directory / "openssl.cnf"
    path.write_text(
        f"[req]\n{req}distinguished_name = dn\n[dn]\n"
        "[v3_ca]\nsubjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always,issuer\n"
        "basicConstraints = critical,CA:true\n")
    return path


def require_openssl() -> None:
    """Skip the test (or the fixture's tests) on a host without the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed (apt-get install openssl)")


def openssl_verify(pool_pem: Path, leaf: Path, untrusted: Path | None = None) -> tuple[bool, str]:
    """OpenSSL's verdict as a TLS server gives it for a client certificate.

    ``-purpose sslclient`` and ``-auth_level 2`` are what libssl sets when it verifies a
    client certificate (X509_STORE_CTX_set_default "ssl_client", the context's security
    level); ``-no-CApath -no-CAstore`` keep the system's CAs out, as ``load_verify_locations``
    does.
    """
    require_openssl()
    args = ["openssl", "verify", "-purpose", "sslclient", "-auth_level", "2",
            "-no-CApath", "-no-CAstore", "-CAfile", str(pool_pem)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    result = subprocess.run([*args, str(leaf)], capture_output=True, text=True)
    return result.returncode == 0, (result.stdout + result.stderr).strip()
