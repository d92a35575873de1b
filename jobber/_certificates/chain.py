"""The chain checks of a TLS server, redone in Python so that refusals can say why.

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

Issuer lookup in the pool skips pinned certificates (``Pool.pinned_cas``): the server's
TLS trust store is ``Pool.tls_anchors``, which leaves them out too, except the self-signed
ones (``Pool.loose_pins``), which must be loaded so that they pass as themselves; OpenSSL
then also accepts a leaf signed by one of them, and only this module refuses it.

The agreement holds for a server context without extra verify flags: Python 3.13's
``ssl.create_default_context`` adds ``VERIFY_X509_STRICT`` (which refuses version-1 CAs)
and ``VERIFY_X509_PARTIAL_CHAIN``; the server must not use them.

Every refusal is a ``CertificateError`` that names the certificate at fault and what to
do; a failed signature check from cryptography is one of them.
"""

from __future__ import annotations

import functools
import ssl
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import SignatureAlgorithmOID as _S

from jobber._certificates.facts import (
    DSA_PUBLIC_KEY,
    NS_SSL_CA,
    NS_SSL_CLIENT,
    PROXY_CERT_INFO,
    Facts,
    Pool,
    PublicKey,
    likely_issued,
)
from jobber._certificates.name_constraints import check_name_constraints
from jobber._errors import CertificateError

_MAX_DEPTH = 100  # OpenSSL's default verify depth

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


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _signature_ok(child: Facts, issuer: Facts) -> bool:
    cert, key = child.cert, issuer.key
    try:
        if isinstance(key, rsa.RSAPublicKey):  # PKCS#1 v1.5 or PSS, as the cert says
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_algorithm_parameters,  # type: ignore[arg-type]
                       cert.signature_hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_algorithm_parameters)  # type: ignore[arg-type]
        elif isinstance(key, DSA_PUBLIC_KEY):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       cert.signature_hash_algorithm)  # type: ignore[arg-type]
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _key_bits(key: PublicKey) -> int:
    # EVP_PKEY_get_security_bits, at the key sizes certificates use.
    if isinstance(key, ec.EllipticCurvePublicKey):
        size, steps = key.curve.key_size, _EC_STRENGTH
    elif isinstance(key, (rsa.RSAPublicKey, *DSA_PUBLIC_KEY)):
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


def _digest_name(cert: x509.Certificate) -> str:
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    return digest.name if digest is not None else cert.signature_algorithm_oid.dotted_string


@functools.lru_cache(maxsize=1)
def _security_level() -> int:
    # The level of the context the server builds (2 with CPython >= 3.10 and most
    # distributions' openssl.cnf): it sets the minimum key size and digest strength.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).security_level


def verify(leaf: Facts, intermediates: list[Facts], pool: Pool, now: datetime) -> None:
    """Raise CertificateError unless a TLS handshake against the pool would accept leaf."""
    renew = ("make a new one" if leaf.self_signed else
             f"get a new one from its CA ({leaf.cert.issuer.rfc4514_string()})")
    _check_time(leaf, now, f"the certificate {leaf.label}", renew)
    chain, trusted_from = _build_chain(leaf, intermediates, pool, now)
    _check_chain(chain, trusted_from, now)


def _pick(candidates: list[Facts], child: Facts, chain: list[Facts],
          now: datetime) -> Facts | None:
    # X509_STORE_CTX_get1_issuer: the first plausible issuer that is currently valid,
    # else the one that expired last (so that the error names the expired CA).
    fits = [c for c in candidates if likely_issued(c, child) and c not in chain]
    valid = [c for c in fits if c.not_before <= now <= c.not_after]
    return valid[0] if valid else max(fits, key=lambda c: c.not_after, default=None)


def _build_chain(leaf: Facts, intermediates: list[Facts], pool: Pool,
                 now: datetime) -> tuple[list[Facts], int]:
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


def _pinned_issuer(chain: list[Facts], pool: Pool) -> tuple[Facts, Facts] | None:
    """(the certificate, the pinned pool certificate that issued it), if that is the dead end."""
    for i, facts in enumerate(chain[1:], 1):  # sent along in the PEM: still pinned
        entry = pool.by_der.get(facts.der)
        if entry is not None and pool.pinned_ca(entry):
            return chain[i - 1], entry
    top = chain[-1]
    candidates = [c for c in pool.pinned_cas.get(top.issuer, []) if likely_issued(c, top)]
    return (top, candidates[0]) if candidates else None


def _no_issuer(chain: list[Facts], trusted_from: int, pool: Pool) -> CertificateError:
    leaf, top, where = chain[0], chain[-1], pool.directory
    issuer = top.cert.issuer.rfc4514_string()
    pinned = _pinned_issuer(chain, pool)
    if pinned is not None:
        issued, by = pinned
        what = (f"the certificate {leaf.label}" if issued is leaf else
                f"the intermediate CA {issued.label} (in the chain of {leaf.label})")
        return CertificateError(
            f"{what} was issued by {by.label}, which is pinned in the pool as a client "
            f"certificate, not trusted as a CA: to trust it as a CA, put it in {where} in a "
            f"file named ca.pem or NAME.ca.pem (it is in {by.origin}); a pinned certificate "
            f"identifies only itself")
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


def _role(i: int, n: int, trusted_from: int, facts: Facts) -> str:
    if i == 0:
        return f"the certificate {facts.label}"
    if i >= trusted_from:
        kind = "CA" if i == n - 1 else "intermediate CA"
        return f"the {kind} {facts.label} in the pool ({facts.origin})"
    return f"the intermediate CA {facts.label} from the PEM"


def _check_time(facts: Facts, now: datetime, role: str, renew: str) -> None:
    if now < facts.not_before:
        raise CertificateError(
            f"{role} is not valid before {when(facts.not_before)} (it is {when(now)}): "
            f"wait until then, or fix the clock of this machine or of the CA that issued it")
    if now > facts.not_after:
        raise CertificateError(f"{role} expired on {when(facts.not_after)}: {renew}")


def _check_chain(chain: list[Facts], trusted_from: int, now: datetime) -> None:
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
        if PROXY_CERT_INFO in facts.extensions:
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
        if facts.ns_cert_type is not None:
            wanted, bit = ("client", NS_SSL_CLIENT) if i == 0 else ("sslCA", NS_SSL_CA)
            # A CA's nsCertType counts only when it is what makes it a CA (check_ssl_ca).
            if not facts.ns_cert_type & bit and (i == 0 or kind == 5):
                raise CertificateError(
                    f"{role} has an nsCertType without {wanted}, so TLS refuses it for client "
                    f"authentication: reissue it without nsCertType")
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
            raise CertificateError(
                f"{roles[i]} is signed with a weak digest ({_digest_name(facts.cert)}) that "
                f"TLS at security level {level} refuses: reissue it signed with SHA-256")
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
    check_name_constraints(chain, roles)
