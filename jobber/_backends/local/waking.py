"""After a job ends: let the jobs that wait for it (or for its place) start.

The finisher calls :func:`wake_waiting` once the outcome is recorded. When the identity
has waiting jobs, the finisher *execs* ``run_admission.py``, which runs one admission pass
(``admission.py``) with the whole of jobber; otherwise it costs one ``listdir``.

Passes are coalesced: an admission process costs ~10x a bare interpreter (its imports),
and the jobs of a queue tend to end together. The finisher says it wants a pass (it
touches ``<owner dir>/.admission-wanted``) and takes the admission lock if it is free (then
it execs as above). A pass takes the lock, renames that file ``.admission-serving``
before it reads what runs, and removes that one once it is through; an admission process
runs its pass again while the first file is back (a finisher asked meanwhile), its
imports already paid. So a finisher that found the lock held waits for it (a kill -9 of
its holder frees it too), and finds neither file once a pass that began after its
outcome was recorded went through: then it execs nothing. A pass killed half-way leaves
``.admission-serving``: the finisher runs its own.

Standard library only: it runs in the finisher's bare interpreter.
"""

from __future__ import annotations

import fcntl
import os
import sys

from jobber._files import READ_MAX, read_regular

__all__ = ["SERVING", "WANTED", "waiting_owners", "wake_waiting"]

LOCK = ".admission"  # the identity's admission lock (admission.py)
WANTED = ".admission-wanted"  # a pass is wanted: the next pass takes it, under the lock
SERVING = ".admission-serving"  # what WANTED becomes while a pass serves it; removed once through
admit_here = None  # the warm launcher's (``warm.py``): runs the pass in this process instead of exec'ing it


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
        held_gpus = b'"gpu_devices"' in read_regular(os.path.join(job_dir, "spec.json"), READ_MAX)
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


def _still_wanted(owner_dir: str) -> bool:
    """Ask for a pass, wait for the admission lock: is a pass still wanted (none that began
    after the ask went through)? True when that cannot be told."""
    try:
        os.close(os.open(os.path.join(owner_dir, WANTED), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600))
        lock = os.open(os.path.join(owner_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return True
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # no pass runs: this finisher's admission is the one
        except BlockingIOError:
            fcntl.flock(lock, fcntl.LOCK_EX)
        return any(os.path.lexists(os.path.join(owner_dir, name)) for name in (WANTED, SERVING))
    except OSError:
        return True
    finally:
        os.close(lock)  # the admission takes it again: a pass that comes first sees this outcome too


def wake_waiting(job_dir: str) -> None:
    """Exec an admission pass if jobs wait in ``job_dir``'s identity (or, when the job
    held GPUs, which are the whole host's, in any identity), unless a pass that began
    after this job's outcome was recorded saw them; else return."""
    owners = [owner for owner in waiting_owners(job_dir) if _still_wanted(owner)]
    if not owners:
        return
    if admit_here is not None:
        admit_here(owners)  # a warm finisher has the modules of a pass loaded already
        return
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # As the supervisor does: jobber's packages without their __init__ (jobber's loads
    # cryptography, jobber._backends' the backends' registry), so an admission costs the
    # interpreter and the modules of a pass and a launch only.
    boot = ("import sys, types\n"
            "for name in ('jobber', 'jobber._backends', 'jobber._backends.local'):\n"
            "    package = types.ModuleType(name); package.__path__ = [sys.argv[1] + '/' + name.replace('.', '/')]\n"
            "    sys.modules[name] = package\n"
            "from jobber._backends.local.run_admission import main; sys.exit(main(sys.argv[2:]))")
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", boot, package_parent, *owners])
    except OSError:
        pass  # the next start, end or look at a waiting job runs the pass instead
