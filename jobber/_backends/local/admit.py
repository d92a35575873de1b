"""``admit.py OWNER_DIR``: one admission pass, run by the finisher of a job that ended
while others wait (see ``waking.py`` and ``admission.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobber._backends.local.admission import run_pass
from jobber._backends.local.backend import start_admitted

__all__ = ["main"]


def main(argv: list[str]) -> int:
    owner_dir = Path(argv[0])
    for fd in (0, 1, 2):  # the finisher's were /dev/null; keep them open for the launcher
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    run_pass(owner_dir, owner_dir.name, start_admitted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
