"""The next attempt of a retried job: what the finisher execs into (see ``retrying.py``).

``run_next_attempt.py JOB_DIR DELAY [WATCHDOG_FD]`` waits ``DELAY`` seconds (a stop meanwhile ends the job
"stopped", never started again), then starts the attempt that ``status.json`` names,
with the limits in ``attempt.json``, through the launcher, exactly as the
first attempt was started. A failure to start ends the job "failed" with the reason.
Then it releases the ended attempt's watchdog: the next attempt has its own.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from jobber._backends.local.backend import LocalBackend
from jobber._backends.local.retrying import release_watchdog
from jobber._jobs.jobdir import JobDir

__all__ = ["main"]

_STOP_CHECK_S = 0.05


def main(argv: list[str]) -> int:
    """``JOB_DIR DELAY [WATCHDOG_FD]``: wait, then start the next attempt (or end the job
    stopped), then release the watchdog."""
    path = Path(argv[0])
    delay = float(argv[1])
    watchdog_fd = int(argv[2]) if len(argv) > 2 else None
    backend = LocalBackend(JobDir(path.parent, path.parent.name, int(path.name)))
    for fd in (0, 1, 2):  # the finisher's were /dev/null already; keep it so
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if backend.dir.exists("stop-requested"):
            backend.end_pending("stopped", "stopped before its next attempt started")
            release_watchdog(watchdog_fd)
            return 0
        time.sleep(min(_STOP_CHECK_S, max(0.0, deadline - time.monotonic())))
    backend.start_next_attempt()
    release_watchdog(watchdog_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
