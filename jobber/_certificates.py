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
extensions, key and digest strength at the TLS context's security level, and the validity
of every certificate in the chain, the pool CA included.

Not mirrored: nameConstraints and certificate policies (OpenSSL evaluates the former on
every handshake), and the verify flags a server could add (``VERIFY_X509_STRICT``,
``VERIFY_X509_PARTIAL_CHAIN``, both set by ``ssl.create_default_context`` on Python 3.13+);
the server must build its context without them for the verdicts to agree.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID

from jobber._errors import CertificateError

if TYPE_CHECKING:
    from jobber import Job, Limits

__all__ = ["MAX_PEM_BYTES", "Certificate", "default_root", "get_client_certificates"]

MAX_PEM_BYTES = 1 << 20
"""Input over 1 MiB is refused before parsing: a certificate with its intermediates is a
few KiB, and parsing attacker-sized input costs memory and time."""

_MAX_DEPTH = 100  # OpenSSL's default verify depth (X509_VERIFY_PARAM "default")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CERT_LABEL = b"CERTIFICATE"

# Critical extensions OpenSSL understands (X509_supported_extension in v3_purp.c); any other
# critical extension fails the handshake with "unhandled critical extension".
_HANDLED_CRITICAL = {
    "2.16.840.1.113730.1.1",  # netscape-cert-type
    ExtensionOID.KEY_USAGE.dotted_string,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,
    ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
    ExtensionOID.CERTIFICATE_POLICIES.dotted_string,
    ExtensionOID.CRL_DISTRIBUTION_POINTS.dotted_string,
    ExtensionOID.EXTENDED_KEY_USAGE.dotted_string,
    "1.3.6.1.5.5.7.1.7",  # sbgp-ipAddrBlock
    "1.3.6.1.5.5.7.1.8",  # sbgp-autonomousSysNum
    ExtensionOID.OCSP_NO_CHECK.dotted_string,
    ExtensionOID.POLICY_CONSTRAINTS.dotted_string,
    "1.3.6.1.5.5.7.1.14",  # proxyCertInfo
    ExtensionOID.NAME_CONSTRAINTS.dotted_string,
    ExtensionOID.POLICY_MAPPINGS.dotted_string,
    ExtensionOID.INHIBIT_ANY_POLICY.dotted_string,
}
_PROXY_CERT_INFO = "1.3.6.1.5.5.7.1.14"

_S = SignatureAlgorithmOID
_SIGNATURE_FAMILY = {
    **dict.fromkeys([_S.RSA_WITH_MD5, _S.RSA_WITH_SHA1, _S.RSA_WITH_SHA224, _S.RSA_WITH_SHA256,
                     _S.RSA_WITH_SHA384, _S.RSA_WITH_SHA512, _S.RSA_WITH_SHA3_224,
                     _S.RSA_WITH_SHA3_256, _S.RSA_WITH_SHA3_384, _S.RSA_WITH_SHA3_512,
                     _S.RSASSA_PSS], rsa.RSAPublicKey),
    **dict.fromkeys([_S.ECDSA_WITH_SHA1, _S.ECDSA_WITH_SHA224, _S.ECDSA_WITH_SHA256,
                     _S.ECDSA_WITH_SHA384, _S.ECDSA_WITH_SHA512, _S.ECDSA_WITH_SHA3_224,
                     _S.ECDSA_WITH_SHA3_256, _S.ECDSA_WITH_SHA3_384, _S.ECDSA_WITH_SHA3_512],
                    ec.EllipticCurvePublicKey),
    **dict.fromkeys([_S.DSA_WITH_SHA1, _S.DSA_WITH_SHA224, _S.DSA_WITH_SHA256,
                     _S.DSA_WITH_SHA384, _S.DSA_WITH_SHA512], dsa.DSAPublicKey),
    _S.ED25519: ed25519.Ed25519PublicKey,
    _S.ED448: ed448.Ed448PublicKey,
}
# Security bits of a signature's digest, as OpenSSL rates them (ossl_x509_init_sig_info:
# chosen-prefix collisions put SHA-1 at 63 bits and MD5 at 39).
_DIGEST_BITS = {"md5": 39, "sha1": 63, "sha224": 112, "sha256": 128, "sha384": 192,
                "sha512": 256, "sha3-224": 112, "sha3-256": 128, "sha3-384": 192,
                "sha3-512": 256}
_LEVEL_BITS = {1: 80, 2: 112, 3: 128, 4: 192, 5: 256}  # SSL_CTX_set_security_level(3)

_PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey,
                   ed25519.Ed25519PublicKey, ed448.Ed448PublicKey]


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


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _canonical_name(name: x509.Name) -> tuple[frozenset[tuple[str, object]], ...]:
    # X509_NAME_cmp compares a canonical form: string values lose leading and trailing
    # space, runs of white space become one space, ASCII is lowercased, and the ASN.1
    # string type is ignored. cryptography's verify_directly_issued_by compares the raw
    # encodings instead, which is why signatures are checked by hand below.
    def value(v: object) -> object:
        if isinstance(v, str):
            return _SPACE.sub(" ", v.strip(" \t\n\v\f\r")).translate(_ASCII_LOWER)
        return v

    return tuple(frozenset((a.oid.dotted_string, value(a.value)) for a in rdn) for rdn in name.rdns)


@dataclass(eq=False)
class _Facts:
    """A parsed certificate and what chain building asks of it, computed once."""

    cert: x509.Certificate
    der: bytes
    origin: str  # "the PEM", or the pool file it came from
    subject: tuple = field(init=False)
    issuer: tuple = field(init=False)
    key: _PublicKey = field(init=False)

    def __post_init__(self) -> None:
        cert = self.cert
        self.subject = _canonical_name(cert.subject)
        self.issuer = _canonical_name(cert.issuer)
        self.key = cert.public_key()  # type: ignore[assignment]
        exts = {ext.oid.dotted_string: ext for ext in cert.extensions}
        self.extensions = exts

        def get(oid: x509.ObjectIdentifier):  # noqa: ANN202
            ext = exts.get(oid.dotted_string)
            return None if ext is None else ext.value

        self.basic: x509.BasicConstraints | None = get(ExtensionOID.BASIC_CONSTRAINTS)
        self.usage: x509.KeyUsage | None = get(ExtensionOID.KEY_USAGE)
        self.ext_usage: x509.ExtendedKeyUsage | None = get(ExtensionOID.EXTENDED_KEY_USAGE)
        skid = get(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        self.skid: bytes | None = None if skid is None else skid.digest
        self.akid: x509.AuthorityKeyIdentifier | None = get(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        self.unhandled = sorted(o for o, e in exts.items()
                                if e.critical and o not in _HANDLED_CRITICAL)
        self.self_issued = self.subject == self.issuer
        self.self_signed = self.self_issued and _likely_issued(self, self)
        self.label = cert.subject.rfc4514_string() or "(empty subject)"

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
    # ossl_x509_likely_issued: names match, the authority key identifier (when present)
    # fits the issuer, and the signature algorithm fits the issuer's key type. The
    # signature itself is checked later, once the chain is built, as OpenSSL does.
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
        for general_name in akid.authority_cert_issuer or ():
            if isinstance(general_name, x509.DirectoryName):
                if _canonical_name(general_name.value) != issuer.issuer:
                    return False
                break
    family = _SIGNATURE_FAMILY.get(child.cert.signature_algorithm_oid)
    return family is not None and isinstance(issuer.key, family)


def _signature_ok(child: _Facts, issuer: _Facts) -> bool:
    cert, key = child.cert, issuer.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
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
    # EVP_PKEY_get_security_bits, at the sizes certificates use.
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        size = key.key_size
        for bits, strength in ((15360, 256), (7680, 192), (3072, 128), (2048, 112),
                               (1024, 80)):
            if size >= bits:
                return strength
        return size // 16
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = key.curve.key_size
        for bits, strength in ((512, 256), (384, 192), (256, 128), (224, 112), (160, 80)):
            if size >= bits:
                return strength
        return size // 2
    return 224 if isinstance(key, ed448.Ed448PublicKey) else 128


def _digest_bits(cert: x509.Certificate) -> int:
    oid = cert.signature_algorithm_oid
    if oid == _S.ED25519:
        return 128
    if oid == _S.ED448:
        return 224
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return 0
    return _DIGEST_BITS.get(digest.name, 0) if digest is not None else 0


@functools.lru_cache(maxsize=1)
def _security_level() -> int:
    # The level of the context the server builds (CPython 3.10+ and Debian's
    # openssl.cnf both say 2): it decides which key sizes and digests a handshake takes.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).security_level


def _verify(leaf: _Facts, extras: list[_Facts], pool: _Pool, now: datetime) -> None:
    """Raise CertificateError unless a TLS handshake against the pool would accept leaf."""
    _check_time(leaf, now, 0, 1, None)
    chain, trusted_from = _build_chain(leaf, extras, pool, now)
    _check_chain(chain, trusted_from, now)


def _pick(candidates: list[_Facts], child: _Facts, chain: list[_Facts],
          now: datetime) -> _Facts | None:
    # X509_STORE_CTX_get1_issuer: the first plausible issuer that is currently valid,
    # else the one that expired last (so the error names the expired CA).
    fits = [c for c in candidates if _likely_issued(c, child) and c not in chain]
    for c in fits:
        if c.cert.not_valid_before_utc <= now <= c.cert.not_valid_after_utc:
            return c
    return max(fits, key=lambda c: c.cert.not_valid_after_utc, default=None)


def _build_chain(leaf: _Facts, extras: list[_Facts], pool: _Pool,
                 now: datetime) -> tuple[list[_Facts], int]:
    # Returns the chain, leaf first, and the index where the pool's certificates start.
    pinned = pool.by_der.get(leaf.der)
    if pinned is not None and leaf.self_signed:
        return [pinned], 0  # a trust anchor presented as itself; its signature is moot
    chain, trusted_from, current = [leaf], -1, leaf
    while len(chain) <= _MAX_DEPTH:
        issuer = _pick(pool.by_subject.get(current.issuer, []), current, chain, now)
        if issuer is not None:
            trusted_from = len(chain) if trusted_from < 0 else trusted_from
            chain.append(issuer)
            if issuer.self_signed:
                return chain, trusted_from
        elif trusted_from < 0 and not current.self_signed:
            # The peer's own certificates are consulted only until the chain reaches
            # the pool ("trusted first", OpenSSL's default since 1.1.0).
            issuer = _pick([e for e in extras if e.subject == current.issuer], current,
                           chain, now)
            if issuer is None:
                break
            chain.append(issuer)
        else:
            break
        current = issuer
    else:
        raise CertificateError(f"the chain of {leaf.label} is longer than {_MAX_DEPTH} "
                               "certificates: send only the leaf and its intermediates")
    raise _no_issuer(chain, trusted_from, pool)


def _no_issuer(chain: list[_Facts], trusted_from: int, pool: _Pool) -> CertificateError:
    leaf, top = chain[0], chain[-1]
    where = pool.directory
    issuer = top.cert.issuer.rfc4514_string()
    if top.self_signed and top is leaf:
        return CertificateError(
            f"the certificate {leaf.label} is self-signed and not in the pool {where}: copy "
            f"it into {where} to pin it, or use a certificate issued by a CA in the pool")
    if top.self_signed:
        return CertificateError(
            f"the chain of {leaf.label} ends at the self-signed CA {top.label} from the PEM, "
            f"which is not in the pool {where}: if you trust that CA, copy its "
            f"certificate into {where}")
    if trusted_from >= 0 or leaf.der in pool.by_der:
        return CertificateError(
            f"{top.label} is in the pool ({pool.by_der[top.der].origin}) but is not "
            f"self-signed, and its issuer {issuer} is not in the pool: a TLS handshake "
            f"only trusts a chain that ends at a self-signed pool certificate, so add the "
            f"certificate of {issuer} to {where}")
    what = f"the certificate {leaf.label}" if top is leaf else \
        f"the intermediate CA {top.label} (in the chain of {leaf.label})"
    if not pool.entries:
        return CertificateError(
            f"{what} was issued by {issuer}, but the pool {where} is empty or missing: "
            f"copy the certificate of {issuer} into {where}")
    if top.issuer in pool.by_subject:
        return CertificateError(
            f"{what} names {issuer} as its issuer, and the pool has a CA of that name, "
            f"but with another key (key identifier or key type differ): it was issued "
            f"by a different CA; put that CA in the pool, or get the certificate reissued")
    return CertificateError(
        f"{what} was issued by {issuer}, which is not in the pool {where}: copy the "
        f"certificate of {issuer} into {where}, or use a certificate issued by a CA "
        f"in the pool ({', '.join(sorted({e.label for e in pool.entries})[:5])})")


def _role(i: int, n: int, trusted_from: int, facts: _Facts) -> str:
    if i == 0:
        return f"the certificate {facts.label}"
    if i >= trusted_from:
        kind = "CA" if i == n - 1 else "intermediate CA"
        return f"the {kind} {facts.label} in the pool ({facts.origin})"
    return f"the intermediate CA {facts.label} from the PEM"


def _check_time(facts: _Facts, now: datetime, i: int, n: int, trusted_from: int | None) -> None:
    before, after = facts.cert.not_valid_before_utc, facts.cert.not_valid_after_utc
    role = _role(i, n, trusted_from if trusted_from is not None else n, facts)
    if now < before:
        raise CertificateError(
            f"{role} is not valid before {_when(before)} (it is {_when(now)}): wait until "
            f"then, or fix the clock of this machine or of the CA that issued it")
    if now > after:
        if i == 0:
            fix = ("make a new one" if facts.self_signed else
                   f"get a new one from its CA ({facts.cert.issuer.rfc4514_string()})")
        elif trusted_from is not None and i >= trusted_from:
            fix = f"renew it (reissue it with the same key) and replace {facts.origin}"
        else:
            fix = "send its renewed certificate along with the client certificate"
        raise CertificateError(f"{role} expired on {_when(after)}: {fix}")


def _check_chain(chain: list[_Facts], trusted_from: int, now: datetime) -> None:
    # check_chain, check_auth_level and internal_verify of x509_vfy.c, in that order.
    n, level, path_len = len(chain), _security_level(), 0
    min_bits = _LEVEL_BITS.get(level, 0)
    for i, facts in enumerate(chain):
        role = _role(i, n, trusted_from, facts)
        if facts.unhandled:
            raise CertificateError(
                f"{role} has a critical extension TLS does not handle "
                f"({', '.join(facts.unhandled)}), so every handshake with it fails: "
                f"reissue it without that extension, or with it non-critical")
        if _PROXY_CERT_INFO in facts.extensions:
            raise CertificateError(f"{role} is a proxy certificate, which TLS refuses: "
                                   f"use a regular client certificate")
        kind = facts.ca_kind()
        if (0 < i < n - 1 and kind != 1) or (i == n - 1 and n > 1 and kind == 0):
            raise CertificateError(
                f"{role} issued {chain[i - 1].label} but is not a CA certificate "
                f"(basicConstraints CA:TRUE missing, or keyUsage without keyCertSign): "
                f"reissue it with basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign")
        usage = facts.ext_usage
        if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            names = ", ".join(getattr(o, "_name", o.dotted_string) for o in usage)
            fix = ("use a client certificate, or reissue it with extendedKeyUsage=clientAuth"
                   if i == 0 else "reissue it without extendedKeyUsage, or with clientAuth")
            raise CertificateError(
                f"{role} is not for TLS client authentication (its extendedKeyUsage is "
                f"{names}, without clientAuth): {fix}")
        if i == 0 and facts.usage is not None and not (
                facts.usage.digital_signature or facts.usage.key_agreement):
            raise CertificateError(
                f"{role} has a keyUsage without digitalSignature, which TLS client "
                f"authentication needs: reissue it with keyUsage=digitalSignature")
        limit = facts.basic.path_length if facts.basic is not None else None
        if i > 1 and limit is not None and path_len > limit:
            raise CertificateError(
                f"{role} allows {limit} intermediate CA(s) below it (pathLenConstraint) "
                f"but the chain has {path_len}: send a shorter chain, or reissue the CA")
        if i > 0 and not facts.self_issued:
            path_len += 1
    for i, facts in enumerate(chain):
        role = _role(i, n, trusted_from, facts)
        if min_bits and _key_bits(facts.key) < min_bits:
            raise CertificateError(
                f"{role} has a {_key_bits(facts.key)}-bit-strength key; TLS at security "
                f"level {level} needs {min_bits}: reissue it with RSA 2048+ or ECDSA P-256")
        if min_bits and i < n - 1 and _digest_bits(facts.cert) < min_bits:
            raise CertificateError(
                f"{role} is signed with a weak digest ({facts.cert.signature_algorithm_oid._name}) "
                f"that TLS at security level {level} refuses: reissue it signed with SHA-256")
    for i in range(n - 1, -1, -1):
        facts = chain[i]
        if i > 0:
            _check_time(facts, now, i, n, trusted_from)
        if i < n - 1 and not _signature_ok(facts, chain[i + 1]):
            raise CertificateError(
                f"the signature of {facts.label} does not verify with the key of "
                f"{_role(i + 1, n, trusted_from, chain[i + 1])}: it was signed by another "
                f"key under the same issuer name; get it reissued by that CA, or put the "
                f"CA that really signed it in the pool")


def _ordinal(i: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(i, f"{i}th")


def _not_a_certificate(data: bytes, labels: list[bytes]) -> str:
    if not data.strip():
        return "the input is empty: pass the PEM text of a certificate (-----BEGIN CERTIFICATE-----)"
    if not labels:
        if data[:1] == b"\x30":
            return ("this looks like a binary (DER) certificate, not PEM: convert it with "
                    "`openssl x509 -inform der -in CERT.der -out CERT.pem`")
        return ("this is not PEM (no -----BEGIN CERTIFICATE----- line): pass the contents "
                "of the certificate file, from -----BEGIN CERTIFICATE----- to "
                "-----END CERTIFICATE-----")
    label = labels[0].decode()
    if label.endswith("PRIVATE KEY"):
        return (f"this is a PEM private key ({label}), not a certificate: pass the "
                f"certificate that goes with it, and keep the key private")
    if label.endswith("CERTIFICATE REQUEST"):
        return ("this is a certificate signing request (CSR), not a certificate: have a CA "
                "in the pool sign it (`openssl x509 -req -in REQ.csr -CA ca.pem -CAkey "
                "ca.key -days 365 -out cert.pem`) and pass the result")
    if label == "CERTIFICATE":
        return ("the PEM certificate is truncated (no -----END CERTIFICATE----- line): "
                "copy the whole certificate")
    return f"this PEM holds a {label}, not a certificate: pass a -----BEGIN CERTIFICATE----- PEM"


def _decode_block(body: bytes, origin: str, what: str) -> _Facts:
    b64 = b"".join(body.split())
    try:
        if not b64 or b":" in b64:  # RFC 1421 headers: an encrypted or legacy PEM
            raise binascii.Error("no base64 body")
        der = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as err:
        raise CertificateError(
            f"the base64 of {what} is corrupt ({err}): copy the certificate again, whole, "
            f"from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----") from err
    try:
        return _Facts(x509.load_der_x509_certificate(der), der, origin)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertificateError(
            f"{what} is not a valid X.509 certificate (corrupt DER: {err}): export it "
            f"again from where it was issued") from err


def _parse_input(data: bytes) -> tuple[_Facts, list[_Facts]]:
    """The leaf and the certificates after it, from the PEM given to from_pem."""
    blocks = [m for m in _PEM_BLOCK.finditer(data) if m.group(1) == _CERT_LABEL]
    if not blocks:
        labels = [m.group(1) for m in _PEM_BEGIN.finditer(data)]
        raise CertificateError(_not_a_certificate(data, labels))
    # Other blocks (a private key saved in the same file) are skipped, as OpenSSL does.
    certs = [_decode_block(m.group(2), "the PEM",
                           "the certificate" if i == 0 else
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
        raise CertificateError(str(err), path=path) from None


def _read_file(path: str, limit: int, what: str) -> bytes:
    # O_NONBLOCK: a FIFO dropped where a certificate should be must not hang the reader.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CertificateError(
                f"{what} {path} is not a regular file (a directory, FIFO or device): "
                f"replace it with a PEM file", path=path)
        with os.fdopen(fd, "rb") as file:
            data = file.read(limit + 1)
    except PermissionError as err:
        raise CertificateError(
            f"cannot read {what} {path}: permission denied for uid {os.getuid()}; make it "
            f"readable (chmod a+r {path}) or run as its owner", path=path) from err
    except OSError as err:
        raise CertificateError(f"cannot read {what} {path}: {err.strerror or err}; check "
                               f"that it exists and is a PEM file", path=path) from err
    if len(data) > limit:
        raise CertificateError(f"{what} {path} is over {limit // (1 << 20)} MiB: it cannot "
                               f"be a certificate file; pass the PEM certificate", path=path)
    return data


@dataclass(eq=False)
class _Pool:
    directory: Path
    entries: list[_Facts]
    by_der: dict[bytes, _Facts] = field(default_factory=dict)
    by_subject: dict[tuple, list[_Facts]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unique = []
        for entry in self.entries:
            if entry.der not in self.by_der:
                self.by_der[entry.der] = entry
                self.by_subject.setdefault(entry.subject, []).append(entry)
                unique.append(entry)
        self.entries = unique


_MAX_POOL_FILE_BYTES = 64 << 20
_cache_lock = threading.Lock()
_pool_cache: dict[str, tuple[tuple, _Pool]] = {}
_file_cache: dict[str, tuple[tuple, list[_Facts]]] = {}


def _clear_cache() -> None:
    """Forget the parsed pools (benchmarks measure the cold path with this)."""
    with _cache_lock:
        _pool_cache.clear()
        _file_cache.clear()


def _load_pool(root: str | os.PathLike[str] | None) -> _Pool:
    # Every call stats the pool, so an edited pool takes effect at once; files are
    # re-parsed only when (path, mtime_ns, size, inode, ctime_ns) changed.
    directory = default_root(root) / "pool"
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.endswith(".pem") and not n.startswith("."))
    except FileNotFoundError:
        return _Pool(directory, [])
    except NotADirectoryError as err:
        raise CertificateError(
            f"the pool {directory} is not a directory: make it a directory of PEM CA "
            f"certificates (or point JOBBER_ROOT elsewhere)", path=str(directory)) from err
    except PermissionError as err:
        raise CertificateError(
            f"cannot read the pool {directory}: permission denied for uid {os.getuid()}; "
            f"make it readable (chmod a+rx {directory}) or run as its owner",
            path=str(directory)) from err
    except OSError as err:
        raise CertificateError(f"cannot read the pool {directory}: {err.strerror or err}",
                               path=str(directory)) from err
    stamps = []
    for name in names:
        path = str(directory / name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # removed since listdir: it is simply no longer in the pool
        except OSError as err:
            raise CertificateError(f"cannot read the pool file {path}: "
                                   f"{err.strerror or err}", path=path) from err
        stamps.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
    key = tuple(stamps)
    with _cache_lock:
        hit = _pool_cache.get(str(directory))
    if hit is not None and hit[0] == key:
        return hit[1]
    entries: list[_Facts] = []
    for stamp in stamps:
        path = stamp[0]
        with _cache_lock:
            cached = _file_cache.get(path)
        if cached is None or cached[0] != stamp:
            data = _read_file(path, _MAX_POOL_FILE_BYTES, "the pool file")
            cached = (stamp, _parse_pool_file(path, data))
            with _cache_lock:
                _file_cache[path] = cached
        entries.extend(cached[1])
    pool = _Pool(directory, entries)
    with _cache_lock:
        _pool_cache[str(directory)] = (key, pool)
        prefix, listed = str(directory) + os.sep, {s[0] for s in stamps}
        for stale in [p for p in _file_cache if p.startswith(prefix) and p not in listed]:
            del _file_cache[stale]
    return pool


def _pem_bytes(pem: bytes | str) -> bytes:
    if isinstance(pem, str):
        if len(pem) > MAX_PEM_BYTES:  # each character is at least one byte
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
        f"the input is {size} bytes, over the {MAX_PEM_BYTES // (1 << 20)} MiB limit for a "
        f"certificate: pass one PEM certificate (with its intermediates), not a bundle")


def _from_der(der: bytes) -> Certificate:
    return Certificate(x509.load_der_x509_certificate(der))


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
                Other PEM blocks (a private key in the same file) are ignored.
            root: the jobber root whose ``pool`` directory holds the trusted CAs
                (see `default_root`).

        Returns:
            The certificate (the leaf; `bytes` returns it without the intermediates).

        Raises:
            CertificateError: the input is not a usable certificate, or the pool would
                not accept it; the message says why and what to do.
            TypeError: ``pem`` is neither bytes nor str.
        """
        leaf, extras = _parse_input(_pem_bytes(pem))
        _verify(leaf, extras, _load_pool(root), _now())
        return cls(leaf.cert)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
                  ) -> Certificate:
        """Read a PEM file and validate it like `from_pem`.

        Args:
            path: the PEM file (certificate first, then any intermediates).
            root: the jobber root (see `default_root`).

        Returns:
            The validated certificate.

        Raises:
            CertificateError: the file cannot be read, is over 1 MiB, or its certificate
                is not valid (see `from_pem`); ``path`` is set to the file.
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
        """The subject as an RFC 4514 string, e.g. ``CN=demo-user``."""
        return self._cert.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        """The issuer as an RFC 4514 string."""
        return self._cert.issuer.rfc4514_string()

    @property
    def common_name(self) -> str | None:
        """The first commonName of the subject, or None when it has none."""
        names = self._cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    @property
    def not_before(self) -> datetime:
        """Start of the validity period (an aware UTC datetime)."""
        return self._cert.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        """End of the validity period (an aware UTC datetime)."""
        return self._cert.not_valid_after_utc

    @property
    def is_ca(self) -> bool:
        """Whether TLS would take it as a CA (basicConstraints CA:TRUE, or a v1 root)."""
        try:
            return _Facts(self._cert, self._der, "").ca_kind() != 0
        except ValueError:  # malformed extensions: not usable as anything
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

    def __reduce__(self):  # noqa: ANN204 - x509.Certificate itself does not pickle
        return (_from_der, (self._der,))

    def _store(self):  # noqa: ANN202 - jobber._storage is imported late: it imports us
        from jobber._storage import JobStore

        return JobStore(self.hash())

    def get_jobs(self) -> list[Job]:
        """List this identity's jobs.

        Returns:
            Every job this certificate owns, including ended ones, in id order.

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
        """Create (but do not start) a job owned by this identity.

        Args:
            command: the shell command to run.
            limits: resource limits; None for none.

        Returns:
            The new job, in state "created"; call ``job.start()``.

        Raises:
            JobError: the job cannot be created.
        """
        return self._store().new_job(command, limits)

    def hash(self) -> str:
        """The lowercase hex SHA-256 of the DER encoding.

        Equal to ``openssl x509 -noout -fingerprint -sha256`` without the colons,
        lowercased. Jobs are stored under it.

        Returns:
            64 hex digits.
        """
        return self._sha256

    def bytes(self) -> bytes:  # defined last: the name shadows the builtin in this class
        """The certificate as PEM (the leaf alone, without intermediates).

        Returns:
            The PEM encoding.
        """
        return self._cert.public_bytes(Encoding.PEM)
