"""A dead supervisor's job, ended at once: what its watchdog execs (see ``launcher.c``).

``reap.py JOB_DIR SUPERVISOR_PID SUPERVISOR_START`` runs when the pipe the supervisor held
closed before the supervisor said it saw its attempt through, which only its death does
(SIGKILL, the OOM killer). Nobody may be looking at the job: without this it would run on,
past its timeout and its log cap, until some status read noticed. It waits until the
supervisor is really gone (its descriptors close a moment before it becomes a zombie),
then reads the job's status as any reader would: that read finds the supervisor dead and
finishes the job (``LocalBackend._reap_orphan``: its processes killed, its cgroup
removed, "failed" with a note, and the jobs waiting for it looked at). A status already
final, or naming another supervisor (the next attempt's), is left alone.
"""

from __future__ import annotations

import os
import sys
import time
import types

if __name__ == "__main__":
    # As run_next_attempt.py starts: jobber's package without its __init__ (which loads cryptography).
    _package = types.ModuleType("jobber")
    _package.__path__ = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    sys.modules["jobber"] = _package

from pathlib import Path  # noqa: E402

from jobber._backends.local.backend import LocalBackend  # noqa: E402
from jobber._backends.local.liveness import alive  # noqa: E402
from jobber._jobs.jobdir import JobDir  # noqa: E402

__all__ = ["main"]

_GONE_WITHIN_S = 10.0


def main(argv: list[str]) -> int:
    """``JOB_DIR SUPERVISOR_PID SUPERVISOR_START``: end the job if its supervisor died."""
    path, pid, start = Path(argv[0]), int(argv[1]), int(argv[2])
    deadline = time.monotonic() + _GONE_WITHIN_S
    while alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        backend = LocalBackend(JobDir(path.parent, path.parent.name, int(path.name)))
        # Between two attempts with the next one's launcher on its way, the status read
        # leaves the job to it: look again once it recorded the attempt, or died.
        while backend.status().state == "pending" and (gate := backend.dir.launcher()) is not None and alive(*gate):
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - nobody to tell (the job was removed?): the next read retries
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
