"""How many Certificate.from_pem validations per second, against pools of 1 and 100 CAs.

    python benchmarks/bench_certificates.py [--seconds 1.0]

"cold" forgets the parsed pool before every validation (the first call in a process, or
after every pool edit); "warm" is every later call, which only lists and stats the pool.
The pools are one ECDSA P-256 CA per file, named ``*.ca.pem`` (a pool file is a CA's only
by that name: any other is a pinned client certificate); the client certificate is issued
by the last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobber._certificates import Certificate, _clear_cache


def _issue(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
           issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_root(directory: Path, cas: int) -> tuple[Path, bytes]:
    """A jobber root with ``cas`` CAs in its pool, and a client certificate's PEM."""
    (directory / "pool").mkdir(parents=True)
    for i in range(cas):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"Bench CA {i}", key, None, key, ca=True)
        (directory / "pool" / f"bench{i:03d}.ca.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("bench-user", client_key, cert, key, ca=False)
    return directory, client.public_bytes(serialization.Encoding.PEM)


def rate(step: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``step``, run for about ``seconds``."""
    step()  # imports, lazy initialisation
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        step()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for cas in (1, 100):
            root, pem = make_root(Path(scratch) / f"pool{cas}", cas)

            def cold(root: Path = root, pem: bytes = pem) -> None:
                _clear_cache()
                Certificate.from_pem(pem, root)

            def warm(root: Path = root, pem: bytes = pem) -> None:
                Certificate.from_pem(pem, root)

            for label, step in (("cold", cold), ("warm", warm)):
                per_second = rate(step, args.seconds)
                rows.append((f"{cas} CA" + ("s" if cas > 1 else ""), label, per_second))
    print(f"{'pool':>8}  {'cache':>5}  {'validations/s':>13}  {'per validation':>14}")
    for pool, label, per_second in rows:
        print(f"{pool:>8}  {label:>5}  {per_second:13,.0f}  {1e6 / per_second:11,.0f} µs")


if __name__ == "__main__":
    main()
