"""A team's certificates over time: revocations recorded in the pool, and expiry warnings.

A revocation is a file ``<root>/pool/revoked/<sha256>`` (the hash `Certificate.hash`
gives, as ``jobber certs check`` prints it), whose first line is the UTC moment of the
revocation (``2026-12-06T16:40:00Z``) and whose second is the certificate's subject, for
people reading the directory; the certificate's PEM follows when it is known (a CRL
lists it by its serial number, see `jobber._certificates.crl`). It lives inside the pool so
that copying the pool copies the revocations; the pool reads only ``*.pem`` files, so the directory is not taken for
a certificate. ``Certificate.from_pem`` looks for the file on every call (one ``stat``),
so a revocation applies at once, to this host's sessions and to a running server, which
judges every request with ``from_pem``. Deleting the file lifts the revocation.

Revoking a leaf refuses that certificate only; a CA is taken out of service by removing
it from the pool (its revocation refuses it where it is presented as a leaf).
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobber._errors import CertificateError

__all__ = ["EXPIRY_WARNING_DAYS", "expiry_warning", "issued_dir", "normalize_hash", "revocations_stamp", "revoke",
           "revoked_on"]

EXPIRY_WARNING_DAYS = 14
"""A certificate that expires within this many days is warned about (check, doctor,
``%jobber_cert``, the server's log)."""

_HASH = re.compile(r"[0-9a-f]{64}")


def revocations_dir(root: Path) -> Path:
    """Where the revocations of the jobber root ``root`` are recorded."""
    return root / "pool" / "revoked"


def issued_dir(root: Path) -> Path:
    """Where ``jobber certs issue`` keeps a copy of each certificate it issued (for ``list``)."""
    return root / "pool" / "issued"


def normalize_hash(text: str) -> str | None:
    """A SHA-256 given as 64 hex digits, with or without openssl's colons; else None."""
    digits = text.strip().replace(":", "").lower()
    return digits if _HASH.fullmatch(digits) else None


def revoked_on(root: Path, sha256: str) -> datetime | None:
    """When the certificate with this hash was revoked in the pool of ``root``, or None.

    Raises:
        CertificateError: the revocation record exists but cannot be read.
    """
    path = revocations_dir(root) / sha256
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            first = file.readline(64).strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        # Unreadable is not "not revoked": refuse rather than admit someone who left.
        raise CertificateError(f"cannot read the revocation record {path}: {err.strerror or err}; "
                               f"make it readable (chmod a+r {path})", path=str(path)) from err
    try:
        return datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:  # hand-made (`touch`): revoked all the same, as of the file's mtime
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def revocations_stamp(root: Path) -> tuple[int, int]:
    """Changes whenever a revocation is added or removed (the directory's mtime and inode)."""
    try:
        st = os.stat(revocations_dir(root))
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)


def revoke(root: Path, sha256: str, subject: str, now: datetime | None = None,
           certificate: bytes | None = None) -> tuple[Path, datetime]:
    """Record the revocation of a certificate in the pool of ``root``.

    Args:
        root: the jobber root.
        sha256: the certificate's hash (64 lowercase hex digits).
        subject: its subject, written beside the date for whoever reads the record.
        now: the moment of the revocation (default: now).
        certificate: the certificate's PEM, kept in the record, when known.

    Returns:
        The record's path, and the moment recorded (an earlier revocation's, when the
        certificate was already revoked).

    Raises:
        CertificateError: the pool's revocations directory cannot be written.
    """
    directory = revocations_dir(root)
    earlier = revoked_on(root, sha256)
    if earlier is not None:
        return directory / sha256, earlier
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    text = f"{moment:%Y-%m-%dT%H:%M:%SZ}\n{subject}\n" + (certificate or b"").decode("ascii", "replace")
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)  # readable by a server running as another user
        fd, tmp = tempfile.mkstemp(prefix=".revoking-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / sha256)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        raise CertificateError(
            f"cannot record the revocation in {directory}: {err.strerror or err}; run as the pool's "
            f"owner (uid {_owner(root / 'pool')}) or with sudo", path=str(directory)) from err
    return directory / sha256, moment


def _owner(path: Path) -> str:
    try:
        return str(path.stat().st_uid)
    except OSError:
        return "?"


def expiry_warning(not_after: datetime, now: datetime | None = None, what: str = "this certificate") -> str | None:
    """A warning when ``not_after`` is within `EXPIRY_WARNING_DAYS` days (or past), else None.

    Args:
        not_after: the end of the certificate's validity, an aware datetime.
        now: the current moment (default: now).
        what: how to name the certificate in the warning.

    Returns:
        The warning, saying when and what to do, or None.
    """
    now = now or datetime.now(timezone.utc)
    left = not_after - now
    renew = "issue a new one (`jobber certs issue NAME`) or ask the pool's administrator for one"
    if left <= timedelta(0):
        return f"{what} expired on {not_after:%Y-%m-%d %H:%M} UTC: {renew}"
    if left > timedelta(days=EXPIRY_WARNING_DAYS):
        return None
    days = round(left / timedelta(days=1))  # issued for 3 days and checked at once: "in 3 days"
    span = f"in {days} day{'s' if days != 1 else ''}" if days else "within a day"
    return f"{what} expires {span} ({not_after:%Y-%m-%d %H:%M} UTC): {renew} before then"
