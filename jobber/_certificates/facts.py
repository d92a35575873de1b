"""What chain building knows of a certificate, and of the pool: parsed once, shared.

``pool`` makes these from PEM input and pool files, ``chain`` and ``name_constraints``
read them; they sit below all three so that none imports another for them.

The pool holds two kinds of certificates (``Pool.is_ca``): CAs, which may issue identities,
and pinned certificates, which identify only themselves. A certificate is a CA when the
operator said so, by its file's name (``ca.pem``, ``NAME.ca.pem``: `is_ca_file`), or when it
cannot be anything else (`Facts.plain_ca`: CA:TRUE and keyCertSign, but no key usage that
TLS client authentication needs). Every other pool certificate is pinned, even with
CA:TRUE (what ``openssl req -x509`` writes by default): it is never taken as an issuer.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, types
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.oid import SignatureAlgorithmOID as _S

from jobber._certificates.names import NameKey, canonical_name

# Critical extensions OpenSSL understands (X509_supported_extension, v3_purp.c); any other
# critical extension, even a key identifier, fails the handshake.
_NS_CERT_TYPE = "2.16.840.1.113730.1.1"
PROXY_CERT_INFO = "1.3.6.1.5.5.7.1.14"
_HANDLED_CRITICAL = {oid.dotted_string for oid in (
    ExtensionOID.KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.OCSP_NO_CHECK, ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY)} | {
    _NS_CERT_TYPE,
    "1.3.6.1.5.5.7.1.7", "1.3.6.1.5.5.7.1.8",  # RFC 3779 IP and AS blocks
    PROXY_CERT_INFO}  # handled, by refusing proxy certificates
# Netscape's nsCertType, still written by old `openssl x509 -extfile` recipes: its first
# byte's bits say SSL client (0x80) and, for CAs, SSL/S-MIME/object-signing CA (0x07).
NS_SSL_CLIENT, NS_SSL_CA, _NS_ANY_CA = 0x80, 0x04, 0x07

# cryptography 51 deprecated DSA: reading ``dsa.DSAPublicKey`` warns (and a later release
# removes it), yet OpenSSL still verifies DSA signatures in a client's chain, and the verdict
# must match the handshake's. The class is taken from cryptography's own union of public key
# types, which names it without a warning; ``()`` once it is gone (isinstance is then False).
DSA_PUBLIC_KEY: tuple[type, ...] = tuple(
    cls for cls in typing.get_args(types.PublicKeyTypes) if cls.__name__ == "DSAPublicKey")

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey
             | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
_KEY_TYPE_OF_SIGNATURE: dict[x509.ObjectIdentifier, type | tuple[type, ...]] = {
    **{oid: rsa.RSAPublicKey for oid in (
        _S.RSA_WITH_MD5, _S.RSA_WITH_SHA1, _S.RSA_WITH_SHA224, _S.RSA_WITH_SHA256,
        _S.RSA_WITH_SHA384, _S.RSA_WITH_SHA512, _S.RSA_WITH_SHA3_224, _S.RSA_WITH_SHA3_256,
        _S.RSA_WITH_SHA3_384, _S.RSA_WITH_SHA3_512, _S.RSASSA_PSS)},
    **{oid: ec.EllipticCurvePublicKey for oid in (
        _S.ECDSA_WITH_SHA1, _S.ECDSA_WITH_SHA224, _S.ECDSA_WITH_SHA256, _S.ECDSA_WITH_SHA384,
        _S.ECDSA_WITH_SHA512, _S.ECDSA_WITH_SHA3_224, _S.ECDSA_WITH_SHA3_256,
        _S.ECDSA_WITH_SHA3_384, _S.ECDSA_WITH_SHA3_512)},
    **{oid: DSA_PUBLIC_KEY for oid in (
        _S.DSA_WITH_SHA1, _S.DSA_WITH_SHA224, _S.DSA_WITH_SHA256, _S.DSA_WITH_SHA384,
        _S.DSA_WITH_SHA512)},
    _S.ED25519: ed25519.Ed25519PublicKey,
    _S.ED448: ed448.Ed448PublicKey,
}


class Facts:
    """A parsed certificate and what chain building asks of it, worked out once."""

    def __init__(self, cert: x509.Certificate, der: bytes, origin: str) -> None:
        self.cert, self.der, self.origin = cert, der, origin  # origin: a pool file, or ""
        self.subject = canonical_name(cert.subject)
        self.issuer = canonical_name(cert.issuer)
        self.key: PublicKey = cert.public_key()  # type: ignore[assignment]
        self.extensions = {ext.oid.dotted_string: ext for ext in cert.extensions}
        self.basic: x509.BasicConstraints | None = self.extension(ExtensionOID.BASIC_CONSTRAINTS)
        self.usage: x509.KeyUsage | None = self.extension(ExtensionOID.KEY_USAGE)
        self.ext_usage: x509.ExtendedKeyUsage | None = self.extension(
            ExtensionOID.EXTENDED_KEY_USAGE)
        skid = self.extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        self.skid: bytes | None = None if skid is None else skid.digest
        self.akid: x509.AuthorityKeyIdentifier | None = self.extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        self.ns_cert_type = _ns_cert_type(self.extensions.get(_NS_CERT_TYPE))
        self.unhandled = sorted(oid for oid, ext in self.extensions.items()
                                if ext.critical and oid not in _HANDLED_CRITICAL)
        self.self_issued = self.subject == self.issuer
        self.self_signed = self.self_issued and likely_issued(self, self)
        self.not_before, self.not_after = cert.not_valid_before_utc, cert.not_valid_after_utc

    @property
    def label(self) -> str:
        return self.cert.subject.rfc4514_string() or "(empty subject)"

    def extension(self, oid: x509.ObjectIdentifier) -> Any:  # the value, or None
        ext = self.extensions.get(oid.dotted_string)
        return None if ext is None else ext.value

    @property
    def plain_ca(self) -> bool:
        """A CA and nothing else: CA:TRUE, keyUsage keyCertSign, and neither digitalSignature
        nor keyAgreement, so that TLS refuses it as a client certificate of its own."""
        usage = self.usage
        return (self.basic is not None and self.basic.ca and usage is not None
                and usage.key_cert_sign and not (usage.digital_signature or usage.key_agreement))

    def ca_kind(self) -> int:
        """Return X509_check_ca's verdict.

        0 not a CA, 1 CA:TRUE, 3 a v1 self-signed root, 4 keyCertSign without
        basicConstraints, 5 a CA by nsCertType alone.
        """
        if self.usage is not None and not self.usage.key_cert_sign:
            return 0
        if self.basic is not None:
            return 1 if self.basic.ca else 0
        if self.cert.version == x509.Version.v1 and self.self_signed:
            return 3
        if self.usage is not None:
            return 4
        return 5 if self.ns_cert_type is not None and self.ns_cert_type & _NS_ANY_CA else 0


def _ns_cert_type(extension: x509.Extension[Any] | None) -> int | None:
    # The DER of a BIT STRING: tag 0x03, a one-byte length, the unused-bit count, the bits.
    if extension is None:
        return None
    der = getattr(extension.value, "value", b"")  # cryptography parses it no further
    return der[3] if len(der) > 3 and der[0] == 0x03 else 0


def likely_issued(issuer: Facts, child: Facts) -> bool:
    # ossl_x509likely_issued: the names match, the authority key identifier (if any)
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
        if directories and canonical_name(directories[0].value) != issuer.issuer:
            return False
    key_type = _KEY_TYPE_OF_SIGNATURE.get(child.cert.signature_algorithm_oid)
    return key_type is not None and isinstance(issuer.key, key_type)


def is_ca_file(path: str) -> bool:
    """Whether a pool file's name marks its certificates as CAs: ``ca.pem`` or ``*.ca.pem``."""
    name = os.path.basename(path).lower()
    return name == "ca.pem" or name.endswith(".ca.pem")


class Pool:
    """The parsed pool: its certificates once each, indexed for issuer lookup.

    ``by_subject`` is what issuer lookup may pick from: every certificate but the pinned
    ones TLS would take as a CA (``pinned_cas``). Pinned certificates that are no CA at all
    stay in it, as in the TLS trust store: picked, they fail as OpenSSL fails them, with
    the same "not a CA" error.
    """

    def __init__(self, directory: Path, entries: list[Facts]) -> None:
        self.directory = directory
        self.by_der: dict[bytes, Facts] = {}
        marked: set[bytes] = set()  # in a CA file, under any of its names
        for entry in entries:
            self.by_der.setdefault(entry.der, entry)
            if is_ca_file(entry.origin):
                marked.add(entry.der)
        self.entries = list(self.by_der.values())
        self.cas = {e.der for e in self.entries if e.der in marked or e.plain_ca}
        self.by_subject: dict[NameKey, list[Facts]] = {}
        self.pinned_cas: dict[NameKey, list[Facts]] = {}
        for entry in self.entries:
            index = self.pinned_cas if self.pinned_ca(entry) else self.by_subject
            index.setdefault(entry.subject, []).append(entry)

    def is_ca(self, entry: Facts) -> bool:
        """Whether the pool trusts this certificate as an issuer (else it is pinned)."""
        return entry.der in self.cas

    def pinned_ca(self, entry: Facts) -> bool:
        """A pinned certificate that TLS would take as a CA: never an issuer here."""
        return entry.der in self.by_der and not self.is_ca(entry) and entry.ca_kind() != 0

    def tls_anchors(self) -> list[Facts]:
        """The certificates a TLS server loads as its trust store, in pool order.

        All but the pinned CA-like certificates that are not self-signed: those would be
        trusted intermediates. A self-signed one must be loaded, or it could not connect
        as itself, though OpenSSL then also accepts what its key signs (`loose_pins`).
        """
        return [e for e in self.entries if not (self.pinned_ca(e) and not e.self_signed)]

    def loose_pins(self) -> list[Facts]:
        """Pinned self-signed certificates that OpenSSL takes as CAs in the trust store."""
        return [e for e in self.entries if self.pinned_ca(e) and e.self_signed]
