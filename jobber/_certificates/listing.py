"""Every identity a pool knows, for ``jobber certs list`` and the server's expiry warnings.

The pool's own certificates (CAs and pinned ones), the copies ``jobber certs issue`` keeps
in ``<root>/pool/issued/<sha256>.pem`` (the pool reads only its top-level ``*.pem``, so
these admit nobody by being there: their CA does), and the revocations recorded in
``<root>/pool/revoked/`` whose certificate is known nowhere else.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobber._certificates import Certificate
from jobber._certificates.facts import is_ca_file
from jobber._certificates.lifecycle import expiry_warning, issued_dir, normalize_hash, revocations_dir, revoked_on
from jobber._certificates.pool import MAX_PEM_BYTES, load_pool, parse_input, read_file
from jobber._errors import CertificateError

__all__ = ["pool_identities"]


def pool_identities(root: Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every identity the pool knows: its certificates, the ones issued here, the revoked ones.

    Returns:
        One dict per certificate: subject, sha256, issuer, kind ("ca", "pinned",
        "issued" or "revoked" when only its revocation is known), not_after (ISO, or
        None), revoked_on (ISO date, or None), warning (an expiry warning, or None), file.
    """
    now = now or datetime.now(timezone.utc)
    items: dict[str, dict[str, Any]] = {}

    def add(cert: Certificate, kind: str, file: str) -> None:
        revoked = revoked_on(root, cert.hash())
        items.setdefault(cert.hash(), {
            "subject": cert.subject, "sha256": cert.hash(), "issuer": cert.issuer, "kind": kind,
            "not_after": cert.not_after.isoformat(), "revoked_on": revoked and f"{revoked:%Y-%m-%d}",
            "warning": None if revoked else expiry_warning(cert.not_after, now, "it"), "file": file})

    pool = load_pool(root / "pool")
    for entry in pool.entries:
        ca = pool.is_ca(entry) or is_ca_file(entry.origin)
        add(Certificate(entry.cert), "ca" if ca else "pinned", entry.origin)
    for path in sorted(issued_dir(root).glob("*.pem")) if issued_dir(root).is_dir() else []:
        try:
            leaf, _ = parse_input(read_file(str(path), MAX_PEM_BYTES, "the issued certificate"))
        except CertificateError:
            continue  # a damaged copy: it only served the listing
        add(Certificate(leaf.cert), "issued", str(path))
    records = revocations_dir(root)
    for path in sorted(records.iterdir()) if records.is_dir() else []:
        if path.name in items or normalize_hash(path.name) != path.name:
            continue
        revoked = revoked_on(root, path.name)
        lines = path.read_text(errors="replace").splitlines()
        items[path.name] = {"subject": lines[1] if len(lines) > 1 else "", "sha256": path.name, "issuer": "",
                            "kind": "revoked", "not_after": None,
                            "revoked_on": revoked and f"{revoked:%Y-%m-%d}", "warning": None, "file": str(path)}
    return list(items.values())
