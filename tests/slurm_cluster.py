"""Is a Slurm cluster reachable here? Shared by the Slurm tests of every module."""

from __future__ import annotations

import shutil
import subprocess


def slurm_unreachable() -> str | None:
    """Why no job can run on Slurm here, or None when a node is ready."""
    if shutil.which("sinfo") is None:
        return "Slurm is not reachable here: `sinfo` not found (run .ci/slurm_up.sh)"
    try:
        # A live controller answers in milliseconds; a dead one makes sinfo retry for ~10 s.
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=3, check=False)
    except subprocess.TimeoutExpired:
        return "Slurm is not reachable here: no idle node (`sinfo` did not answer within 3 s: is slurmctld down?)"
    if not {"idle", "mixed"} & set(answer.stdout.split()):
        said = (answer.stdout + answer.stderr).strip() or "nothing"
        return f"Slurm is not reachable here: no idle node (sinfo says {said}; run .ci/slurm_up.sh)"
    return None


UNREACHABLE = slurm_unreachable()
"""Why Slurm tests are skipped here, or None when a node is ready."""
