"""After a job ends: let the jobs that wait for it (or for its place) start.

The finisher calls :func:`wake_waiting` once the outcome is recorded. When the identity
has waiting jobs, the finisher *execs* ``admit.py``, which runs one admission pass
(``admission.py``) with the whole of jobber; otherwise it costs one ``listdir``.

Standard library only: it runs in the finisher's bare interpreter.
"""

from __future__ import annotations

import os
import sys

__all__ = ["wake_waiting"]


def wake_waiting(job_dir: str) -> None:
    """Exec an admission pass if jobs wait in ``job_dir``'s identity; else return."""
    owner_dir = os.path.dirname(os.path.abspath(job_dir))
    waiting = os.path.join(owner_dir, "waiting")
    try:
        lanes = os.listdir(waiting)
        if not any(name.isdigit() for lane in lanes for name in os.listdir(os.path.join(waiting, lane))):
            return
    except OSError:
        return
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    boot = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from jobber._backends.local.admit import main; sys.exit(main(sys.argv[2:]))")
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-c", boot, package_parent, owner_dir])
    except OSError:
        pass  # the next start, end or look at a waiting job runs the pass instead
