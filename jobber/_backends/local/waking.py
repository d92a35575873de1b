"""After a job ends: let the jobs that wait for it (or for its place) start.

The finisher calls :func:`wake_waiting` once the outcome is recorded. When the identity
has waiting jobs, the finisher *execs* ``run_admission.py``, which runs one admission pass
(``admission.py``) with the whole of jobber; otherwise it costs one ``listdir``.

Standard library only: it runs in the finisher's bare interpreter.
"""

from __future__ import annotations

import os
import sys

__all__ = ["waiting_owners", "wake_waiting"]


def _has_waiting(owner_dir: str) -> bool:
    waiting = os.path.join(owner_dir, "waiting")
    try:
        return any(name.isdigit() for lane in os.listdir(waiting) for name in os.listdir(os.path.join(waiting, lane)))
    except OSError:
        return False


def waiting_owners(job_dir: str) -> list[str]:
    """The identities' directories where jobs may wait for ``job_dir``'s job, now ended:
    its own identity's if any job waits there, and, when the job held GPUs (which are
    the whole host's), every other identity with waiting jobs."""
    owner_dir = os.path.dirname(os.path.abspath(job_dir))
    owners = [owner_dir] if _has_waiting(owner_dir) else []
    try:
        with open(os.path.join(job_dir, "spec.json"), "rb") as f:
            held_gpus = b'"gpu_devices"' in f.read()
    except OSError:
        held_gpus = False
    if held_gpus:
        root = os.path.dirname(owner_dir)
        try:
            others = [os.path.join(root, name) for name in sorted(os.listdir(root)) if len(name) == 64]
        except OSError:
            others = []
        owners += [other for other in others if other != owner_dir and _has_waiting(other)]
    return owners


def wake_waiting(job_dir: str) -> None:
    """Exec an admission pass if jobs wait in ``job_dir``'s identity (or, when the job
    held GPUs, which are the whole host's, in any identity); else return."""
    owners = waiting_owners(job_dir)
    if not owners:
        return
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # As the supervisor does: jobber's package without its __init__ (which loads
    # cryptography), so a admit costs the interpreter and the job modules only.
    boot = ("import sys, types; jobber = types.ModuleType('jobber'); jobber.__path__ = [sys.argv[1] + '/jobber']; "
            "sys.modules['jobber'] = jobber; "
            "from jobber._backends.local.run_admission import main; sys.exit(main(sys.argv[2:]))")
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", boot, package_parent, *owners])
    except OSError:
        pass  # the next start, end or look at a waiting job runs the pass instead
