"""``run_admission.py OWNER_DIR...``: an admission pass for each identity, run by the finisher of
a job that ended while others wait (see ``waking.py`` and ``admission.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobber._backends.local.admission import run_pass
from jobber._backends.local.backend import start_admitted
from jobber._errors import JobberError

__all__ = ["main"]

# Passes more for finishers that asked during the last one, their imports saved (``waking.py``);
# bounded, so that an admission process ends even while a long line drains.
_AGAIN = 32


def main(argv: list[str]) -> int:
    for fd in (0, 1, 2):  # the finisher's were /dev/null; keep them open for the launcher
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    for owner_dir in map(Path, argv):  # its own identity, then others waiting for GPUs it held
        try:
            run_pass(owner_dir, owner_dir.name, start_admitted, again=_AGAIN)
        except (OSError, JobberError):
            continue  # another's identity this process may not read: its own look admits it
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
