"""The names of a job's lifecycle options, written once (standard library only).

``jobber._jobs.spec`` (the typed ``JobSpec``), the CLI and magics flags, the server and the
remote client name the options through these; so does the supervisor island, which reads
``spec.json`` without loading the spec's dataclasses.
"""

from __future__ import annotations

__all__ = ["AFTER", "LABEL", "LIFECYCLE_OPTIONS", "LOG_MAX", "OOM_GROWTH", "OOM_GROWTH_MAX", "PYTHON", "QUEUE",
           "NOTIFY", "RESULT_MAX", "RETRIES", "RETRY_ON", "TIMEOUT"]

LIFECYCLE_OPTIONS = ("label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "notify")
"""The lifecycle options of a new job, as ``new_job``, the CLI, the magics and the server name them."""
LABEL, TIMEOUT, LOG_MAX, RETRIES, RETRY_ON, OOM_GROWTH, NOTIFY = LIFECYCLE_OPTIONS
"""``notify``: the job asks to be announced when it ends (the JupyterLab Jobs panel's notification)."""
OOM_GROWTH_MAX = "oom_growth_max"
"""The cap of ``oom_growth`` (``oom_growth=(1.5, "16G")``), a field of its own in the spec."""
QUEUE, AFTER = "queue", "after"
"""The options that say when a job may start (``new_job(queue=..., after=...)``)."""
PYTHON, RESULT_MAX = "python", "result_max"
"""A function job's options (``new_function_job``, ``executor``): its interpreter and its result's cap."""
