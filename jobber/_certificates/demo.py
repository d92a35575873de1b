"""A throwaway PKI for demos and tests: one CA, two client identities, a localhost server.

``init_demo(DIR)`` leaves a directory that is itself a jobber root (``DIR/pool`` trusts the
demo CA), so ``JOBBER_ROOT=DIR`` makes ``client.pem`` and ``client2.pem`` valid identities,
and ``server.pem`` serves ``https://localhost`` and ``https://127.0.0.1``. Two client
identities let a demo show that one cannot see the other's jobs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobber._errors import CertificateError

__all__ = ["DEMO_FILES", "init_demo"]

DEMO_FILES = {
    "ca": "ca.pem", "ca_key": "ca.key",
    "client": "client.pem", "client_key": "client.key",
    "client2": "client2.pem", "client2_key": "client2.key",
    "server": "server.pem", "server_key": "server.key",
    "pool_ca": "pool/ca.pem",
}
"""What `init_demo` writes: its result maps these keys to the paths, plus "pool" (the
pool directory) and "root" (the directory, usable as JOBBER_ROOT)."""

_VALID_FOR = dt.timedelta(days=365)
# Start an hour back so a client whose clock lags the issuer's a little still accepts it.
_BACKDATE = dt.timedelta(hours=1)


def _usage(*, signing: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
           issuer_key: ec.EllipticCurvePrivateKey, now: dt.datetime,
           extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jobber demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _BACKDATE)
               .not_valid_after(now - _BACKDATE + _VALID_FOR)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    # Write beside the target and rename over it: readers never see half a file, and a
    # key is never readable by others, not even for a moment (mkstemp makes it 0600).
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def init_demo(directory: str | os.PathLike[str], force: bool = False) -> dict[str, Path]:
    """Make a demo CA, two client identities and a localhost server certificate.

    Everything is ECDSA P-256 and SHA-256, valid from an hour ago for 365 days. The CA
    has basicConstraints CA:TRUE (critical) and keyUsage keyCertSign; the clients
    (CN "demo-user" and "demo-user-2") have extendedKeyUsage clientAuth; the server has
    serverAuth and the subjectAltNames DNS:localhost and IP:127.0.0.1. Keys are
    unencrypted PKCS#8 PEM, mode 0600; ``pool/ca.pem`` makes ``directory`` a jobber root.

    Args:
        directory: where to write (created if missing).
        force: replace files left by an earlier run instead of refusing.

    Returns:
        The paths, by the keys of `DEMO_FILES`, plus "pool" (the pool directory) and
        "root" (``directory``).

    Raises:
        CertificateError: a file exists and ``force`` is false, or a file cannot be
            written.
    """
    root = Path(directory).expanduser()
    paths = {key: root / name for key, name in DEMO_FILES.items()}
    existing = [p for p in paths.values() if os.path.lexists(p)]
    if existing and not force:
        names = ", ".join(str(p.relative_to(root)) for p in existing)
        raise CertificateError(
            f"{root} already holds demo certificates ({names}): pass force=True "
            f"(`--force`) to replace them, or choose another directory",
            path=str(existing[0]))
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("jobber demo CA", ca_key, None, ca_key, now, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_usage(cert_sign=True), True)])
    pems: dict[str, bytes] = {"ca": ca.public_bytes(serialization.Encoding.PEM),
                              "ca_key": _key_pem(ca_key)}
    leaves = {
        "client": ("demo-user", [ExtendedKeyUsageOID.CLIENT_AUTH], []),
        "client2": ("demo-user-2", [ExtendedKeyUsageOID.CLIENT_AUTH], []),
        "server": ("localhost", [ExtendedKeyUsageOID.SERVER_AUTH], [
            (x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)]),
    }
    for key_name, (common_name, usages, more) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(common_name, key, ca, ca_key, now, [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_usage(signing=True), True),
            (x509.ExtendedKeyUsage(usages), False), *more])
        pems[key_name] = cert.public_bytes(serialization.Encoding.PEM)
        pems[f"{key_name}_key"] = _key_pem(key)
    pems["pool_ca"] = pems["ca"]
    try:
        _make_dirs(paths["pool_ca"].parent)
        for key_name, path in paths.items():
            _write(path, pems[key_name], 0o600 if key_name.endswith("_key") else 0o644)
    except OSError as err:
        raise CertificateError(f"cannot write the demo certificates to {root}: "
                               f"{err.strerror or err}; choose a writable directory",
                               path=str(root)) from err
    return {**paths, "pool": paths["pool_ca"].parent, "root": root}


def _make_dirs(path: Path) -> None:
    """mkdir -p with mode 0755 on each directory it makes, whatever the umask: under umask
    000 a world-writable pool would let anyone add a CA and be admitted."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
