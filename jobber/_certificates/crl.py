"""Revocations at the TLS handshake: revocation lists signed by the pool's CAs.

Python's ``ssl`` has no per-connection verify callback, so what the handshake refuses must
be in the server's ``SSLContext`` itself:

- a revoked certificate the pool pins (trusted one by one) is left out of the trust store
  (`handshake_anchors`);
- a revoked certificate a pool CA issued is listed in that CA's CRL, which ``jobber certs
  revoke`` writes when it has the CA's key (`write_crl`), as
  ``<root>/pool/revoked/<CA sha256>.crl.pem``; the server loads the CRLs with the trust
  store and sets ``VERIFY_CRL_CHECK_LEAF`` (`handshake_crls`).

OpenSSL then wants a CRL for the issuer of *every* client certificate, and fails any leaf
whose issuer has none ("unable to get certificate CRL"): a pinned self-signed certificate
is its own issuer, and only its owner's key could sign its CRL. So the CRLs are used only
when every certificate of the trust store is a pool CA with a valid CRL; otherwise the
handshake admits revoked CA-issued certificates, and the server refuses them at their
first request (403, ``Certificate.from_pem`` reads the revocation records), as it does
for a revoked certificate whose CA key was not at hand. `handshake_crls` says which case
holds and why, for the server's log and the ``revoke`` command.

A CRL's entries come from the revocation records (`lifecycle.revoke`), whose certificate
is kept in the record itself, in ``pool/issued/``, or in the pool: a record known only
by its hash has no serial number to list.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from jobber._certificates.facts import Facts, Pool
from jobber._certificates.lifecycle import issued_dir, normalize_hash, revocations_dir, revoked_on
from jobber._certificates.pool import MAX_PEM_BYTES, load_pool, parse_input, read_file
from jobber._errors import CertificateError

__all__ = ["CRL_SUFFIX", "handshake_anchors", "handshake_crls", "record_certificate", "write_crl"]

CRL_SUFFIX = ".crl.pem"
# lastUpdate an hour back: a server whose clock lags the CA's must not find the CRL "not
# yet valid", which would fail every client of that CA.
_BACKDATE = timedelta(hours=1)


def _sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def handshake_anchors(pool: Pool, root: Path) -> list[Facts]:
    """The TLS trust store: the pool's anchors less the revoked certificates it pins.

    A revoked CA stays: removing it would refuse every certificate it issued (take a CA
    out of service by removing it from the pool).
    """
    return [e for e in pool.tls_anchors() if pool.is_ca(e) or revoked_on(root, _sha256(e.der)) is None]


def record_certificate(root: Path, sha256: str) -> x509.Certificate | None:
    """The certificate a revocation record is about, where known (record, issued copy, pool)."""
    candidates = [revocations_dir(root) / sha256, issued_dir(root) / f"{sha256}.pem"]
    for path in candidates:
        try:
            data = read_file(str(path), MAX_PEM_BYTES, "a revocation record")
            leaf, _ = parse_input(data)
        except CertificateError:
            continue
        if _sha256(leaf.der) == sha256:
            return leaf.cert
    for entry in load_pool(root / "pool").entries:
        if _sha256(entry.der) == sha256:
            return entry.cert
    return None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _may_sign_crls(ca: x509.Certificate) -> bool:
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.crl_sign


def write_crl(root: Path, ca_key: str | os.PathLike[str] | None = None,
              now: datetime | None = None) -> tuple[Path, list[str]]:
    """Write the CRL of the pool CA whose key is ``ca_key``, listing every revocation it issued.

    Args:
        root: the jobber root.
        ca_key: the CA's unencrypted PEM key (default ``<root>/ca.key``).
        now: the CRL's moment (default: now).

    Returns:
        The CRL's path, and the hashes of the revoked certificates it lists.

    Raises:
        CertificateError: no key at the default place, an unusable key, no pool CA with
            its public key, a CA not allowed to sign CRLs, or a pool not writable.
    """
    from jobber._certificates.issue import find_ca, load_ca_key

    key_path = Path(ca_key).expanduser() if ca_key is not None else root / "ca.key"
    if ca_key is None and not key_path.exists():
        raise CertificateError(f"no CA key at {key_path}: pass the key of the certificate's CA with --ca-key",
                               path=str(key_path))
    signer = load_ca_key(key_path)
    ca = find_ca(root, signer, key_path)
    if not _may_sign_crls(ca):
        raise CertificateError(f"the CA {ca.subject.rfc4514_string()} has a keyUsage without cRLSign, so OpenSSL "
                               f"would refuse its CRL (and every certificate it issued): the server refuses the "
                               f"revoked certificate at its first request instead")
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(max(now - _BACKDATE, ca.not_valid_before_utc))
               # Never expires before its CA: an expired CRL would fail every client of the CA.
               .next_update(ca.not_valid_after_utc)
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[attr-defined]
                              critical=False))
    listed = []
    records = revocations_dir(root)
    for name in sorted(os.listdir(records)) if records.is_dir() else []:
        if normalize_hash(name) != name:
            continue
        cert = record_certificate(root, name)
        if cert is None or not _signed_by(cert, ca):
            continue  # known by its hash alone, there is no serial number to list
        moment = revoked_on(root, name) or now
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(moment).build())
        listed.append(name)
    algorithm = None if isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    crl = builder.sign(signer, algorithm)  # type: ignore[arg-type]
    path = records / f"{_sha256(ca.public_bytes(serialization.Encoding.DER))}{CRL_SUFFIX}"
    try:
        records.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".crl-", dir=records)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(crl.public_bytes(serialization.Encoding.PEM))
            os.chmod(tmp, 0o644)  # read by a server running as another user
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        raise CertificateError(f"cannot write the revocation list {path}: {err.strerror or err}; run as the "
                               f"pool's owner", path=str(path)) from err
    return path, listed


def handshake_crls(root: Path, pool: Pool, anchors: list[Facts],
                   now: datetime | None = None) -> tuple[str, str | None]:
    """The CRLs a TLS server loads with the trust store ``anchors``, or why none.

    Args:
        root: the jobber root.
        pool: its parsed pool.
        anchors: the trust store (`handshake_anchors`).
        now: the moment to judge the CRLs' validity at (default: now).

    Returns:
        The CRLs as PEM text (``""`` when the handshake cannot check revocations), and
        why not (None when it checks them, or when the pool holds no CRL at all).
    """
    now = now or datetime.now(timezone.utc)
    records = revocations_dir(root)
    try:
        names = sorted(n for n in os.listdir(records) if n.endswith(CRL_SUFFIX))
    except OSError:
        return "", None
    if not names:
        return "", None
    crls: dict[bytes, bytes] = {}  # anchor DER -> the CRL PEM that covers it
    problems = []
    for name in names:
        path = records / name
        try:
            data = read_file(str(path), MAX_PEM_BYTES, "a revocation list")
            crl = x509.load_pem_x509_crl(data)
        except (CertificateError, ValueError) as err:
            problems.append(f"{path} is not a PEM CRL ({err})")
            continue
        issuers = [a for a in anchors if pool.is_ca(a) and a.cert.subject == crl.issuer
                   and _may_sign_crls(a.cert) and crl.is_signature_valid(a.key)]  # type: ignore[arg-type]
        if not issuers:
            problems.append(f"{path} is signed by no CA of the pool allowed to sign CRLs")
        elif crl.last_update_utc > now or (crl.next_update_utc is not None and crl.next_update_utc <= now):
            problems.append(f"{path} is outside its validity ({crl.last_update_utc:%Y-%m-%d} to "
                            f"{crl.next_update_utc:%Y-%m-%d}): write it again with `jobber certs revoke`")
        else:
            for issuer in issuers:
                crls[issuer.der] = data
    uncovered = [a for a in anchors if a.der not in crls]
    if uncovered:
        first = uncovered[0]
        why = (f"the pinned certificate {first.label} ({first.origin}) has none (only its own key could sign "
               f"one)" if not pool.is_ca(first) else f"the CA {first.label} ({first.origin}) has none")
        return "", (f"the TLS handshake does not check revocation lists: OpenSSL would refuse every client whose "
                    f"issuer has none, and {why}" + "".join(f"; {p}" for p in problems)
                    + ". A revoked certificate is refused at its first request (403) instead")
    return "".join(dict.fromkeys(d.decode("ascii") for d in crls.values())), None
