"""What the handlers share through the aiohttp application, by typed key.

``make_app`` (``app.py``) fills these in; the middlewares and the routes read them, so
both import this module rather than each other.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from jobber._server.tls import Verdicts
from jobber._server.watch import WatchHub

# A job start spawns a supervisor (tens of ms, mostly waiting): enough threads that 50
# concurrent starts do not queue. Stops wait out their grace period: their own pool.
_START_THREADS = 32
_STOP_THREADS = 64


@dataclass
class ServerConfig:
    """What the handlers need to know about this server.

    Attributes:
        root: the jobber root whose ``pool`` directory holds the trusted certificates.
        job_user: the user jobs run as, or None for the server's own user.
        job_user_label: that user's name, for messages.
        job_cwd: the jobs' working directory when they run as the server's user (the
            job user's home otherwise, or / when it has none: job directories are
            private to the server's user).
    """

    root: Path
    job_user: str | None
    job_user_label: str
    job_cwd: str | None = None
    starts: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(_START_THREADS, "jobber-start"))
    stops: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(_STOP_THREADS, "jobber-stop"))

    def close(self) -> None:
        """Let the worker threads go once their current calls finish."""
        self.starts.shutdown(wait=False, cancel_futures=True)
        self.stops.shutdown(wait=False, cancel_futures=True)


CONFIG = web.AppKey("config", ServerConfig)
HUB = web.AppKey("hub", WatchHub)
VERDICTS = web.AppKey("verdicts", Verdicts)
