"""Client certificates: the pool, and the identity a PEM certificate stands for.

The pool is ``<root>/pool/*.pem``: CAs, which issue identities, and pinned certificates,
which identify only themselves. A certificate is a CA when its file is named ``ca.pem`` or
``NAME.ca.pem``, or when it is plainly one (CA:TRUE and keyCertSign without
digitalSignature, so it cannot be a client certificate itself); any other is pinned, and
never taken as the issuer of another certificate, whatever its basicConstraints say.

``Certificate.from_pem`` accepts a certificate exactly when the server's TLS handshake
would (``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` with `tls_trust_store` as its trust store
and ``CERT_REQUIRED``), so one identity works locally and remotely, with one exception
that only makes from_pem stricter: a leaf signed by a pinned self-signed certificate that
OpenSSL takes as a CA passes the handshake (the pinned certificate must be in the trust
store to pass as itself), and from_pem, which the server runs on every request, refuses it.

The work is done below this module: ``pool`` reads PEM input and the pool (and caches it),
``chain`` builds and checks the chain as OpenSSL does (with ``name_constraints``), on the
``Facts`` and ``Pool`` of ``facts`` (which compares names as ``names`` does). ``pool`` and
``chain`` are where cryptography's parse and signature errors become ``CertificateError``.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from jobber._certificates.chain import verify, when
from jobber._certificates.crl import handshake_anchors
from jobber._certificates.facts import Facts, Pool
from jobber._certificates.lifecycle import expiry_warning, revocations_dir, revoked_on
from jobber._certificates.pool import MAX_PEM_BYTES, load_pool, parse_input, pem_bytes, read_file
from jobber._certificates.pool import clear_cache as _clear_cache  # noqa: F401 - re-exported for tests
from jobber._errors import CertificateError
from jobber._session import Forwarding

if TYPE_CHECKING:
    from jobber._jobs.store import JobStore

__all__ = ["MAX_PEM_BYTES", "Certificate", "default_root", "get_client_certificates",
           "tls_trust_store"]


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


_CA_KINDS = {1: "has basicConstraints CA:TRUE", 3: "is a version-1 self-signed certificate",
             4: "has keyUsage keyCertSign without basicConstraints",
             5: "has an nsCertType CA bit"}  # by Facts.ca_kind


def tls_trust_store(root: str | os.PathLike[str] | None = None) -> tuple[str, list[str]]:
    """The trust store a TLS server loads for the pool, and what its operator should know.

    Every pool certificate but the pinned ones OpenSSL would take as a CA: those are left
    out, so that they cannot issue identities, except the self-signed ones, which must be
    in to pass as themselves. For each of those a warning says that the handshake also
    accepts what its key signs (``from_pem`` refuses it) and how to pin it strictly.
    A revoked pinned certificate is left out (``jobber certs revoke``): its next handshake
    fails.

    Args:
        root: the jobber root (see `default_root`).

    Returns:
        The certificates as PEM text (``""`` when there are none), and the warnings.

    Raises:
        CertificateError: as `get_client_certificates`.
    """
    pool = _load_pool(root)
    anchors = handshake_anchors(pool, default_root(root))
    pem = "".join(Certificate(e.cert).bytes().decode("ascii") for e in anchors)
    warnings = [
        f"{e.origin}: {e.label} is pinned (its file is not named ca.pem or NAME.ca.pem) but "
        f"{_CA_KINDS.get(e.ca_kind(), 'is a CA')}, so the TLS handshake also takes it "
        f"as a CA: a leaf its key signs passes the handshake, and every request with it is "
        f"refused (403). To pin it strictly, replace it with a certificate without CA "
        f"powers (`openssl req -x509 ... -addext basicConstraints=critical,CA:FALSE`); if "
        f"it is a CA you trust, rename the file to NAME.ca.pem"
        for e in pool.loose_pins()]
    return pem, warnings


class Certificate(Forwarding):
    """A client certificate: the identity that owns jobs.

    Get a validated one from `Certificate.from_pem` or `Certificate.from_file`; the pool's
    certificates, unvalidated, come from `get_client_certificates`. Two certificates are
    equal when their DER encodings are (same `hash`). It is a ``jobber.Session``: its job
    methods (``new_job``, ``get_jobs``, ``prune``, ...) are those of its jobs on this host.

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
        is either a self-signed certificate of the pool (pinned, or a CA) or issued by a
        CA of the pool, directly or through intermediates that follow it in ``pem`` or
        sit in the pool as CAs; every certificate of that chain must be valid now and
        correctly signed. A pinned certificate issues nothing: a certificate it signed is
        refused, with CA:TRUE or without.

        Args:
            pem: the PEM text, at most 1 MiB: the certificate, then its intermediates.
                Other PEM blocks (a private key in the same file) are skipped.
            root: the jobber root whose ``pool`` directory holds the trusted CAs
                (see `default_root`).

        Returns:
            The certificate (the leaf; `bytes` returns it without the intermediates).

        Raises:
            CertificateError: the input is not a usable certificate, the pool would
                not accept it, or it was revoked (``jobber certs revoke``); the message
                says why and what to do.
            TypeError: ``pem`` is neither bytes nor str.
        """
        leaf, intermediates = parse_input(pem_bytes(pem))
        verify(leaf, intermediates, _load_pool(root), datetime.now(timezone.utc))
        cert = cls(leaf.cert)
        revoked = revoked_on(default_root(root), cert.hash())
        if revoked is not None:
            raise CertificateError(
                f"the certificate {leaf.label} was revoked on {revoked:%Y-%m-%d} (recorded in "
                f"{revocations_dir(default_root(root))}): ask the pool's administrator for a new one")
        return cert

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
        data = read_file(name, MAX_PEM_BYTES, "the certificate file")
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

    def expiry_warning(self, now: datetime | None = None) -> str | None:
        """A warning when the certificate expires within 14 days (or has expired), else None.

        Args:
            now: the moment to judge at (default: now).

        Returns:
            The warning, with the date and what to do, or None.
        """
        return expiry_warning(self.not_after, now)

    @property
    def is_ca(self) -> bool:
        """Whether TLS takes it as a CA (basicConstraints CA:TRUE, or a version-1 root).

        This is the certificate's own claim; the pool lets it issue identities only from a
        ``ca.pem`` or ``NAME.ca.pem`` file, or when it is plainly a CA (see the module).
        """
        try:
            return Facts(self._cert, self._der, "").ca_kind() != 0
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
                f"{when(self.not_after)}, sha256 {self._sha256[:16]}…>")

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return _certificate_from_der, (self._der,)  # x509.Certificate does not pickle

    def _session(self) -> JobStore:  # imported on first use: checking a certificate needs no job storage
        from jobber._jobs.store import JobStore

        return JobStore(self.hash())

    def generate_job_id(self) -> int:
        """Reserve a new job id, unique even under concurrent callers.

        Returns:
            The id.

        Raises:
            JobError: the job directory cannot be written.
        """
        return self._session().generate_job_id()

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


def _load_pool(root: str | os.PathLike[str] | None) -> Pool:
    """The parsed pool of a jobber root (see `default_root`)."""
    return load_pool(default_root(root) / "pool")
