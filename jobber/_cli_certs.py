"""The ``jobber certs`` commands: a team's certificates, from the demo pool to revocation.

    jobber certs init-demo ~/.jobber-demo        a CA, two clients, a server and a pool
    jobber certs issue alice --days 90 --out .   alice.pem and alice.key, signed by the pool's CA
    jobber certs list [--json]                   who the pool admits, until when, revoked or not
    jobber certs check alice.pem                 valid or why not, for whom, its hash
    jobber certs revoke alice.pem                (or its hash) refused from now on, here and by a server
    jobber certs jobs HASH [--stop]              an identity's jobs (a revoked one's), stopped if asked

Kept apart from ``cli.py``, which calls `run_certs`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from jobber._certificates import Certificate, default_root, get_client_certificates
from jobber._certificates.lifecycle import issued_dir, normalize_hash, revoke
from jobber._certificates.listing import pool_identities
from jobber._certificates.pool import MAX_PEM_BYTES, load_pool, parse_input, read_file
from jobber._errors import CertificateError, JobberError

__all__ = ["ca_hint", "run_certs"]


def run_certs(args: argparse.Namespace) -> int:
    """Run ``jobber certs ACTION`` (no action: ``list``)."""
    action = {"check": _check, "init-demo": _init_demo, "issue": _issue, "revoke": _revoke, "jobs": _jobs}
    return action.get(args.certs_action, _list)(args)


def _check(args: argparse.Namespace) -> int:
    try:
        cert = Certificate.from_file(args.file, root=args.root)
    except JobberError:
        hint = ca_hint(args.file)
        if hint:
            raise JobberError(hint) from None
        raise
    if args.hash:
        print(cert.hash())
        return 0
    print(f"{args.file}: valid, a client identity of the pool {default_root(args.root) / 'pool'}")
    print(f"  for      {cert.subject}")
    print(f"  issuer   {cert.issuer}")
    print(f"  valid    {cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}"
          + (f" ({(cert.not_after - datetime.now(cert.not_after.tzinfo)).days} days left)"))
    print(f"  sha256   {cert.hash()}  (its jobs live under this name)")
    warning = cert.expiry_warning()
    if warning:
        print(f"  warning  {warning}")
    return 0


def _init_demo(args: argparse.Namespace) -> int:
    from jobber._certificates.demo import init_demo

    paths = init_demo(args.directory, force=args.force)
    for name, path in paths.items():
        print(f"{name:<12} {path}")
    print(f"\nexport JOBBER_ROOT={os.path.abspath(args.directory)} "
          f"JOBBER_CERT={os.path.abspath(paths['client'])}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from jobber._certificates.issue import issue_client

    root = default_root(args.root)
    paths = issue_client(args.name, root, days=args.days, ca_key=args.ca_key, out=args.out, force=args.force)
    cert = Certificate.from_file(paths["cert"], root)  # what the pool and a server will decide
    if paths["copy"] is None:
        print(f"note: cannot keep a copy in {issued_dir(root)}: `jobber certs list` will not show it", file=sys.stderr)
    print(f"issued {cert.subject}, valid until {cert.not_after:%Y-%m-%d %H:%M} UTC, signed by {cert.issuer} "
          f"({paths['ca']})")
    print(f"  certificate  {paths['cert']}")
    print(f"  key          {paths['key']}  (mode 0600: give it to {args.name} alone)")
    print(f"  sha256       {cert.hash()}")
    print(f"  revoke with  jobber certs revoke {cert.hash()}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    root = default_root(args.root)
    sha256, subject, pem = _target(args.target, root)
    path, moment = revoke(root, sha256, subject, certificate=pem)
    print(f"revoked {subject or sha256} on {moment:%Y-%m-%d %H:%M} UTC (recorded in {path})")
    print("  Certificate.from_pem refuses it from now on; its jobs are kept on disk")
    print(f"  a running jobber server {_handshake_verdict(root, sha256, args.ca_key)}")
    return 0


def _handshake_verdict(root: Path, sha256: str, ca_key: str | None) -> str:
    """Write the CA's CRL if its key is at hand, and say how a running server refuses the certificate."""
    from jobber._certificates.crl import handshake_anchors, handshake_crls, record_certificate, write_crl

    fallback = "refuses it from its next request (403), after a TLS handshake that still succeeds"
    pool = load_pool(root / "pool")
    pinned = [e for e in pool.entries if not pool.is_ca(e) and e.cert == record_certificate(root, sha256)]
    if pinned:
        return "refuses its next TLS handshake (the pool pins it: it is left out of the server's trust store)"
    try:
        crl, listed = write_crl(root, ca_key)
    except CertificateError as err:
        return f"{fallback}: no revocation list was written, since {err}"
    if sha256 not in listed:
        return (f"{fallback}: the revocation list {crl} of the key's CA cannot list it (known only by its hash, "
                f"or issued by another CA: pass that CA's key with --ca-key)")
    _, why_not = handshake_crls(root, pool, handshake_anchors(pool, root))
    if why_not:
        return f"{fallback}, though its CA's revocation list {crl} lists it: {why_not}"
    return f"refuses its next TLS handshake (\"certificate revoked\": the revocation list {crl})"


def _jobs(args: argparse.Namespace) -> int:
    """An administrator's view of one identity's jobs (a revoked one's too), by its hash."""
    from jobber._jobs.store import JobStore, jobs_dir

    sha256 = normalize_hash(args.hash)
    if sha256 is None:
        raise CertificateError(f"{args.hash!r} is not a SHA-256 hash: pass the 64 hex digits `jobber certs list` "
                               f"prints")
    jobs = JobStore(sha256).get_jobs()
    if not jobs:
        print(f"no jobs of {sha256[:16]}… in {jobs_dir()} (a server's jobs: set JOBBER_JOBS_DIR to its directory)")
        return 0
    for job in jobs:
        status = job.status()
        if args.stop and status.state in ("running", "pending"):
            status = job.stop(grace=args.grace)
        print(f"{job.id:>6}  {status.describe():<40}  {job.command[:60]}")
    return 0


def _target(target: str, root: Path) -> tuple[str, str, bytes | None]:
    """The hash, subject and PEM (if known) of CERT|HASH: a PEM file, or a hash of a pool or issued certificate."""
    sha256 = normalize_hash(target)
    if sha256 is None:
        if not os.path.exists(target):
            raise CertificateError(f"{target} is neither a certificate file nor a SHA-256 hash (64 hex digits, "
                                   f"as `jobber certs list` and `jobber certs check --hash` print it)")
        leaf, _ = parse_input(read_file(target, MAX_PEM_BYTES, "the certificate file"))
        cert = Certificate(leaf.cert)  # valid or not: an expired certificate can be revoked too
        return cert.hash(), cert.subject, cert.bytes()
    known = {item["sha256"]: item["subject"] for item in pool_identities(root)}
    from jobber._certificates.crl import record_certificate

    found = record_certificate(root, sha256)
    return sha256, known.get(sha256, ""), found and Certificate(found).bytes()


def _list(args: argparse.Namespace) -> int:
    root = default_root(args.root)
    get_client_certificates(args.root)  # an unreadable pool says so, with the fix
    items = pool_identities(root)
    if getattr(args, "json", False):
        print(json.dumps({"pool": str(root / "pool"), "identities": items}, indent=1))
        return 0
    if not items:
        print(f"the pool {root / 'pool'} is empty: add PEM files there, or run `jobber certs init-demo DIR`")
        return 0
    print(f"pool: {root / 'pool'}")
    print(f"{'SUBJECT':<32} {'KIND':<7} {'ISSUER':<24} {'NOT AFTER':<16} {'STATUS':<18} SHA256")
    for item in items:
        status = (f"revoked {item['revoked_on']}" if item["revoked_on"] else
                  "EXPIRES SOON" if item["warning"] and "expires" in item["warning"] else
                  "EXPIRED" if item["warning"] else "admitted")
        until = item["not_after"][:16].replace("T", " ") if item["not_after"] else "-"
        print(f"{item['subject'][:32]:<32} {item['kind']:<7} {item['issuer'][:24]:<24} {until:<16} "
              f"{status:<18} {item['sha256']}")
    return 0


def ca_hint(path: str) -> str | None:
    """What to say when the CA's certificate is given where a client's is meant, else None:
    the CLI's, the magics' and the Jobs panel's one sentence for it.

    Args:
        path: the certificate file someone gave as their identity (read at most 1 MiB, and
            only if it is a regular file).

    Returns:
        The sentence (it names the client certificate beside the CA's, if there is one), or
        None when the file is no CA certificate or cannot be read.
    """
    try:
        from cryptography import x509

        parsed = x509.load_pem_x509_certificate(read_file(path, MAX_PEM_BYTES, "the certificate file"))
    except (CertificateError, ValueError):
        return None
    cert = Certificate(parsed)
    if not cert.is_ca:
        return None
    client = os.path.join(os.path.dirname(path) or ".", "client.pem")
    return (f"{path} is the CA certificate ({cert.subject}): it issues identities but is not one; "
            f"use your client certificate instead" + (f", e.g. {client}" if os.path.exists(client) else ""))
