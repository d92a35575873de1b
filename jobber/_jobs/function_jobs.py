"""Function jobs on this host's store: ``JobStore.new_function_job`` and their re-runs.

A function job is a job like any other whose command runs the runner
(``function_runner.py``) on its own directory, where ``call.pkl`` waits; its spec records
the interpreter (``python``) and the result's cap (``result_max``). Its options are
``new_job``'s, checked the same way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jobber._backends import default_backend
from jobber._errors import JobError
from jobber._files import write_atomic
from jobber._jobs.pycall import CALL, check_python, result_max_of, runner_command
from jobber._jobs.spec import JobSpec

if TYPE_CHECKING:
    from jobber._jobs.job import Job
    from jobber._jobs.jobdir import JobDir
    from jobber._limits import Limits

__all__ = ["new_function_job", "read_call", "with_call"]

_PLACEHOLDER = "python"  # the command new_job's checks see; the real one needs the job's directory
_NEW_JOB_KEYWORDS = ("env", "cwd", "label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "queue", "after")


def new_function_job(store: Any, call: bytes, limits: Limits | None = None, *, python: str | None = None,
                     result_max: int | str | None = None, **options: Any) -> Job:
    """``JobStore.new_function_job`` (see ``Session.new_function_job``); ``store`` is the ``JobStore``.

    Raises:
        JobError: ``call`` is not bytes, the interpreter is unusable, a Slurm job whose
            directory the nodes do not share, or anything ``new_job`` refuses.
    """
    if not isinstance(call, (bytes, bytearray, memoryview)) or not len(call):
        raise JobError(f"call must be the pickled call (bytes from pack_call), not {type(call).__name__}")
    fields = {"python": check_python(python), "result_max": result_max_of(result_max)}
    if (options.get("backend") or default_backend()) == "slurm":
        from jobber._backends.slurm.shared import check_shared

        check_shared(store.path)
    named = {name: options.pop(name) for name in _NEW_JOB_KEYWORDS if name in options}
    return store._new_job(_PLACEHOLDER, limits, **named, options=options, function=(bytes(call), fields))


def with_call(spec: JobSpec, jobdir: JobDir, function: tuple[bytes, dict[str, Any]]) -> JobSpec:
    """``spec`` made a function job's in ``jobdir``: ``call.pkl`` written, its command the runner's."""
    call, fields = function
    write_atomic(jobdir.path / CALL, call)
    spec = spec.replace(**fields)
    return spec.replace(command=runner_command(spec.python, jobdir.path, spec.result_max))


def read_call(jobdir: JobDir) -> bytes:
    """A function job's ``call.pkl`` (to re-run it).

    Raises:
        JobError: it is gone.
    """
    try:
        with open(os.path.join(jobdir.path, CALL), "rb") as f:
            return f.read()
    except OSError as err:
        raise JobError(f"job {jobdir.job_id}'s call ({CALL}) cannot be read: {err.strerror}; submit the function "
                       "again", job_id=jobdir.job_id) from err
