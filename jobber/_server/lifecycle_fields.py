"""The job lifecycle over the v1 API: the fields of a new job, re-runs, prunes and attempts.

``routes.py`` holds the handlers; this module holds what they check and compute, with the
rules of the library (``jobber._jobs.options.check_lifecycle``, ``JobStore.rerun`` and
``JobStore.prune``), so a remote job lives exactly as a local one:

    POST   /v1/jobs            {command, ..., the lifecycle options}   the fields: ``job_schema.NEW_JOB_FIELDS``
    POST   /v1/jobs            {"rerun_of": ID, ...overrides}   a new job like ID (``job.rerun``)
    GET    /v1/jobs?label=L    the jobs with that label (newest last: ``find_job``)
    GET    /v1/jobs/ID?attempts=1   the job with ``attempts``, each attempt's status
    POST   /v1/jobs:prune      {older_than, states, keep_last, dry_run, label, ids}   ``prune``
    POST   /v1/jobs            {..., queue, after, limits: {gpus}}   waits for a queue, for jobs
    GET    /v1/queues          the caller's queues (``queues``)
    PUT    /v1/queues/NAME     {parallel, memory, cpus, gpus}   ``set_queue``

Each input is checked before anything is made, and a malformed one is a 400 carrying the
library's own message (``JobError`` or ``LimitError``), never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jobber._backends.context import check_env
from jobber._errors import JobError, LimitError
from jobber._jobs.job import Job, spec_of
from jobber._jobs.options import RETRYABLE, check_label, check_lifecycle_option, parse_duration
from jobber._jobs.queues import AFTER_MODES, check_queue
from jobber._jobs.selection import JobIds
from jobber._jobs.spec import AFTER, LIFECYCLE_DEFAULTS, LIFECYCLE_OPTIONS, QUEUE, RETRY_ON
from jobber._jobs.store import JobStore
from jobber._limits import Limits
from jobber._server import job_schema
from jobber._server.api_limits import MAX_CPUS, MAX_JOB_ID, MAX_QUEUE_GPUS, MAX_QUEUE_PARALLEL
from jobber._server.errors import ApiError, public_message
from jobber._states import FINAL_STATES

__all__ = ["NEW_JOB_EXAMPLE", "NEW_JOB_FIELDS", "PRUNE_EXAMPLE", "PRUNE_FIELDS", "QUEUE_EXAMPLE", "QUEUE_FIELDS",
           "attempts_json", "check_rerun_of", "job_fields", "labelled", "lifecycle_json", "lifecycle_options", "prune",
           "prune_arguments", "queue_arguments", "queue_name", "strict_flag"]

NEW_JOB_EXAMPLE = '{"command": "python train.py", "limits": {"cpu": 1, "memory": "2G"}}'

NEW_JOB_FIELDS = set(job_schema.NEW_JOB_FIELDS)
"""What a ``POST /v1/jobs`` body may hold: the job spec's fields, and ``start``."""
QUEUE_FIELDS = {"parallel", "memory", "cpus", "gpus"}
QUEUE_EXAMPLE = '{"parallel": 2, "memory": "16G", "gpus": 2}'
PRUNE_FIELDS = {"older_than", "states", "keep_last", "dry_run", "label", "ids"}
PRUNE_EXAMPLE = '{"older_than": "7d", "states": ["exited"], "keep_last": 10, "dry_run": true}'


_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)$")
_LIMIT_TYPES: dict[str, tuple[type, ...]] = {
    "cpu": (int, float, str),
    "memory": (int, str),
    "pids": (int,),
    "io_read_bps": (int, str),
    "io_write_bps": (int, str),
    "gpus": (int,),
    "require_isolation": (bool,),
}


def _shown(value: Any) -> str:
    return json.dumps(value)[:40]


def job_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a new job (or a re-run's overrides) present in ``data``, checked, as
    keywords of ``JobStore.new_job`` / ``JobStore.rerun``.

    Raises:
        ApiError: 400 with the library's message for a malformed field.
    """
    fields: dict[str, Any] = {}
    if "command" in data:
        command = fields["command"] = data["command"]
        if not isinstance(command, str) or not command.strip():
            raise ApiError(400, f"command must be a non-empty string: the shell command to run, e.g. {NEW_JOB_EXAMPLE}",
                           "JobError")
        if "\0" in command:
            raise ApiError(400, "the command contains a NUL byte, which no shell can run", "JobError")
    if "limits" in data:
        fields["limits"] = _limits(data["limits"])
    if "env" in data:
        try:
            fields["env"] = None if data["env"] is None else check_env(data["env"])
        except JobError as err:
            raise ApiError(400, str(err), "JobError") from None
    return {**fields, **lifecycle_options(data), **_waits(data)}


def _waits(data: dict[str, Any]) -> dict[str, Any]:
    """``queue`` and ``after`` of a new job, checked by type here (JSON has no tuples);
    whether the ``after`` jobs exist is the store's to say, among the caller's jobs only."""
    fields: dict[str, Any] = {}
    if data.get(QUEUE) is not None:
        fields[QUEUE] = queue_name(data[QUEUE])
    after = data.get(AFTER)
    if after is None:
        return fields
    items = [after] if not isinstance(after, list) else after
    checked: list[Any] = []
    for item in items:
        mode = "ok"
        if isinstance(item, list) and len(item) == 2 and item[1] in AFTER_MODES:
            item, mode = item
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_JOB_ID:
            raise ApiError(400, f"after: {_shown(item)} is not a job id: give ids of your jobs, each alone (it must "
                                'exit 0) or as [id, "any"] (any ending), e.g. [12, [13, "any"]]', "JobError")
        checked.append((item, mode))
    fields[AFTER] = checked
    return fields


def queue_name(value: Any) -> str:
    """A queue's name from a request.

    Raises:
        ApiError: 400 when it is not one.
    """
    try:
        return check_queue(value)
    except JobError as err:
        raise ApiError(400, str(err)[:200], "JobError") from None


def queue_arguments(data: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``set_queue`` from a ``PUT /v1/queues/NAME`` body (null or absent:
    unchanged; 0: no limit), checked by type and range before anything is written.

    Raises:
        ApiError: 400 for a malformed value.
    """
    arguments: dict[str, Any] = {}
    for name, kinds, high in (("parallel", (int,), MAX_QUEUE_PARALLEL), ("memory", (int, str), None),
                              ("cpus", (int, float), MAX_CPUS), ("gpus", (int,), MAX_QUEUE_GPUS)):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or (
                high is not None and not 0 <= value <= high) or (isinstance(value, int) and value < 0):
            bound = f" from 0 to {high}" if high is not None else ""
            raise ApiError(400, f"{name}: {_shown(value)} is not a valid value (give a number{bound}; 0: no limit); "
                                "see QueueSettings in GET /v1/openapi.json", "JobError")
        arguments[name] = value
    return arguments


def _limits(value: Any) -> Limits | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, 'limits must be an object such as {"cpu": 1, "memory": "2G", "pids": 100}', "LimitError")
    for name, given in value.items():
        kinds = _LIMIT_TYPES.get(name)
        if kinds is None or given is None:
            continue  # unknown names are reported by Limits.from_dict, with the known ones
        if isinstance(given, bool) and bool not in kinds or not isinstance(given, kinds):
            raise ApiError(400, f"limits.{name}: {_shown(given)} is not a valid value; see LimitsRequest in "
                                "GET /v1/openapi.json", "LimitError")
    cpu = value.get("cpu")
    if isinstance(cpu, str) and not (len(cpu) <= 20 and _CPU.match(cpu)):
        raise ApiError(400, f"limits.cpu: {cpu[:40]!r} is not a number of CPUs such as 0.5 or 2", "LimitError")
    try:
        limits = Limits.from_dict({k: v for k, v in value.items() if v is not None})
    except LimitError as err:
        raise ApiError(400, public_message(str(err)), "LimitError") from None
    except (OverflowError, ValueError) as err:  # a size too large for a float, say
        raise ApiError(400, f"limits: a value is out of range ({err})", "LimitError") from None
    return limits


def lifecycle_options(data: dict[str, Any]) -> dict[str, Any]:
    """The lifecycle options given in a request body, as keywords of ``new_job``/``rerun``.

    Only the fields present are returned (a re-run changes those alone); null stands for
    the option's default (``LIFECYCLE_DEFAULTS``; for ``retry_on``, not given, as ``new_job``'s
    None). Each is checked here as ``new_job`` checks it; how they go together (``oom_growth``
    needs ``retries``) is the store's to check, with a re-run's other fields.

    Raises:
        ApiError: 400 with the library's message for a malformed option.
    """
    options: dict[str, Any] = {}
    for name in LIFECYCLE_OPTIONS:
        if name not in data:
            continue
        if name == RETRY_ON and data[name] is None:
            options[name] = None
            continue
        value = LIFECYCLE_DEFAULTS[name] if data[name] is None else data[name]
        if name == RETRY_ON and not isinstance(value, (str, list, tuple)):
            # check_lifecycle iterates it: a number or an object would be a TypeError there
            raise ApiError(400, f"retry_on {_shown(value)}: give a state or a list of states among "
                                f"{', '.join(RETRYABLE)}", "JobError")
        try:
            check_lifecycle_option(name, value)
        except JobError as err:
            raise ApiError(400, str(err), "LimitError" if isinstance(err, LimitError) else "JobError") from None
        except (OverflowError, ValueError) as err:  # an integer too large for a float, say
            raise ApiError(400, f"{name}: {_shown(value)} is out of range ({err})", "JobError") from None
        options[name] = value
    return options


def check_rerun_of(value: Any) -> int:
    """The id a new job re-runs (``rerun_of``).

    Raises:
        ApiError: 400 when it is not a job id.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOB_ID:
        raise ApiError(400, f"rerun_of must be the id of one of your jobs (a whole number from 1), not "
                            f"{_shown(value)}: GET /v1/jobs lists yours", "JobError")
    return value


def labelled(job: Job, label: str) -> bool:
    """Whether ``job`` (of a listing) has this label; False once it was removed."""
    try:
        return job.label == label
    except JobError:
        return False  # removed since the directory was listed


def lifecycle_json(job: Job) -> dict[str, Any]:
    """The fields of a job's JSON from its spec beyond command and limits: its ``env``
    and lifecycle options (null: not set), as ``Job`` shows them locally."""
    return spec_of(job).api_fields()


def attempts_json(job: Job) -> list[dict[str, Any]]:
    """Each attempt's status, first to last (one attempt while the backend knows no retries)."""
    return [status.to_dict() for status in job.attempts]


def strict_flag(name: str, raw: str) -> bool:
    """A boolean query parameter: true or false (1 or 0), nothing else."""
    value = raw.strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ApiError(400, f"{name}={raw[:40]!r}: use true or false (1 or 0)")


def prune_arguments(data: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``JobStore.prune`` from a ``POST /v1/jobs:prune`` body, checked as
    ``prune`` checks them (the same messages), before anything is removed.

    Raises:
        ApiError: 400 for a malformed argument.
    """
    older_than, states, keep_last = data.get("older_than"), data.get("states"), data.get("keep_last")
    dry_run = data.get("dry_run", False)
    if older_than is not None:
        try:
            older_than = parse_duration(older_than, "older_than")
        except JobError as err:
            raise ApiError(400, str(err), "JobError") from None
        except (OverflowError, ValueError):
            raise ApiError(400, f"older_than: {_shown(older_than)} is out of range: give seconds, or e.g. 12h, 7d",
                           "JobError") from None
    if states is not None:
        chosen = [states] if isinstance(states, str) else states
        if not isinstance(chosen, list) or not all(isinstance(state, str) for state in chosen):
            raise ApiError(400, f"states must be a final state or a list of them, e.g. [\"failed\", \"oom-killed\"], "
                                f"not {_shown(states)}", "JobError")
        wrong = sorted({state[:40] for state in chosen} - FINAL_STATES)[:5]
        if wrong:
            raise ApiError(400, f"states {wrong} are not final states: choose among {', '.join(sorted(FINAL_STATES))} "
                                "(running jobs are never pruned)", "JobError")
        states = chosen
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0):
        raise ApiError(400, f"keep_last must be a whole number >= 0, not {_shown(keep_last)}", "JobError")
    if not isinstance(dry_run, bool):
        raise ApiError(400, f"dry_run must be true or false, not {_shown(dry_run)}")
    chosen_by: dict[str, Any] = {}
    try:
        if data.get("label") is not None:
            chosen_by["label"] = check_label(data["label"])
        if data.get("ids") is not None:
            if not isinstance(data["ids"], (str, list)):
                raise JobError(f"ids must be text such as \"12-40,45\" or a list of ids, not {_shown(data['ids'])}")
            chosen_by["ids"] = JobIds.parse(data["ids"])
    except JobError as err:
        raise ApiError(400, str(err), "JobError") from None
    return {"older_than": older_than, "states": states, "keep_last": keep_last, "dry_run": dry_run, **chosen_by}


def prune(store: JobStore, arguments: dict[str, Any]) -> dict[str, Any]:
    """``JobStore.prune`` with checked ``arguments`` (``prune_arguments``), in a worker thread.

    Returns:
        ``{"removed": [ids, oldest first], "dry_run": bool, "kept": [{"id", "reason"}, ...]}``:
        ``kept``, the selected jobs left in place (running ones, say) and why.

    Raises:
        JobError: a job directory could not be read or removed.
    """
    pruned = store.prune(**arguments)
    return {"removed": list(pruned), "dry_run": arguments["dry_run"],
            "kept": [{"id": job_id, "reason": public_message(why)} for job_id, why in pruned.kept.items()]}
