"""Issuing a client certificate for a new member of a team, signed by the pool's CA.

The CA is the pool certificate (a CA of the pool, see `jobber._certificates`) whose public
key matches the CA key given; by default the key is ``<root>/ca.key``, where
``jobber certs init-demo`` leaves it. The certificate carries what a TLS client identity
needs and nothing more: basicConstraints CA:FALSE (critical), keyUsage digitalSignature
(critical), extendedKeyUsage clientAuth, and the subject and authority key identifiers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobber._certificates.lifecycle import issued_dir
from jobber._certificates.pool import load_pool, read_file
from jobber._errors import CertificateError

__all__ = ["find_ca", "issue_client", "load_ca_key"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# An hour back, as the demo certificates: a client whose clock lags a little still works.
_BACKDATE = dt.timedelta(hours=1)
_MAX_KEY_BYTES = 1 << 20


def load_ca_key(path: Path) -> object:
    """The CA's private key from an unencrypted PEM file; CertificateError saying what to do."""
    data = read_file(str(path), _MAX_KEY_BYTES, "the CA key")
    try:
        signer = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:  # encrypted
        raise CertificateError(
            f"the CA key {path} is encrypted: decrypt a copy (`openssl pkey -in {path} -out ca-plain.key`) "
            f"and pass it with --ca-key", path=str(path)) from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CertificateError(f"{path} is not a PEM private key ({err}): pass the CA's key with --ca-key",
                               path=str(path)) from err
    if not isinstance(signer, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
                               ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise CertificateError(f"the CA key {path} is a {type(signer).__name__}, which cannot sign "
                               f"certificates: pass an RSA, ECDSA or Ed25519 key", path=str(path))
    return signer


def find_ca(root: Path, key: object, key_path: Path) -> x509.Certificate:
    """The pool CA whose public key is ``key``'s; CertificateError saying what to do."""
    pool = load_pool(root / "pool")
    public = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for entry in pool.entries:
        mine = entry.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if mine != public:
            continue
        if not pool.is_ca(entry):
            raise CertificateError(
                f"{entry.origin} holds the certificate of the key {key_path}, but the pool takes it as pinned, "
                f"not as a CA: name its file ca.pem or NAME.ca.pem to let it issue identities", path=entry.origin)
        return entry.cert
    raise CertificateError(
        f"no CA in the pool {root / 'pool'} has the public key of {key_path}: put the CA's certificate there "
        f"(as ca.pem or NAME.ca.pem), or pass its key with --ca-key", path=str(key_path))


def issue_client(name: str, root: Path, *, days: int = 365, ca_key: str | os.PathLike[str] | None = None,
                 out: str | os.PathLike[str] = ".", force: bool = False,
                 now: dt.datetime | None = None) -> dict[str, Path]:
    """Issue a client certificate ``NAME.pem`` and its key ``NAME.key`` (mode 0600) in ``out``.

    Args:
        name: the member's name: the certificate's commonName and the files' name
            (letters, digits, ``._@-``; at most 64).
        root: the jobber root whose pool holds the CA.
        days: how long it is valid (capped at the CA's own expiry).
        ca_key: the CA's unencrypted PEM key (default ``<root>/ca.key``).
        out: the directory to write to (created if missing).
        force: replace existing files instead of refusing.
        now: the moment of issue (default: now).

    Returns:
        ``{"cert": path, "key": path, "ca": the pool file of the CA, "copy": the copy
        kept in ``<root>/pool/issued/`` for ``jobber certs list``, or None when the pool
        is not writable}``.

    Raises:
        CertificateError: a bad name or days, no usable CA key or CA, existing files, or
            files that cannot be written; the message says what to do.
    """
    if not _NAME.fullmatch(name):
        raise CertificateError(f"{name!r} cannot name a certificate: use letters, digits and ._@- "
                               f"(at most 64, not starting with a dot or dash), e.g. alice")
    if days < 1:
        raise CertificateError(f"--days {days}: a certificate must be valid for at least 1 day")
    key_path = Path(ca_key).expanduser() if ca_key is not None else root / "ca.key"
    if ca_key is None and not key_path.exists():
        raise CertificateError(f"no CA key at {key_path}: pass the key of the pool's CA with --ca-key PATH",
                               path=str(key_path))
    signer = load_ca_key(key_path)
    ca = find_ca(root, signer, key_path)
    directory = Path(out).expanduser()
    paths = {"cert": directory / f"{name}.pem", "key": directory / f"{name}.key"}
    existing = [p for p in paths.values() if os.path.lexists(p)]
    if existing and not force:
        raise CertificateError(f"{existing[0]} exists: pass --force to replace it, or choose another --out",
                               path=str(existing[0]))
    now = now or dt.datetime.now(dt.timezone.utc)
    if ca.not_valid_after_utc <= now:
        raise CertificateError(f"the CA {ca.subject.rfc4514_string()} expired on {ca.not_valid_after_utc:%Y-%m-%d}: "
                               f"put a renewed CA in the pool and pass its key with --ca-key")
    # Never past the CA's own expiry (compared in days first: a huge --days must not overflow).
    ca_left = ca.not_valid_after_utc - now
    not_after = ca.not_valid_after_utc if days > ca_left.days else now + dt.timedelta(days=days)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    subject[:0] = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[:1]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(max(now - _BACKDATE, ca.not_valid_before_utc))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(signer, None if isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
                  else hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write(paths["key"], key_pem, 0o600)
        _write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as err:
        raise CertificateError(f"cannot write to {directory}: {err.strerror or err}; choose a writable --out",
                               path=str(directory)) from err
    ca_file = next(e.origin for e in load_pool(root / "pool").entries if e.cert == ca)
    return {**paths, "ca": Path(ca_file), "copy": _keep_copy(root, cert)}


def _keep_copy(root: Path, cert: x509.Certificate) -> Path | None:
    """Best effort: the copy only lets ``jobber certs list`` show what was issued."""
    directory = issued_dir(root)
    der = cert.public_bytes(serialization.Encoding.DER)
    path = directory / f"{hashlib.sha256(der).hexdigest()}.pem"
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)  # readable by a server running as another user
        _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError:
        return None
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode and renamed over the target: the key is never readable
    # by others, not even for a moment, whatever the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
