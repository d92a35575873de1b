"""Reading PEM input and the pool directory, and the cache of the parsed pool.

Everything read here may come from someone else (a PEM pasted into a request, a file
dropped into the pool), so input is bounded before it is parsed, a FIFO cannot hang the
reader, and every failure becomes a ``CertificateError`` that says what to fix; this is
where cryptography's parse errors are translated. The pool is listed and stat'ed on every
use so that an edit applies at once, but a file is parsed again only when it changed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import threading
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from jobber._certificates.facts import Facts, Pool
from jobber._errors import CertificateError

MAX_PEM_BYTES = 1 << 20
"""Input over 1 MiB is refused before parsing: a certificate with its intermediates is a
few KiB, and parsing attacker-sized input costs memory and time."""

_MAX_POOL_FILE_BYTES = 64 << 20  # a big CA bundle is ~250 KiB
# BEGIN and END lines are found separately and paired in one pass: a single regex
# spanning a block backtracks quadratically over a megabyte of unterminated BEGIN lines.
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]{1,64})-----")
_CERT_LABEL = b"CERTIFICATE"
_Stamp = tuple[str, int, int, int, int]  # path, mtime_ns, size, inode, ctime_ns


def pem_bytes(pem: bytes | str) -> bytes:
    if isinstance(pem, str):
        if len(pem) > MAX_PEM_BYTES:  # every character is at least one byte
            raise _oversized(len(pem))
        pem = pem.encode("utf-8", "replace")
    elif isinstance(pem, (bytearray, memoryview)):
        pem = bytes(pem)
    elif not isinstance(pem, bytes):
        raise TypeError(f"from_pem takes the PEM text as bytes or str, not "
                        f"{type(pem).__name__}; for a file use Certificate.from_file(path)")
    if len(pem) > MAX_PEM_BYTES:
        raise _oversized(len(pem))
    return pem


def _oversized(size: int) -> CertificateError:
    return CertificateError(
        f"the input is {size} bytes, over the 1 MiB limit for a certificate: pass one PEM "
        f"certificate (with its intermediates), not a bundle")


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _pem_blocks(data: bytes) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """Return the complete PEM blocks as (label, body), and the label of every BEGIN."""
    blocks: list[tuple[bytes, bytes]] = []
    begun: list[bytes] = []
    label, start = None, 0
    for marker in _PEM_MARKER.finditer(data):
        kind, name = marker.groups()
        if kind == b"BEGIN":
            begun.append(name)
            label, start = name, marker.end()
        elif name == label:
            blocks.append((name, data[start:marker.start()]))
            label = None
    return blocks, begun


def _not_a_certificate(data: bytes, begun: list[bytes]) -> str:
    labels = [label.decode() for label in begun]
    if not data.strip():
        return ("the input is empty: pass the PEM text of a certificate "
                "(-----BEGIN CERTIFICATE-----)")
    if not labels:
        if data[:1] == b"\x30":  # a DER SEQUENCE
            return ("this looks like a binary (DER) certificate, not PEM: convert it with "
                    "`openssl x509 -inform der -in CERT.der -out CERT.pem`")
        return ("this is not PEM (no -----BEGIN CERTIFICATE----- line): pass the contents of "
                "the certificate file, from -----BEGIN CERTIFICATE----- to "
                "-----END CERTIFICATE-----")
    if labels[0].endswith("PRIVATE KEY"):
        return (f"this is a PEM private key ({labels[0]}), not a certificate: pass the "
                f"certificate that goes with it, and keep the key private")
    if labels[0].endswith("CERTIFICATE REQUEST"):
        return ("this is a certificate signing request (CSR), not a certificate: have a CA in "
                "the pool sign it (`openssl x509 -req -in REQ.csr -CA ca.pem -CAkey ca.key "
                "-days 365 -out cert.pem`) and pass the result")
    if labels[0] == "CERTIFICATE":
        return ("the PEM certificate is truncated (no -----END CERTIFICATE----- line): copy "
                "the whole certificate")
    return (f"this PEM holds a {labels[0]}, not a certificate: pass a "
            f"-----BEGIN CERTIFICATE----- PEM")


def _decode_block(body: bytes, origin: str, what: str) -> Facts:
    text = b"".join(body.split())
    try:
        if not text or b":" in text:  # RFC 1421 headers: an encrypted or legacy PEM
            raise binascii.Error("no plain base64 body")
        der = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise CertificateError(
            f"the base64 of {what} is corrupt ({err}): copy the certificate again, whole, from "
            f"-----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----") from err
    try:
        return Facts(x509.load_der_x509_certificate(der), der, origin)
    except UnsupportedAlgorithm as err:
        raise CertificateError(
            f"{what} uses an algorithm this system cannot check ({err}): use a certificate "
            f"with an RSA, ECDSA or Ed25519 key") from err
    except (ValueError, TypeError, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType) as err:
        raise CertificateError(
            f"{what} is not a valid X.509 certificate (corrupt DER: {err}): export it again "
            f"from where it was issued") from err


def parse_input(data: bytes) -> tuple[Facts, list[Facts]]:
    """Parse the PEM given to from_pem: the leaf, and the certificates after it."""
    blocks, begun = _pem_blocks(data)
    bodies = [body for label, body in blocks if label == _CERT_LABEL]
    if not bodies:
        raise CertificateError(_not_a_certificate(data, begun))
    # Other blocks (a private key kept in the same file) are skipped, as OpenSSL does.
    certs = [_decode_block(body, "", "the certificate" if i == 0 else
                           f"the {_ordinal(i + 1)} certificate of the PEM")
             for i, body in enumerate(bodies)]
    return certs[0], certs[1:]


def _parse_pool_file(path: str, data: bytes) -> list[Facts]:
    fix = "pool files hold only PEM certificates (CAs and pinned ones): fix or remove it"
    blocks, begun = _pem_blocks(data)
    others = sorted({label.decode() for label in begun if label != _CERT_LABEL})
    if others:
        raise CertificateError(f"the pool file {path} holds {', '.join(others)}; {fix}",
                               path=path)
    if not blocks or len(blocks) != len(begun):
        raise CertificateError(f"the pool file {path} holds no complete PEM certificate; "
                               f"{fix}", path=path)
    try:
        return [_decode_block(body, path,
                              f"the {_ordinal(i + 1)} certificate of the pool file {path}")
                for i, (_, body) in enumerate(blocks)]
    except CertificateError as err:
        raise CertificateError(str(err), path=path) from err.__cause__


def read_file(path: str, limit: int, what: str) -> bytes:
    # O_NONBLOCK: a FIFO left where a certificate should be must not hang the reader.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _unreadable(f"{what} {path}", path, err) from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CertificateError(f"{what} {path} is not a regular file (a directory, FIFO "
                                   f"or device): replace it with a PEM file", path=path)
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise _unreadable(f"{what} {path}", path, err) from err
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CertificateError(f"{what} {path} is over {limit >> 20} MiB, too big for "
                               f"certificates: pass the PEM certificate file", path=path)
    return data


def _unreadable(what: str, path: str, err: OSError, mode: str = "a+r") -> CertificateError:
    if isinstance(err, PermissionError):
        return CertificateError(
            f"cannot read {what}: permission denied for uid {os.getuid()}; make it readable "
            f"(chmod {mode} {path}) or run as its owner", path=path)
    return CertificateError(f"cannot read {what}: {err.strerror or err}; check that it "
                            f"exists and holds PEM certificates", path=path)


_cache_lock = threading.Lock()
_pool_cache: dict[str, tuple[tuple[_Stamp, ...], Pool]] = {}  # directory -> (stamps, pool)
_file_cache: dict[str, tuple[_Stamp, list[Facts]]] = {}  # pool file -> (stamp, certs)


def clear_cache() -> None:
    """Forget every parsed pool (benchmarks time the cold path with this)."""
    with _cache_lock:
        _pool_cache.clear()
        _file_cache.clear()


def load_pool(directory: Path) -> Pool:
    # Every call lists and stats the pool, so an edit takes effect at once; a file is
    # parsed again only when its (path, mtime_ns, size, inode, ctime_ns) changed.
    try:
        with os.scandir(directory) as listing:  # str paths: pathlib costs more than stat
            paths = sorted(entry.path for entry in listing
                           if entry.name.endswith(".pem") and not entry.name.startswith("."))
    except FileNotFoundError:
        return Pool(directory, [])
    except NotADirectoryError as err:
        raise CertificateError(
            f"the pool {directory} is not a directory: make it a directory of PEM "
            f"certificates, CAs and pinned ones (or point JOBBER_ROOT elsewhere)", path=str(directory)) from err
    except OSError as err:
        raise _unreadable(f"the pool {directory}", str(directory), err, "a+rx") from err
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # removed since the listing: no longer in the pool
        except OSError as err:
            raise _unreadable(f"the pool file {path}", path, err) from err
        stamps.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
    key = tuple(stamps)
    with _cache_lock:
        hit = _pool_cache.get(str(directory))
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed: dict[str, tuple[_Stamp, list[Facts]]] = {}
    for stamp in stamps:
        with _cache_lock:
            cached = _file_cache.get(stamp[0])
        if cached is None or cached[0] != stamp:
            data = read_file(stamp[0], _MAX_POOL_FILE_BYTES, "the pool file")
            cached = (stamp, _parse_pool_file(stamp[0], data))
        parsed[stamp[0]] = cached
    pool = Pool(directory, [facts for _, certs in parsed.values() for facts in certs])
    with _cache_lock:
        _pool_cache[str(directory)] = (key, pool)
        prefix = str(directory) + os.sep
        for path in [p for p in _file_cache if p.startswith(prefix)]:
            del _file_cache[path]  # files gone from the pool
        _file_cache.update(parsed)
    return pool
