"""Client certificates: the pool, and the identity a PEM certificate stands for.

The pool is ``<root>/pool/*.pem``. ``Certificate.from_pem`` accepts a certificate exactly
when the server's TLS handshake would (``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` with the
pool as ``cafile`` and ``CERT_REQUIRED``), so one identity works locally and remotely.

cryptography's strict ``x509.verification`` refuses version-1 certificates (what
``openssl x509 -req`` makes) and leaves with a critical subjectAltName (what trustme
makes); OpenSSL accepts both. So the chain is built here, after OpenSSL 3's
``X509_verify_cert`` (crypto/x509/x509_vfy.c) as libssl runs it on a client certificate:
purpose "sslclient", trusted-first issuer lookup, a chain that ends at a self-signed pool
certificate, intermediates with basicConstraints CA:TRUE, a pool CA that passes
``X509_check_ca`` (version-1 self-signed roots do), path lengths, unhandled critical
extensions, key and digest strength at the TLS context's security level, the validity of
every certificate in the chain (the pool CA's too) and nameConstraints. Certificate
policies are not evaluated, as OpenSSL does not by default.

The agreement holds for a server context without extra verify flags: Python 3.13's
``ssl.create_default_context`` adds ``VERIFY_X509_STRICT`` (which refuses version-1 CAs)
and ``VERIFY_X509_PARTIAL_CHAIN``; the server must not use them.

This module is the one place where cryptography's parse and signature errors become
``CertificateError``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import ssl
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.oid import SignatureAlgorithmOID as _S

from jobber._errors import CertificateError

if TYPE_CHECKING:
    from jobber import Job, Limits
    from jobber._storage import JobStore

__all__ = ["MAX_PEM_BYTES", "Certificate", "default_root", "get_client_certificates"]

MAX_PEM_BYTES = 1 << 20
"""Input over 1 MiB is refused before parsing: a certificate with its intermediates is a
few KiB, and parsing attacker-sized input costs memory and time."""

_MAX_POOL_FILE_BYTES = 64 << 20  # a big CA bundle is ~250 KiB
_MAX_DEPTH = 100  # OpenSSL's default verify depth
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABEL = b"CERTIFICATE"
_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Critical extensions OpenSSL understands (X509_supported_extension, v3_purp.c); any other
# critical extension, even a key identifier, fails the handshake.
_HANDLED_CRITICAL = {oid.dotted_string for oid in (
    ExtensionOID.KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.OCSP_NO_CHECK, ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY)} | {
    "2.16.840.1.113730.1.1",  # netscape-cert-type
    "1.3.6.1.5.5.7.1.7", "1.3.6.1.5.5.7.1.8",  # RFC 3779 IP and AS blocks
    "1.3.6.1.5.5.7.1.14"}  # proxyCertInfo: handled, by refusing proxy certificates
_PROXY_CERT_INFO = "1.3.6.1.5.5.7.1.14"

_NameKey = tuple[frozenset[tuple[str, object]], ...]  # a name as X509_NAME_cmp sees it
_Stamp = tuple[str, int, int, int, int]  # path, mtime_ns, size, inode, ctime_ns
_PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey
              | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
_KEY_TYPE_OF_SIGNATURE: dict[x509.ObjectIdentifier, type] = {
    **{oid: rsa.RSAPublicKey for oid in (
        _S.RSA_WITH_MD5, _S.RSA_WITH_SHA1, _S.RSA_WITH_SHA224, _S.RSA_WITH_SHA256,
        _S.RSA_WITH_SHA384, _S.RSA_WITH_SHA512, _S.RSA_WITH_SHA3_224, _S.RSA_WITH_SHA3_256,
        _S.RSA_WITH_SHA3_384, _S.RSA_WITH_SHA3_512, _S.RSASSA_PSS)},
    **{oid: ec.EllipticCurvePublicKey for oid in (
        _S.ECDSA_WITH_SHA1, _S.ECDSA_WITH_SHA224, _S.ECDSA_WITH_SHA256, _S.ECDSA_WITH_SHA384,
        _S.ECDSA_WITH_SHA512, _S.ECDSA_WITH_SHA3_224, _S.ECDSA_WITH_SHA3_256,
        _S.ECDSA_WITH_SHA3_384, _S.ECDSA_WITH_SHA3_512)},
    **{oid: dsa.DSAPublicKey for oid in (
        _S.DSA_WITH_SHA1, _S.DSA_WITH_SHA224, _S.DSA_WITH_SHA256, _S.DSA_WITH_SHA384,
        _S.DSA_WITH_SHA512)},
    _S.ED25519: ed25519.Ed25519PublicKey,
    _S.ED448: ed448.Ed448PublicKey,
}
# Security bits of a signature's digest as OpenSSL rates them (ossl_x509_init_sig_info):
# chosen-prefix collisions put SHA-1 at 63 bits and MD5 at 39.
_DIGEST_BITS = {"md5": 39, "sha1": 63, "sha224": 112, "sha256": 128, "sha384": 192,
                "sha512": 256, "sha3-224": 112, "sha3-256": 128, "sha3-384": 192,
                "sha3-512": 256}
_LEVEL_BITS = {1: 80, 2: 112, 3: 128, 4: 192, 5: 256}  # SSL_CTX_set_security_level(3)
_RSA_STRENGTH = ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80))
_EC_STRENGTH = ((512, 256), (384, 192), (256, 128), (224, 112), (160, 80))
_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
              ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
              ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
              ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
              ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
              ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
              ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage"}


def default_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the jobber root directory: ``root``, else ``$JOBBER_ROOT``, else ``~/.jobber``.

    Args:
        root: an explicit root; ``~`` is expanded.

    Returns:
        The root directory (it need not exist). The pool is its ``pool`` subdirectory.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("JOBBER_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".jobber"


def get_client_certificates(root: str | os.PathLike[str] | None = None) -> list[Certificate]:
    """Return every certificate in the pool, ``<root>/pool/*.pem``, in file-name order.

    A file may hold several certificates; duplicates are listed once. The certificates
    are listed as they are, valid or not.

    Args:
        root: the jobber root (see `default_root`).

    Returns:
        The pool's certificates; ``[]`` when the pool directory is missing or empty.

    Raises:
        CertificateError: the pool or one of its files cannot be read, or a pool file
            holds something other than PEM certificates.
    """
    return [Certificate(entry.cert) for entry in _load_pool(root).entries]


class Certificate:
    """A client certificate: the identity that owns jobs.

    Get a validated one from `Certificate.from_pem` or `Certificate.from_file`; the pool's
    certificates, unvalidated, come from `get_client_certificates`. Two certificates are
    equal when their DER encodings are (same `hash`).

    Args:
        certificate: a parsed certificate; it is wrapped as is, without validation.
    """

    __slots__ = ("_cert", "_der", "_sha256")

    def __init__(self, certificate: x509.Certificate) -> None:
        self._cert = certificate
        self._der = certificate.public_bytes(Encoding.DER)
        self._sha256 = hashlib.sha256(self._der).hexdigest()

    @classmethod
    def from_pem(cls, pem: bytes | str, root: str | os.PathLike[str] | None = None
                 ) -> Certificate:
        """Validate a PEM certificate against the pool, as a TLS handshake would.

        Valid when the first PEM certificate parses, is inside its validity period, and
        is either a self-signed certificate of the pool (pinned) or issued by a CA of the
        pool, directly or through intermediates that follow it in ``pem`` or sit in the
        pool; every certificate of that chain must be valid now and correctly signed.

        Args:
            pem: the PEM text, at most 1 MiB: the certificate, then its intermediates.
                Other PEM blocks (a private key in the same file) are skipped.
            root: the jobber root whose ``pool`` directory holds the trusted CAs
                (see `default_root`).

        Returns:
            The certificate (the leaf; `bytes` returns it without the intermediates).

        Raises:
            CertificateError: the input is not a usable certificate, or the pool would
                not accept it; the message says why and what to do.
            TypeError: ``pem`` is neither bytes nor str.
        """
        leaf, intermediates = _parse_input(_pem_bytes(pem))
        _verify(leaf, intermediates, _load_pool(root), datetime.now(timezone.utc))
        return cls(leaf.cert)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str],
                  root: str | os.PathLike[str] | None = None) -> Certificate:
        """Read a PEM file and validate it like `from_pem`.

        Args:
            path: the PEM file (the certificate first, then any intermediates).
            root: the jobber root (see `default_root`).

        Returns:
            The validated certificate.

        Raises:
            CertificateError: the file cannot be read, is over 1 MiB, or holds no valid
                certificate (see `from_pem`); the message starts with the path, which is
                also the error's ``path`` (pool errors keep the pool file's).
        """
        name = os.fspath(path)
        data = _read_file(name, MAX_PEM_BYTES, "the certificate file")
        try:
            return cls.from_pem(data, root)
        except CertificateError as err:
            if err.path is not None:  # about the pool, and already names its file
                raise
            raise CertificateError(f"{name}: {err}", path=name) from None

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string, e.g. ``CN=demo-user,O=jobber demo``."""
        return self._cert.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        """The issuer as an RFC 4514 string."""
        return self._cert.issuer.rfc4514_string()

    @property
    def common_name(self) -> str | None:
        """The subject's first commonName, or None when it has none."""
        names = self._cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    @property
    def not_before(self) -> datetime:
        """The start of the validity period, an aware UTC datetime."""
        return self._cert.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        """The end of the validity period, an aware UTC datetime."""
        return self._cert.not_valid_after_utc

    @property
    def is_ca(self) -> bool:
        """Whether TLS takes it as a CA (basicConstraints CA:TRUE, or a version-1 root)."""
        try:
            return _Facts(self._cert, self._der, "").ca_kind() != 0
        except (ValueError, UnsupportedAlgorithm):  # unusable as a CA or as anything
            return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Certificate):
            return NotImplemented
        return self._der == other._der

    def __hash__(self) -> int:
        return hash(self._sha256)

    def __repr__(self) -> str:
        return (f"<Certificate {self.subject!r} issued by {self.issuer!r}, valid until "
                f"{_when(self.not_after)}, sha256 {self._sha256[:16]}…>")

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return _certificate_from_der, (self._der,)  # x509.Certificate does not pickle

    def _store(self) -> JobStore:  # imported late: jobber._storage sits below this module
        from jobber._storage import JobStore

        return JobStore(self.hash())

    def get_jobs(self) -> list[Job]:
        """List this identity's jobs.

        Returns:
            Every job this certificate owns, ended ones included.

        Raises:
            JobError: the job directory cannot be read.
        """
        return self._store().get_jobs()

    def get_job(self, job_id: int) -> Job:
        """Get one of this identity's jobs.

        Args:
            job_id: the job's id.

        Returns:
            The job.

        Raises:
            JobNotFound: this certificate owns no job with that id.
        """
        return self._store().get_job(job_id)

    def generate_job_id(self) -> int:
        """Reserve a new job id, unique even under concurrent callers.

        Returns:
            The id.

        Raises:
            JobError: the job directory cannot be written.
        """
        return self._store().generate_job_id()

    def new_job(self, command: str, limits: Limits | None = None) -> Job:
        """Create (without starting) a job owned by this identity.

        Args:
            command: the shell command to run.
            limits: resource limits; None for none.

        Returns:
            The new job, in state "created"; ``job.start()`` runs it.

        Raises:
            JobError: the job cannot be created.
        """
        return self._store().new_job(command, limits)

    def hash(self) -> str:
        """The lowercase hex SHA-256 of the DER encoding, under which jobs are stored.

        Equal to ``openssl x509 -noout -fingerprint -sha256`` without the colons,
        lowercased.

        Returns:
            64 hex digits.
        """
        return self._sha256

    def bytes(self) -> bytes:  # last in the class: the name shadows the builtin within it
        """The certificate as PEM (the leaf alone, without intermediates).

        Returns:
            The PEM encoding.
        """
        return self._cert.public_bytes(Encoding.PEM)


def _certificate_from_der(der: bytes) -> Certificate:
    return Certificate(x509.load_der_x509_certificate(der))


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _canonical_name(name: x509.Name) -> _NameKey:
    # X509_NAME_cmp compares a canonical form: string values lose leading and trailing
    # space, runs of white space become one space, ASCII is lowercased, and the ASN.1
    # string type is ignored. cryptography's verify_directly_issued_by compares the raw
    # encodings instead, which is why signatures are checked by hand in _signature_ok.
    def value(v: object) -> object:
        return _ascii_lower(_SPACE.sub(" ", v.strip(" \t\n\v\f\r"))) if isinstance(v, str) else v

    return tuple(frozenset((a.oid.dotted_string, value(a.value)) for a in rdn)
                 for rdn in name.rdns)


class _Facts:
    """A parsed certificate and what chain building asks of it, worked out once."""

    def __init__(self, cert: x509.Certificate, der: bytes, origin: str) -> None:
        self.cert, self.der, self.origin = cert, der, origin  # origin: a pool file, or ""
        self.subject = _canonical_name(cert.subject)
        self.issuer = _canonical_name(cert.issuer)
        self.key: _PublicKey = cert.public_key()  # type: ignore[assignment]
        self.extensions = {ext.oid.dotted_string: ext for ext in cert.extensions}
        self.basic: x509.BasicConstraints | None = self.extension(ExtensionOID.BASIC_CONSTRAINTS)
        self.usage: x509.KeyUsage | None = self.extension(ExtensionOID.KEY_USAGE)
        self.ext_usage: x509.ExtendedKeyUsage | None = self.extension(
            ExtensionOID.EXTENDED_KEY_USAGE)
        skid = self.extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        self.skid: bytes | None = None if skid is None else skid.digest
        self.akid: x509.AuthorityKeyIdentifier | None = self.extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        self.unhandled = sorted(oid for oid, ext in self.extensions.items()
                                if ext.critical and oid not in _HANDLED_CRITICAL)
        self.self_issued = self.subject == self.issuer
        self.self_signed = self.self_issued and _likely_issued(self, self)
        self.not_before, self.not_after = cert.not_valid_before_utc, cert.not_valid_after_utc

    @property
    def label(self) -> str:
        return self.cert.subject.rfc4514_string() or "(empty subject)"

    def extension(self, oid: x509.ObjectIdentifier) -> Any:  # the value, or None
        ext = self.extensions.get(oid.dotted_string)
        return None if ext is None else ext.value

    def ca_kind(self) -> int:
        """X509_check_ca: 0 not a CA, 1 CA:TRUE, 3 v1 self-signed root, 4 keyCertSign only."""
        if self.usage is not None and not self.usage.key_cert_sign:
            return 0
        if self.basic is not None:
            return 1 if self.basic.ca else 0
        if self.cert.version == x509.Version.v1 and self.self_signed:
            return 3
        return 4 if self.usage is not None else 0


def _likely_issued(issuer: _Facts, child: _Facts) -> bool:
    # ossl_x509_likely_issued: the names match, the authority key identifier (if any)
    # fits the issuer, and the signature algorithm fits the issuer's key type. The
    # signature itself is checked once the chain is built, as OpenSSL does.
    if issuer.subject != child.issuer:
        return False
    akid = child.akid
    if akid is not None:
        if akid.key_identifier is not None and issuer.skid is not None \
                and akid.key_identifier != issuer.skid:
            return False
        if akid.authority_cert_serial_number is not None \
                and akid.authority_cert_serial_number != issuer.cert.serial_number:
            return False
        directories = [g for g in akid.authority_cert_issuer or ()
                       if isinstance(g, x509.DirectoryName)]
        if directories and _canonical_name(directories[0].value) != issuer.issuer:
            return False
    key_type = _KEY_TYPE_OF_SIGNATURE.get(child.cert.signature_algorithm_oid)
    return key_type is not None and isinstance(issuer.key, key_type)


def _signature_ok(child: _Facts, issuer: _Facts) -> bool:
    cert, key = child.cert, issuer.key
    try:
        if isinstance(key, rsa.RSAPublicKey):  # PKCS#1 v1.5 or PSS, as the cert says
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_algorithm_parameters,  # type: ignore[arg-type]
                       cert.signature_hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_algorithm_parameters)  # type: ignore[arg-type]
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_hash_algorithm)  # type: ignore[arg-type]
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _key_bits(key: _PublicKey) -> int:
    # EVP_PKEY_get_security_bits, at the key sizes certificates use.
    if isinstance(key, ec.EllipticCurvePublicKey):
        size, steps = key.curve.key_size, _EC_STRENGTH
    elif isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        size, steps = key.key_size, _RSA_STRENGTH
    else:
        return 224 if isinstance(key, ed448.Ed448PublicKey) else 128
    return next((strength for bits, strength in steps if size >= bits), 0)


def _digest_bits(cert: x509.Certificate) -> int:
    oid = cert.signature_algorithm_oid
    if oid in (_S.ED25519, _S.ED448):
        return 128 if oid == _S.ED25519 else 224
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return 0
    return _DIGEST_BITS.get(digest.name, 0) if digest is not None else 0


@functools.lru_cache(maxsize=1)
def _security_level() -> int:
    # The level of the context the server builds (2 with CPython >= 3.10 and most
    # distributions' openssl.cnf): it sets the minimum key size and digest strength.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).security_level


def _verify(leaf: _Facts, intermediates: list[_Facts], pool: _Pool, now: datetime) -> None:
    """Raise CertificateError unless a TLS handshake against the pool would accept leaf."""
    renew = ("make a new one" if leaf.self_signed else
             f"get a new one from its CA ({leaf.cert.issuer.rfc4514_string()})")
    _check_time(leaf, now, f"the certificate {leaf.label}", renew)
    chain, trusted_from = _build_chain(leaf, intermediates, pool, now)
    _check_chain(chain, trusted_from, now)


def _pick(candidates: list[_Facts], child: _Facts, chain: list[_Facts],
          now: datetime) -> _Facts | None:
    # X509_STORE_CTX_get1_issuer: the first plausible issuer that is currently valid,
    # else the one that expired last (so that the error names the expired CA).
    fits = [c for c in candidates if _likely_issued(c, child) and c not in chain]
    valid = [c for c in fits if c.not_before <= now <= c.not_after]
    return valid[0] if valid else max(fits, key=lambda c: c.not_after, default=None)


def _build_chain(leaf: _Facts, intermediates: list[_Facts], pool: _Pool,
                 now: datetime) -> tuple[list[_Facts], int]:
    """The chain, leaf first, and the index where the pool's certificates start."""
    pinned = pool.by_der.get(leaf.der)
    if pinned is not None and leaf.self_signed:
        return [pinned], 0  # a trust anchor presented as itself; its signature is moot
    chain, trusted_from, current = [leaf], -1, leaf
    while len(chain) <= _MAX_DEPTH:
        issuer = _pick(pool.by_subject.get(current.issuer, []), current, chain, now)
        if issuer is not None:
            trusted_from = len(chain) if trusted_from < 0 else trusted_from
        elif trusted_from < 0 and not current.self_signed:
            # The peer's certificates count only until the chain reaches the pool
            # (trusted first, OpenSSL's default since 1.1.0).
            issuer = _pick([c for c in intermediates if c.subject == current.issuer],
                           current, chain, now)
        if issuer is None:
            raise _no_issuer(chain, trusted_from, pool)
        chain.append(issuer)
        if trusted_from >= 0 and issuer.self_signed:
            return chain, trusted_from
        current = issuer
    raise CertificateError(f"the chain of {leaf.label} is longer than {_MAX_DEPTH} "
                           "certificates: send only the certificate and its intermediates")


def _no_issuer(chain: list[_Facts], trusted_from: int, pool: _Pool) -> CertificateError:
    leaf, top, where = chain[0], chain[-1], pool.directory
    issuer = top.cert.issuer.rfc4514_string()
    if top.self_signed:
        if top is leaf:
            return CertificateError(
                f"the certificate {leaf.label} is self-signed and not in the pool {where}: "
                f"copy it into {where} to pin it, or use a certificate issued by a pool CA")
        return CertificateError(
            f"the chain of {leaf.label} ends at the self-signed CA {top.label} from the PEM, "
            f"which is not in the pool {where}: if you trust that CA, copy its certificate "
            f"into {where}")
    in_pool = pool.by_der.get(top.der)
    if in_pool is not None:  # a pool intermediate, or a pinned leaf that is not self-signed
        return CertificateError(
            f"{top.label} is in the pool ({in_pool.origin}) but is not self-signed, and its "
            f"issuer {issuer} is not in the pool: TLS trusts only chains that end at a "
            f"self-signed pool certificate, so add the certificate of {issuer} to {where}")
    what = (f"the certificate {leaf.label}" if top is leaf else
            f"the intermediate CA {top.label} (in the chain of {leaf.label})")
    if not pool.entries:
        return CertificateError(
            f"{what} was issued by {issuer}, but the pool {where} is empty or missing: copy "
            f"the certificate of {issuer} into {where}")
    if top.issuer in pool.by_subject:
        return CertificateError(
            f"{what} names {issuer} as its issuer, and the pool has a CA of that name, but "
            f"with another key (the key identifier or key type differ): get it reissued by "
            f"the pool's CA, or put the CA that issued it in the pool")
    known = ", ".join(sorted({e.label for e in pool.entries})[:5])
    return CertificateError(
        f"{what} was issued by {issuer}, which is not in the pool {where}: copy the "
        f"certificate of {issuer} into {where}, or use a certificate issued by a CA in the "
        f"pool ({known})")


def _role(i: int, n: int, trusted_from: int, facts: _Facts) -> str:
    if i == 0:
        return f"the certificate {facts.label}"
    if i >= trusted_from:
        kind = "CA" if i == n - 1 else "intermediate CA"
        return f"the {kind} {facts.label} in the pool ({facts.origin})"
    return f"the intermediate CA {facts.label} from the PEM"


def _check_time(facts: _Facts, now: datetime, role: str, renew: str) -> None:
    if now < facts.not_before:
        raise CertificateError(
            f"{role} is not valid before {_when(facts.not_before)} (it is {_when(now)}): "
            f"wait until then, or fix the clock of this machine or of the CA that issued it")
    if now > facts.not_after:
        raise CertificateError(f"{role} expired on {_when(facts.not_after)}: {renew}")


def _check_chain(chain: list[_Facts], trusted_from: int, now: datetime) -> None:
    # check_chain, check_auth_level, internal_verify and check_name_constraints of
    # x509_vfy.c, in that order.
    n, path_len = len(chain), 0
    roles = [_role(i, n, trusted_from, facts) for i, facts in enumerate(chain)]
    for i, facts in enumerate(chain):
        role = roles[i]
        if facts.unhandled:
            raise CertificateError(
                f"{role} has a critical extension TLS does not handle "
                f"({', '.join(facts.unhandled)}), so every handshake with it fails: reissue "
                f"it without that extension, or with it non-critical")
        if _PROXY_CERT_INFO in facts.extensions:
            raise CertificateError(f"{role} is a proxy certificate, which TLS refuses: use "
                                   f"a regular client certificate")
        kind = facts.ca_kind()
        if (0 < i < n - 1 and kind != 1) or (i == n - 1 and n > 1 and kind == 0):
            raise CertificateError(
                f"{role} issued {chain[i - 1].label} but is not a CA certificate "
                f"(basicConstraints CA:TRUE missing, or keyUsage without keyCertSign): "
                f"reissue it with basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign")
        # Purpose "sslclient" (check_purpose_ssl_client): an extendedKeyUsage anywhere in
        # the chain must allow clientAuth; the leaf's keyUsage must allow signing.
        if facts.ext_usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in facts.ext_usage:
            names = ", ".join(_EKU_NAMES.get(o, o.dotted_string) for o in facts.ext_usage)
            fix = ("use a client certificate, or reissue it with extendedKeyUsage=clientAuth"
                   if i == 0 else "reissue it without extendedKeyUsage, or with clientAuth")
            raise CertificateError(f"{role} is not for TLS client authentication (its "
                                   f"extendedKeyUsage is {names}, without clientAuth): {fix}")
        if i == 0 and facts.usage is not None and not (
                facts.usage.digital_signature or facts.usage.key_agreement):
            raise CertificateError(
                f"{role} has a keyUsage without digitalSignature, which TLS client "
                f"authentication needs: reissue it with keyUsage=digitalSignature")
        limit = facts.basic.path_length if facts.basic is not None else None
        if i > 1 and limit is not None and path_len > limit:
            raise CertificateError(
                f"{role} allows {limit} intermediate CA(s) below it (pathLenConstraint) but "
                f"the chain has {path_len}: send a shorter chain, or reissue the CA")
        if i > 0 and not facts.self_issued:
            path_len += 1
    level = _security_level()
    min_bits = _LEVEL_BITS.get(level, 0)
    for i, facts in enumerate(chain):
        if _key_bits(facts.key) < min_bits:
            raise CertificateError(
                f"{roles[i]} has a key of {_key_bits(facts.key)}-bit strength; TLS at "
                f"security level {level} needs {min_bits}: reissue it with RSA-2048 or "
                f"ECDSA P-256 or better")
        if i < n - 1 and _digest_bits(facts.cert) < min_bits:  # the anchor's is moot
            digest = facts.cert.signature_hash_algorithm
            raise CertificateError(
                f"{roles[i]} is signed with a weak digest ({digest.name if digest else '?'}) "
                f"that TLS at security level {level} refuses: reissue it signed with SHA-256")
    for i in range(n - 1, -1, -1):
        facts = chain[i]
        if i > 0:
            _check_time(facts, now, roles[i],
                        f"renew it (reissue it with the same key) and replace {facts.origin}"
                        if i >= trusted_from else
                        "send its renewed certificate along with the client certificate")
        if i < n - 1 and not _signature_ok(facts, chain[i + 1]):
            raise CertificateError(
                f"the signature of {facts.label} does not verify with the key of "
                f"{roles[i + 1]}: it was signed by another key under the same issuer name; "
                f"get it reissued by that CA, or put the CA that really signed it in the pool")
    _check_name_constraints(chain, roles)


def _check_name_constraints(chain: list[_Facts], roles: list[str]) -> None:
    # check_name_constraints (x509_vfy.c), NAME_CONSTRAINTS_check (v3_ncons.c): each
    # certificate below a CA with nameConstraints, self-issued intermediates excepted,
    # must fit them; the subject counts as a directoryName, its emailAddress attributes
    # as rfc822Names, and the leaf's host-like commonNames as dNSNames when it has no
    # DNS subjectAltName.
    constrained = [(j, c.extension(ExtensionOID.NAME_CONSTRAINTS)) for j, c in enumerate(chain)]
    constrained = [(j, nc) for j, nc in constrained if nc is not None]
    for i, facts in enumerate(chain):
        if not any(j > i for j, _ in constrained) or (i > 0 and facts.self_issued):
            continue
        subject = facts.cert.subject
        names: list[tuple[type, object]] = [(x509.DirectoryName, subject)] if subject.rdns else []
        names += [(x509.RFC822Name, str(a.value))
                  for a in subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
        alt = facts.extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names += [(type(g), g.value) for g in alt] if alt is not None else []
        if i == 0 and all(kind is not x509.DNSName for kind, _ in names):
            cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            names += [(x509.DNSName, dns) for dns in map(_cn_as_dns, cns) if dns]
        for j, constraints in constrained:
            for kind, value in names if j > i else ():
                problem = _constraint_problem(kind, value, constraints)
                if problem:
                    shown = value.rfc4514_string() if isinstance(value, x509.Name) else value
                    raise CertificateError(
                        f"{roles[i]} has the name {shown}, which {problem} {roles[j]}: use a "
                        f"certificate whose names fit them, or one from another CA")


def _cn_as_dns(attribute: x509.NameAttribute[Any]) -> str | None:
    # cn2dnsid (v3_ncons.c): a commonName is a host name when it has two or more labels
    # of letters, digits, '_' and inner '-'.
    value = str(attribute.value).rstrip("\0")
    dotted = False
    for i, c in enumerate(value):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        if 0 < i < len(value) - 1 and (c == "-" or (
                c == "." and value[i + 1] not in ".-" and value[i - 1] != "-")):
            dotted = dotted or c == "."
            continue
        return None
    return value if dotted else None


def _constraint_problem(kind: type, value: object, constraints: x509.NameConstraints) -> str:
    # nc_match (v3_ncons.c): when subtrees of the name's type are permitted, one must
    # match (the first match ends the search), and no excluded subtree may match.
    matched = None
    for base in constraints.permitted_subtrees or ():
        if type(base) is kind and not matched:
            matched = _within(kind, value, base.value)
            if matched is None:
                return "TLS cannot check against the nameConstraints of"
    if matched is False:
        return "is outside the nameConstraints of"
    for base in constraints.excluded_subtrees or ():
        if type(base) is kind:
            inside = _within(kind, value, base.value)
            if inside is None:
                return "TLS cannot check against the nameConstraints of"
            if inside:
                return "is excluded by the nameConstraints of"
    return ""


def _within(kind: type, value: Any, limit: Any) -> bool | None:
    """Whether a name lies in a subtree; None where OpenSSL cannot tell (a failure)."""
    if kind is x509.DirectoryName:
        prefix = _canonical_name(limit)
        return _canonical_name(value)[:len(prefix)] == prefix
    if kind is x509.DNSName:  # nc_dns: whole labels may be added on the left
        if len(value) < len(limit) or (len(value) > len(limit) and not limit.startswith(".")
                                       and value[-len(limit) - 1] != "."):
            return False
        return not limit or _ascii_lower(value[-len(limit):]) == _ascii_lower(limit)
    if kind is x509.RFC822Name:  # nc_email: ".host" is a domain; the local part is exact
        if "@" not in value:
            return None
        if "@" not in limit and limit.startswith("."):
            return len(value) > len(limit) and \
                _ascii_lower(value[-len(limit):]) == _ascii_lower(limit)
        local, _, host = value.rpartition("@")
        base_local, _, base_host = limit.rpartition("@")
        return (not base_local or base_local == local) and \
            _ascii_lower(host) == _ascii_lower(base_host)
    if kind is x509.UniformResourceIdentifier:  # nc_uri: compares the host only
        colon = value.find(":")
        if colon < 0 or value[colon + 1:colon + 3] != "//":
            return None
        rest = value[colon + 3:]
        end = rest.find(":") if ":" in rest else rest.find("/")
        host = rest if end < 0 else rest[:end]
        if not host:
            return None
        if limit.startswith("."):
            return len(host) > len(limit) and \
                _ascii_lower(host[-len(limit):]) == _ascii_lower(limit)
        return _ascii_lower(host) == _ascii_lower(limit)
    if kind is x509.IPAddress and hasattr(limit, "netmask"):
        return value.version == limit.version and value in limit
    return None


def _pem_bytes(pem: bytes | str) -> bytes:
    if isinstance(pem, str):
        if len(pem) > MAX_PEM_BYTES:  # every character is at least one byte
            raise _oversized(len(pem))
        pem = pem.encode("utf-8", "replace")
    elif isinstance(pem, (bytearray, memoryview)):
        pem = bytes(pem)
    elif not isinstance(pem, bytes):
        raise TypeError(f"from_pem takes the PEM text as bytes or str, not "
                        f"{type(pem).__name__}; for a file use Certificate.from_file(path)")
    if len(pem) > MAX_PEM_BYTES:
        raise _oversized(len(pem))
    return pem


def _oversized(size: int) -> CertificateError:
    return CertificateError(
        f"the input is {size} bytes, over the 1 MiB limit for a certificate: pass one PEM "
        f"certificate (with its intermediates), not a bundle")


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _not_a_certificate(data: bytes) -> str:
    labels = [m.group(1).decode() for m in _PEM_BEGIN.finditer(data)]
    if not data.strip():
        return ("the input is empty: pass the PEM text of a certificate "
                "(-----BEGIN CERTIFICATE-----)")
    if not labels:
        if data[:1] == b"\x30":  # a DER SEQUENCE
            return ("this looks like a binary (DER) certificate, not PEM: convert it with "
                    "`openssl x509 -inform der -in CERT.der -out CERT.pem`")
        return ("this is not PEM (no -----BEGIN CERTIFICATE----- line): pass the contents of "
                "the certificate file, from -----BEGIN CERTIFICATE----- to "
                "-----END CERTIFICATE-----")
    if labels[0].endswith("PRIVATE KEY"):
        return (f"this is a PEM private key ({labels[0]}), not a certificate: pass the "
                f"certificate that goes with it, and keep the key private")
    if labels[0].endswith("CERTIFICATE REQUEST"):
        return ("this is a certificate signing request (CSR), not a certificate: have a CA in "
                "the pool sign it (`openssl x509 -req -in REQ.csr -CA ca.pem -CAkey ca.key "
                "-days 365 -out cert.pem`) and pass the result")
    if labels[0] == "CERTIFICATE":
        return ("the PEM certificate is truncated (no -----END CERTIFICATE----- line): copy "
                "the whole certificate")
    return (f"this PEM holds a {labels[0]}, not a certificate: pass a "
            f"-----BEGIN CERTIFICATE----- PEM")


def _decode_block(body: bytes, origin: str, what: str) -> _Facts:
    text = b"".join(body.split())
    try:
        if not text or b":" in text:  # RFC 1421 headers: an encrypted or legacy PEM
            raise binascii.Error("no plain base64 body")
        der = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise CertificateError(
            f"the base64 of {what} is corrupt ({err}): copy the certificate again, whole, from "
            f"-----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----") from err
    try:
        return _Facts(x509.load_der_x509_certificate(der), der, origin)
    except UnsupportedAlgorithm as err:
        raise CertificateError(
            f"{what} uses an algorithm this system cannot check ({err}): use a certificate "
            f"with an RSA, ECDSA or Ed25519 key") from err
    except (ValueError, TypeError, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType) as err:
        raise CertificateError(
            f"{what} is not a valid X.509 certificate (corrupt DER: {err}): export it again "
            f"from where it was issued") from err


def _parse_input(data: bytes) -> tuple[_Facts, list[_Facts]]:
    """The leaf and the certificates after it, from the PEM given to from_pem."""
    blocks = [m for m in _PEM_BLOCK.finditer(data) if m.group(1) == _CERT_LABEL]
    if not blocks:
        raise CertificateError(_not_a_certificate(data))
    # Other blocks (a private key kept in the same file) are skipped, as OpenSSL does.
    certs = [_decode_block(m.group(2), "", "the certificate" if i == 0 else
                           f"the {_ordinal(i + 1)} certificate of the PEM")
             for i, m in enumerate(blocks)]
    return certs[0], certs[1:]


def _parse_pool_file(path: str, data: bytes) -> list[_Facts]:
    fix = "pool files hold only PEM CA certificates: fix or remove it"
    labels = [m.group(1) for m in _PEM_BEGIN.finditer(data)]
    others = sorted({label.decode() for label in labels if label != _CERT_LABEL})
    if others:
        raise CertificateError(f"the pool file {path} holds {', '.join(others)}; {fix}",
                               path=path)
    blocks = list(_PEM_BLOCK.finditer(data))
    if not blocks or len(blocks) != len(labels):
        raise CertificateError(f"the pool file {path} holds no complete PEM certificate; "
                               f"{fix}", path=path)
    try:
        return [_decode_block(m.group(2), path,
                              f"the {_ordinal(i + 1)} certificate of the pool file {path}")
                for i, m in enumerate(blocks)]
    except CertificateError as err:
        raise CertificateError(str(err), path=path) from err.__cause__


def _read_file(path: str, limit: int, what: str) -> bytes:
    # O_NONBLOCK: a FIFO left where a certificate should be must not hang the reader.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _unreadable(f"{what} {path}", path, err) from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CertificateError(f"{what} {path} is not a regular file (a directory, FIFO "
                                   f"or device): replace it with a PEM file", path=path)
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise _unreadable(f"{what} {path}", path, err) from err
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CertificateError(f"{what} {path} is over {limit >> 20} MiB, too big for "
                               f"certificates: pass the PEM certificate file", path=path)
    return data


def _unreadable(what: str, path: str, err: OSError, mode: str = "a+r") -> CertificateError:
    if isinstance(err, PermissionError):
        return CertificateError(
            f"cannot read {what}: permission denied for uid {os.getuid()}; make it readable "
            f"(chmod {mode} {path}) or run as its owner", path=path)
    return CertificateError(f"cannot read {what}: {err.strerror or err}; check that it "
                            f"exists and holds PEM certificates", path=path)


class _Pool:
    """The parsed pool: its certificates once each, indexed for issuer lookup."""

    def __init__(self, directory: Path, entries: list[_Facts]) -> None:
        self.directory = directory
        self.by_der: dict[bytes, _Facts] = {}
        self.by_subject: dict[_NameKey, list[_Facts]] = {}
        for entry in entries:
            if entry.der not in self.by_der:
                self.by_der[entry.der] = entry
                self.by_subject.setdefault(entry.subject, []).append(entry)
        self.entries = list(self.by_der.values())


_cache_lock = threading.Lock()
_pool_cache: dict[str, tuple[tuple[_Stamp, ...], _Pool]] = {}  # directory -> (stamps, pool)
_file_cache: dict[str, tuple[_Stamp, list[_Facts]]] = {}  # pool file -> (stamp, certs)


def _clear_cache() -> None:
    """Forget every parsed pool (benchmarks time the cold path with this)."""
    with _cache_lock:
        _pool_cache.clear()
        _file_cache.clear()


def _load_pool(root: str | os.PathLike[str] | None) -> _Pool:
    # Every call lists and stats the pool, so an edit takes effect at once; a file is
    # parsed again only when its (path, mtime_ns, size, inode, ctime_ns) changed.
    directory = default_root(root) / "pool"
    try:
        with os.scandir(directory) as listing:  # str paths: pathlib costs more than stat
            paths = sorted(entry.path for entry in listing
                           if entry.name.endswith(".pem") and not entry.name.startswith("."))
    except FileNotFoundError:
        return _Pool(directory, [])
    except NotADirectoryError as err:
        raise CertificateError(
            f"the pool {directory} is not a directory: make it a directory of PEM CA "
            f"certificates (or point JOBBER_ROOT elsewhere)", path=str(directory)) from err
    except OSError as err:
        raise _unreadable(f"the pool {directory}", str(directory), err, "a+rx") from err
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # removed since the listing: no longer in the pool
        except OSError as err:
            raise _unreadable(f"the pool file {path}", path, err) from err
        stamps.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
    key = tuple(stamps)
    with _cache_lock:
        hit = _pool_cache.get(str(directory))
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed: dict[str, tuple[_Stamp, list[_Facts]]] = {}
    for stamp in stamps:
        with _cache_lock:
            cached = _file_cache.get(stamp[0])
        if cached is None or cached[0] != stamp:
            data = _read_file(stamp[0], _MAX_POOL_FILE_BYTES, "the pool file")
            cached = (stamp, _parse_pool_file(stamp[0], data))
        parsed[stamp[0]] = cached
    pool = _Pool(directory, [facts for _, certs in parsed.values() for facts in certs])
    with _cache_lock:
        _pool_cache[str(directory)] = (key, pool)
        prefix = str(directory) + os.sep
        for path in [p for p in _file_cache if p.startswith(prefix)]:
            del _file_cache[path]  # files gone from the pool
        _file_cache.update(parsed)
    return pool
