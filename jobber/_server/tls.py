"""TLS for the jobber server: the pool as trust store, and the caller's identity.

A caller is admitted twice, and the two verdicts agree because the core's
``Certificate.from_pem`` mirrors OpenSSL's client-certificate checks:

1. the TLS handshake verifies the client certificate against the pool (``<root>/pool/*.pem``,
   as ``tls_trust_store`` selects it, is the context's trust store; ``CERT_REQUIRED``, TLS
   1.3 only);
2. every request runs ``Certificate.from_pem`` on what the client presented. Its
   ``hash()`` is the identity.

Step 2 also catches what a handshake cannot: a pool edited while a connection is kept
alive, a certificate that expired during one, and a leaf signed by a pinned certificate.
The pool's CAs issue identities, its pinned certificates identify only themselves; but
OpenSSL has no "trusted as itself only": a self-signed certificate in the trust store is
also an issuer to it when it looks like a CA (CA:TRUE, what ``openssl req -x509`` makes).
Such a pinned certificate must be in the trust store to pass as itself, so the handshake
accepts what its key signs, and step 2 refuses it with 403 on every request (the
CertificateError says which pinned certificate signed it and how to trust it as a CA); the
server logs a warning for each such certificate when it loads the pool. Pinned
certificates without CA powers (CA:FALSE) and pinned ones that are not self-signed are
refused as issuers by the handshake itself: the former fail OpenSSL's CA check, the latter
are not in the trust store. The TLS trust store follows pool edits too (`PoolContexts`),
so neither verdict needs a restart. A revoked certificate fails the handshake when the
pool pins it (left out of the trust store) or its CA's revocation list names it (see
`jobber._certificates.crl`); else step 2 refuses it (403).

The client's intermediates: ``from_pem`` is given the chain the client sent
(``get_unverified_chain``, public since Python 3.13 and a private method of
``_ssl._SSLSocket`` since 3.10), so a leaf whose intermediate is not in the pool is judged
on the same input as by the handshake. Were it missing, only the leaf would be passed,
and such a client would get 403 although its handshake succeeded.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import hashlib
import logging
import os
import socket
import ssl
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509

from jobber._certificates import MAX_PEM_BYTES, Certificate, default_root, get_client_certificates, tls_trust_store
from jobber._certificates.crl import handshake_anchors, handshake_crls
from jobber._certificates.lifecycle import expiry_warning, revocations_dir, revocations_stamp
from jobber._certificates.listing import pool_identities
from jobber._certificates.pool import load_pool
from jobber._errors import CertificateError, JobberError

__all__ = ["Identity", "PoolContexts", "Verdicts", "make_ssl_context", "peer_chain_pem", "reload_ssl_context",
           "send_tls_alerts",
           "unverified_identity"]

log = logging.getLogger("jobber.server")


def _pool_stamp(pool: Path) -> tuple:
    try:
        names = sorted(n for n in os.listdir(pool) if n.endswith(".pem") and not n.startswith("."))
    except OSError:
        return ()
    stamps = []
    for name in names:
        try:
            st = os.stat(pool / name)
        except OSError:
            continue
        stamps.append((name, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
    return tuple(stamps)


def _revocations_stamp(root: Path) -> tuple:
    """The revocation records and CRLs, by name and file stamp (a new one changes it)."""
    directory = revocations_dir(root)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    return tuple((name, _file_stamp(str(directory / name))) for name in names)


def _file_stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def expiry_warnings(cert: str, root: Path, now: datetime | None = None) -> list[str]:
    """Warnings for the server's certificate, and the pool's and issued ones not revoked,
    that expire within 14 days (or have expired)."""
    warnings = []
    try:
        with open(cert, "rb") as file:
            own = x509.load_pem_x509_certificate(file.read(MAX_PEM_BYTES))
        warnings.append(expiry_warning(own.not_valid_after_utc, now, f"the server's certificate {cert}"))
    except (OSError, ValueError):
        pass  # loading the chain said why, or will at the next reload
    try:
        identities = pool_identities(root, now)
    except (CertificateError, OSError):
        identities = []  # the pool's own errors are logged where it is loaded
    warnings += [f"the {item['kind']} certificate {item['subject']} (sha256 {item['sha256'][:16]}…): "
                 f"{item['warning']}" for item in identities if item["warning"]]
    return [w for w in warnings if w]


class PoolContexts:
    """TLS contexts whose trust store is the pool as it is now, and whose certificate is too.

    The listening context hands every new connection (``wrap_bio``, what asyncio calls
    per connection, and ``wrap_socket``) an ``SSLObject`` of the current context; when the
    pool's files, its revocations, or the server's own certificate or key changed, the
    current context is first built again from them, so the TLS verdict follows pool edits
    and revocations just as ``Certificate.from_pem`` does, and a renewed server
    certificate is served from the next handshake on. The whole context is chosen before
    the handshake, not swapped at the ClientHello (``sni_callback``): OpenSSL's
    ``SSL_set_SSL_CTX`` switches the certificate and trust store but keeps the verify
    flags the connection was made with, and a trust store with CRLs needs
    ``VERIFY_CRL_CHECK_LEAF`` set with it, or unset without it (see
    `jobber._certificates.crl`). Established connections keep the context they were made
    with, so none is dropped. A certificate and key that do not match (one replaced, not yet the
    other) keep the previous context until both are in place. It also logs, at start and
    then once a day (at the first handshake after a day), the certificates that expire
    within 14 days.
    """

    _EXPIRY_EVERY_S = 86400.0

    def __init__(self, cert: str, key: str, root: Path) -> None:
        self._cert, self._key, self._root = cert, key, root
        self._stamp: tuple = ()
        self._current: ssl.SSLContext | None = None
        self._crl_note: str | None = None
        self.listening: _Listening = self._build(_Listening)  # type: ignore[assignment]
        self.listening.contexts = self
        self._log_expiry()

    def _stamps(self) -> tuple:
        return (_pool_stamp(self._root / "pool") + _revocations_stamp(self._root), _file_stamp(self._cert),
                _file_stamp(self._key))

    def _log_expiry(self) -> None:
        self._next_expiry_check = time.monotonic() + self._EXPIRY_EVERY_S
        for warning in expiry_warnings(self._cert, self._root):
            log.warning("%s", warning)

    def _build(self, kind: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        stamp = self._stamps()
        if not get_client_certificates(self._root):
            raise JobberError(
                f"the pool {self._root / 'pool'} holds no certificate, so no client could connect: "
                "put the client CA (as ca.pem or NAME.ca.pem) or pinned client certificates there "
                "as PEM files, or make a demo pool with `jobber certs init-demo DIR` and pass --root DIR"
            )
        # The CAs and the pinned certificates, less the pinned ones that would act as
        # intermediate CAs (see the module docstring).
        anchors, warnings = tls_trust_store(self._root)
        # Built like the context Certificate.from_pem mirrors: no VERIFY_X509_STRICT and no
        # VERIFY_X509_PARTIAL_CHAIN (ssl.create_default_context sets both on 3.13+).
        ctx = kind(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        crls, why_not = handshake_crls(self._root, load_pool(self._root / "pool"),
                                       handshake_anchors(load_pool(self._root / "pool"), self._root))
        if crls:
            # A revoked certificate a CA issued fails the handshake ("certificate revoked");
            # CRLs load from a file only (cadata takes certificates alone).
            _load_with_crls(ctx, anchors + crls)
        elif anchors:  # else it trusts nothing: every client is refused
            ctx.load_verify_locations(cadata=anchors)
        try:
            ctx.load_cert_chain(self._cert, self._key)
        except FileNotFoundError as err:
            raise JobberError(f"cannot read the server certificate or key: {err.filename}: no such file") from err
        except (ssl.SSLError, OSError) as err:
            raise JobberError(
                f"cannot use {self._cert} with key {self._key}: {err}; pass the server's PEM "
                "certificate (chain) and its unencrypted private key"
            ) from err
        self._stamp = stamp
        self._current = ctx
        for warning in warnings:
            log.warning("%s", warning)
        if why_not != self._crl_note:
            self._crl_note = why_not
            if why_not:
                log.warning("%s", why_not)
        return ctx

    def reload(self) -> None:
        """Rebuild the context from the files as they are now (``jobber serve`` on SIGHUP)."""
        log.info("SIGHUP: reloading the pool and the server's certificate and key")
        try:
            self._build()
        except (JobberError, CertificateError, ssl.SSLError, OSError) as err:
            log.warning("cannot reload the pool or the server's certificate, keeping the previous one: %s", err)
            return
        self._log_expiry()

    def current(self) -> ssl.SSLContext:
        """The context for a new connection: built again first if the files it came from changed."""
        stamp, old = self._stamps(), self._stamp
        try:
            if stamp != old:
                self._build()
                if stamp[1:] != old[1:]:
                    log.info("the server's certificate or key changed: new connections get %s", self._cert)
                    self._log_expiry()
                if stamp[0] != old[0]:
                    log.info("the pool changed: TLS now trusts %d certificate(s)",
                             len(get_client_certificates(self._root)))
            if time.monotonic() >= self._next_expiry_check:
                self._log_expiry()
        except (JobberError, CertificateError, ssl.SSLError, OSError) as err:
            # Keep the last good context; requests are still judged by from_pem.
            log.warning("cannot reload the pool or the server's certificate, keeping the previous one: %s", err)
            self._stamp = stamp
        return self._current or self.listening


class _Listening(ssl.SSLContext):
    """The context the server listens with: each new connection gets the current context's."""

    contexts: PoolContexts

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        current = self.contexts.current()
        wrap = super().wrap_bio if current is self else current.wrap_bio
        return wrap(incoming, outgoing, server_side=server_side, server_hostname=server_hostname, session=session)

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        current = self.contexts.current()
        wrap = super().wrap_socket if current is self else current.wrap_socket
        return wrap(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                    suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname, session=session)


def _load_with_crls(ctx: ssl.SSLContext, pem: str) -> None:
    fd, path = tempfile.mkstemp(prefix="jobber-trust-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(pem)
        ctx.load_verify_locations(cafile=path)
    finally:
        os.unlink(path)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def send_tls_alerts() -> None:
    """Make asyncio send the TLS alert of a failed handshake, and log the refusal.

    asyncio drops what OpenSSL queued for the peer when a handshake fails, so a refused
    client sees the connection vanish instead of "alert certificate required",
    "unknown ca" or "protocol version" (CPython gh-98078, fixed upstream by PR #153620 in
    2026; blocking ``ssl`` sockets always sent it). Flushing the outgoing buffer first
    is harmless where the fix is present. Applied by `serve` to its own process only.
    """
    protocol = asyncio.sslproto.SSLProtocol
    if getattr(protocol, "_jobber_sends_alerts", False):
        return
    original = protocol._on_handshake_complete

    def on_handshake_complete(self: Any, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            try:
                self._process_outgoing()
            except Exception:  # noqa: BLE001 - best effort: the connection is closing anyway
                pass
            peer = self._transport.get_extra_info("peername") if self._transport else None
            log.info("refused a TLS client %s: %s", peer[0] if peer else "",
                     getattr(handshake_exc, "verify_message", None) or getattr(handshake_exc, "reason", None)
                     or handshake_exc)
        original(self, handshake_exc)

    protocol._on_handshake_complete = on_handshake_complete
    protocol._jobber_sends_alerts = True


def reload_ssl_context(ctx: ssl.SSLContext) -> None:
    """Rebuild a context `make_ssl_context` made from its files now (for SIGHUP); else nothing."""
    contexts = getattr(ctx, "contexts", None)
    if isinstance(contexts, PoolContexts):
        contexts.reload()


def make_ssl_context(cert: str, key: str, root: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.3 only, client certificate verified against the pool.

    Raises:
        JobberError: the pool is empty, or the server certificate or key is unusable.
    """
    return PoolContexts(cert, key, default_root(root)).listening


class Verdicts:
    """Recent ``Certificate.from_pem`` successes, so a busy client is not re-verified per request.

    Keyed by the presented chain and the pool's file stamps (with its revocations): an
    edited pool misses the cache, so a removed CA or a revoked certificate (`jobber certs
    revoke`) is refused from the very next request, with no restart. An entry lives 60 s at most,
    and never past the leaf's expiry. Used on the event loop's thread only.
    """

    _TTL_S = 60.0
    _SIZE = 1024

    def __init__(self, root: Path) -> None:
        self._root = root
        self._entries: OrderedDict[tuple[bytes, tuple, tuple], tuple[Certificate, float]] = OrderedDict()

    def certificate(self, pem: bytes) -> Certificate:
        """The validated certificate; CertificateError as from ``from_pem``."""
        key = (pem, _pool_stamp(self._root / "pool"), revocations_stamp(self._root))
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > now:
            self._entries.move_to_end(key)
            return hit[0]
        cert = Certificate.from_pem(pem, self._root)
        left = (cert.not_after - datetime.now(timezone.utc)).total_seconds()
        self._entries[key] = (cert, now + min(self._TTL_S, left))
        while len(self._entries) > self._SIZE:
            self._entries.popitem(last=False)
        return cert


@dataclass(frozen=True)
class Identity:
    """The caller, as its certificate says."""

    hash: str
    subject: str
    common_name: str | None

    @property
    def label(self) -> str:
        """For the log: the hash's first 12 digits and the common name (unprintables as ?)."""
        name = "".join(c if c.isprintable() else "?" for c in (self.common_name or "-")[:64])
        return f"{self.hash[:12]} CN={name}"


def peer_chain_pem(ssl_object: ssl.SSLObject) -> bytes | None:
    """The certificates the client presented, leaf first, as PEM (None without any)."""
    sslobj = getattr(ssl_object, "_sslobj", None)
    get_chain = getattr(ssl_object, "get_unverified_chain", None) or getattr(sslobj, "get_unverified_chain", None)
    if get_chain is not None:
        try:
            chain = get_chain()
        except (ssl.SSLError, ValueError):
            chain = None
        if chain:
            pems = []
            for cert in chain:
                if isinstance(cert, bytes):  # 3.13+ returns DER bytes from the public method
                    pems.append(ssl.DER_cert_to_PEM_cert(cert))
                else:
                    pems.append(cert.public_bytes())  # _ssl.Certificate: PEM by default
            return "".join(pems).encode("ascii")
    der = ssl_object.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii") if der else None


def unverified_identity(ssl_object: ssl.SSLObject) -> Identity:
    """Who a refused certificate claims to be, for the log only."""
    der = ssl_object.getpeercert(binary_form=True) or b""
    names = [value for rdn in (ssl_object.getpeercert() or {}).get("subject", ()) for key, value in rdn
             if key == "commonName"]
    return Identity(hashlib.sha256(der).hexdigest(), "", names[0] if names else None)
