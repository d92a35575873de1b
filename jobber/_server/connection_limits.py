"""How many clients the server may hold, and how long each may take: ``jobber serve``'s
``--max-connections`` and friends, fitted to the process's file descriptors.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace

__all__ = ["ConnectionLimits", "fit_limits", "raise_nofile_limit"]

log = logging.getLogger("jobber.server")

# Descriptors kept for everything but client sockets: the listening socket, inotify, log
# files being read, pipes of starts in progress, the pool, Python's own.
_RESERVED_FDS = 256
# The default cap per peer address is this share of --max-connections (512 of 4096).
_PER_PEER_SHARE = 8


@dataclass(frozen=True)
class ConnectionLimits:
    """How many clients, and how long each may take (``jobber serve --max-connections ...``).

    Attributes:
        max_connections: connections held at once, TLS or not yet.
        max_per_peer: of those, from one IP address: at most half of ``max_connections``
            (so that one address can never hold every slot); None is an eighth of it
            (512 of 4096).
        handshake_timeout: seconds from the accept to the end of the TLS handshake.
        header_timeout: seconds from a request's first byte to the end of its headers
            (and for its body, once the headers are in).
        keepalive_timeout: seconds a connection may sit idle between requests.
        max_handshakes: TLS handshakes under way at once (real ones take milliseconds).
    """

    max_connections: int = 4096
    max_per_peer: int | None = None
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_handshakes: int = 256

    def __post_init__(self) -> None:
        if self.max_per_peer is None and _whole(self.max_connections):
            object.__setattr__(self, "max_per_peer", max(1, self.max_connections // _PER_PEER_SHARE))
        for name in ("max_connections", "max_per_peer", "max_handshakes"):
            value = getattr(self, name)
            if not _whole(value):
                raise ValueError(f"--{name.replace('_', '-').replace('per-peer', 'connections-per-peer')} must be a "
                                 f"whole number of at least 1, not {value!r}")
        half = _half(self.max_connections)
        if self.max_per_peer > half:
            raise ValueError(f"--max-connections-per-peer {self.max_per_peer} is more than half of --max-connections "
                             f"{self.max_connections}: one address could hold every slot and lock the others out; "
                             f"give at most {half}, or raise --max-connections")
        for name in ("handshake_timeout", "header_timeout", "keepalive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"--{name.replace('_', '-')} must be a number of seconds above 0 and at most 3600, "
                                 f"not {value!r}")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _half(max_connections: int) -> int:
    return max(1, max_connections // 2)


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses an "unlimited" descriptor count; 2**20 is its usual ceiling (fs.nr_open).
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= want:
        return soft
    if soft == resource.RLIM_INFINITY:
        return want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as err:
        log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, err)
        return soft
    return want


def fit_limits(limits: ConnectionLimits, nofile: int) -> ConnectionLimits:
    """The limits, with the connection caps lowered to fit ``nofile`` descriptors.

    A connection may hold two descriptors (its socket, and a log it follows), and
    ``_RESERVED_FDS`` stay for the rest of the server. The cap per peer address shrinks
    in proportion (512 of 4096 becomes 48 of 384): left as it was, one address could
    fill every slot of the smaller total.
    """
    fits = max(1, (nofile - _RESERVED_FDS) // 2)
    if limits.max_connections <= fits:
        return limits
    assert limits.max_per_peer is not None  # set by __post_init__
    per_peer = min(_half(fits), max(1, limits.max_per_peer * fits // limits.max_connections))
    log.warning("at most %d connections fit in this process's %d file descriptors (ulimit -n): "
                "--max-connections %d is lowered to that, and --max-connections-per-peer %d to %d; "
                "raise the hard limit to allow more", fits, nofile, limits.max_connections, limits.max_per_peer, per_peer)
    return replace(limits, max_connections=fits, max_per_peer=per_peer)
