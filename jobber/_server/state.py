"""What the handlers share through the aiohttp application, by typed key.

``make_app`` (``app.py``) fills these in; the middlewares and the routes read them, so
both import this module rather than each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from jobber._server.interpreters import Interpreters, allowed_from_env
from jobber._server.quotas import FairPool, Quotas, Tenants
from jobber._server.tenancy import Tenancy
from jobber._server.tls import Verdicts
from jobber._server.watch import WatchHub

# Every blocking call (a start spawns a supervisor, a status reads a few files, a listing
# many) runs in one pool of threads, taken from the tenants in turn, at most
# _PER_TENANT_THREADS of one tenant at once: another tenant waits for one free thread at
# most. Stops wait out their grace period on the event loop, holding no thread.
_THREADS = 32
_PER_TENANT_THREADS = 2


@dataclass
class ServerConfig:
    """What the handlers need to know about this server.

    Attributes:
        root: the jobber root whose ``pool`` directory holds the trusted certificates.
        tenancy: who runs each tenant's jobs, and how (``tenancy.py``): a uid of each
            tenant's own, or one user for all with ``--single-tenant``.
        quotas: the caps per certificate (``quotas.py``); ``tenants`` keeps the counts.
        body_timeout: seconds a request body may take to arrive.
        work: the threads every blocking call runs in, shared fairly by the tenants.
        interpreters: the Pythons function jobs may name (``interpreters.py``).
    """

    root: Path
    tenancy: Tenancy
    quotas: Quotas = field(default_factory=Quotas)
    body_timeout: float = 10.0  # seconds a request body may take to arrive (--header-timeout)
    work: FairPool = field(default_factory=lambda: FairPool(_THREADS, _PER_TENANT_THREADS, "jobber-work"))
    interpreters: Interpreters = field(default_factory=lambda: Interpreters(allowed_from_env()))
    tenants: Tenants = field(init=False)

    def __post_init__(self) -> None:
        self.tenants = Tenants(self.quotas, self.work)

    def close(self) -> None:
        """Let the worker threads go once their current calls finish."""
        self.work.close()


CONFIG = web.AppKey("config", ServerConfig)
HUB = web.AppKey("hub", WatchHub)
VERDICTS = web.AppKey("verdicts", Verdicts)
