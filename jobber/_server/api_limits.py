"""The bounds of the v1 API: the most a request may ask for, and what it gets by default.

The handlers refuse what lies beyond them, with a 400 that names the bound, and the
OpenAPI document (``openapi.py``) states each, so that a client (and the fuzz tests) can
know them before sending.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIST_JOBS", "DEFAULT_READ_BYTES", "MAX_BODY_BYTES", "MAX_CALL_BYTES", "MAX_CPUS", "MAX_GPUS", "MAX_GRACE_S",
           "MAX_JOB_ID", "MAX_LIST_JOBS", "MAX_OFFSET", "MAX_QUEUE_GPUS", "MAX_QUEUE_PARALLEL", "MAX_READ_BYTES",
           "MAX_WAIT_S"]

MAX_BODY_BYTES = 1 << 20
# A function job's pickled call (its function and arguments): held in the server's memory
# once while it is written to the job's directory. Data larger than this belongs in files
# on the server that the function reads.
MAX_CALL_BYTES = 64 << 20
MAX_READ_BYTES = 1 << 20
DEFAULT_READ_BYTES = 1 << 16
MAX_GRACE_S = 300.0
MAX_WAIT_S = 60.0
# Log offsets and tails: 8 PiB, exact in any JSON number; no log is that long, and
# larger offsets would overflow the kernel's (offset + length) for a read.
MAX_OFFSET = (1 << 53) - 1
MAX_JOB_ID = 10**18 - 1  # ids have at most 18 digits (JobStore)
DEFAULT_LIST_JOBS = 100
MAX_LIST_JOBS = 1000
# No machine has a million CPUs; larger values overflow the cgroup quota arithmetic.
MAX_CPUS = 4096  # as jobber.Limits: more CPUs than any machine has are refused
MAX_GPUS = 64  # as jobber.Limits(gpus=)
# A queue's budgets: no server runs more jobs at once, or has more GPUs, than these.
MAX_QUEUE_PARALLEL = 100_000
MAX_QUEUE_GPUS = 4096
