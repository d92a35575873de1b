"""A job in the OpenAPI document: its JSON, a new job's request, its limits and its status.

Both are the job spec's (``jobber._jobs.spec.JobSpec``): a job's JSON holds ``command``,
``limits`` and ``JobSpec.api_fields()``, and ``POST /v1/jobs`` takes the same names (and
``start``). The schemas below are written field by field; which fields the ``Job`` and
``NewJob`` schemas list, and which the server accepts (``NEW_JOB_FIELDS``), is derived from
the spec, so a field the spec gains in the API without a schema here is a KeyError when
this module is imported (``tests/test_openapi.py`` holds the document to the spec).
"""

from __future__ import annotations

from typing import Any

from jobber._jobs.spec import (
    AFTER,
    LABEL,
    LOG_MAX,
    NOTIFY,
    OOM_GROWTH,
    PYTHON,
    QUEUE,
    RESULT_MAX,
    RETRIES,
    RETRY_ON,
    TIMEOUT,
    JobSpec,
)
from jobber._server.api_limits import MAX_CALL_BYTES, MAX_CPUS, MAX_GPUS, MAX_JOB_ID

__all__ = ["DURATION_PATTERN", "JOB_FIELDS", "JOB_SCHEMAS", "NEW_JOB_FIELDS", "QUEUE_PATTERN", "SIZE_PATTERN", "nullable"]

JOB_FIELDS: tuple[str, ...] = ("command", "limits", *JobSpec(command="").api_fields())
"""The fields of a job's JSON that are its spec, in order (beside ``id``, ``status``, ``attempts``)."""
# Given with oom_growth ([factor, cap] or "factor:cap"), never on its own.
_GIVEN_WITH_ANOTHER = ("oom_growth_max",)
NEW_JOB_FIELDS: tuple[str, ...] = (*(name for name in JOB_FIELDS if name not in _GIVEN_WITH_ANOTHER), "start")
"""The fields of a ``POST /v1/jobs`` body: the spec's, and ``start``."""
# In every job's JSON, but not listed as required when the document was first published:
# kept so, the document unchanged.
_NOT_REQUIRED = ("oom_growth_max",)

# As jobber._jobs.queues: a queue's name.
QUEUE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$"
# A positive number (some digit other than 0) with an optional binary unit.
SIZE_PATTERN = r"^\s*([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)\s*([bB]|[kKmMgGtT]([iI]?[bB])?)?\s*$"
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([sS]|[sS][eE][cC]|[mM]|[mM][iI][nN]|[hH]|[dD])?\s*$"
# At least 0.01 CPUs, the smallest quota the kernel takes.
_CPU_PATTERN = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0*\.(0[1-9]|[1-9])[0-9]*)$"
# Any text with something other than white space in it, and no NUL byte.
_COMMAND_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
_STATES = ["created", "pending", "running", "exited", "failed", "stopped", "oom-killed", "timed-out"]
_RETRYABLE = ["failed", "oom-killed", "timed-out"]
# As jobber._jobs.options: a label is not only digits, nor N-M (it would read as ids).
_LABEL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}$"


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def _size(what: str) -> dict[str, Any]:
    return nullable({
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": SIZE_PATTERN},
        ],
        "description": f"{what}: bytes, or a size such as \"512M\" or \"2G\" (binary units)",
    })


def _label(what: str) -> dict[str, Any]:
    return {"type": "string", "pattern": _LABEL_PATTERN, "not": {"pattern": "^[0-9]+(-[0-9]+)?$"}, "description": what}


# What each lifecycle option may be in a request.
_LIFECYCLE_REQUEST: dict[str, Any] = {
    LABEL: nullable(_label("a short name (1-64 letters, digits and _.:+-, not only digits nor a range such as 12-40): GET /v1/jobs?label= "
                           "filters by it")),
    TIMEOUT: nullable({
        "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                  {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 40}],
        "description": "a time limit: seconds, or \"90s\", \"30m\", \"2h\", \"1d\"; past it the job is stopped and "
                       "ends timed-out",
    }),
    LOG_MAX: nullable({
        "anyOf": [{"type": "integer", "minimum": 0},
                  {"type": "string", "pattern": f"{SIZE_PATTERN}|^0$"}],
        "description": "the log's cap: bytes (at least 4096, or 0 for none) or a size such as \"200M\"; past it the "
                       "log keeps its head and its newest bytes (status.log_dropped_bytes says how many went). "
                       "Default: the server's (1 GiB)",
    }),
    RETRIES: nullable({"type": "integer", "minimum": 0, "maximum": 100, "default": 0,
                       "description": "start an attempt that ended in a retry_on state again, up to this many times"}),
    RETRY_ON: nullable({
        "anyOf": [{"type": "string", "enum": _RETRYABLE},
                  {"type": "array", "minItems": 1, "items": {"type": "string", "enum": _RETRYABLE}}],
        "default": ["failed"],
        "description": "which endings are retried; absent or null: [\"failed\"], and [\"failed\", \"oom-killed\"] "
                       "with oom_growth",
    }),
    OOM_GROWTH: nullable({
        "anyOf": [{"type": "number", "exclusiveMinimum": 1, "maximum": 16},
                  {"type": "array", "minItems": 2, "maxItems": 2},
                  {"type": "string"}],
        "description": "retry OOM kills (it needs retries, and a retry_on given must name oom-killed), the next "
                       "attempt getting memory x this factor (above 1, at most 16); "
                       "[factor, cap] or \"factor:cap\" (e.g. [1.5, \"16G\"]) bound it where the server takes a cap",
    }),
    NOTIFY: nullable({"type": "boolean", "default": False,
                      "description": "announce the job's end (JupyterLab's Jobs panel notifies of it whatever its length)"}),
}

# What a new job (or a re-run) may give, by field.
_REQUEST: dict[str, Any] = {
    "command": {"type": "string", "pattern": _COMMAND_PATTERN, "description": "run as /bin/sh -c COMMAND"},
    "limits": nullable({"$ref": "#/components/schemas/LimitsRequest"}),
    "env": nullable({
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "environment variables to set for the job (names: letters, digits, _)",
    }),
    "start": {
        "type": "boolean",
        "default": True,
        "description": "start at once (default); false only creates it: POST .../start later",
    },
    "rerun_of": {"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID,
                 "description": "re-run this job of yours (job.rerun): the original is untouched"},
    QUEUE: nullable({"type": "string", "pattern": QUEUE_PATTERN,
                     "description": "wait in this queue of yours (PUT /v1/queues/NAME sets its limits); "
                                    "the job is pending, its note says why, until the queue admits it"}),
    AFTER: nullable({
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                  {"type": "array", "maxItems": 1000, "items": {"anyOf": [
                      {"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                      {"$ref": "#/components/schemas/Dependency"}]}}],
        "description": "start once these jobs of yours ended: an id alone must exit 0 (else this job "
                       "ends failed, unrun), [id, \"any\"] may end any way. Another certificate's id is "
                       "refused as an id that does not exist",
    }),
    PYTHON: nullable({"type": "string", "maxLength": 4096,
                      "description": "a function job's interpreter (multipart requests only): a name on the jobs' "
                                     "PATH (default \"python3\"), or a path the operator allowed (jobber serve "
                                     "--python); its major.minor must be client_python's"}),
    RESULT_MAX: nullable({**_size("a function job's largest pickled result (multipart requests only; default 1 GiB): "
                                  "over it the job ends failed, saying so"), "default": 1 << 30}),
    **_LIFECYCLE_REQUEST,
}

# How a job's JSON shows each field of its spec.
_SHOWN: dict[str, Any] = {
    "command": {"type": "string"},
    "limits": {"$ref": "#/components/schemas/Limits"},
    "env": {"type": "object", "additionalProperties": {"type": "string"},
            "description": "the variables given when it was made (not what it inherits)"},
    LABEL: nullable({"type": "string"}),
    "rerun_of": nullable({"type": "integer", "minimum": 1, "description": "the job this one re-ran"}),
    TIMEOUT: nullable({"type": "number", "description": "the time limit in seconds"}),
    LOG_MAX: nullable({"type": "integer", "description": "the log's cap in bytes (0: none; null: the server's)"}),
    RETRIES: {"type": "integer", "minimum": 0},
    RETRY_ON: {"type": "array", "items": {"type": "string", "enum": _RETRYABLE}},
    OOM_GROWTH: nullable({"type": "number"}),
    "oom_growth_max": nullable({"type": "integer", "description": "the cap of oom_growth in bytes"}),
    NOTIFY: {"type": "boolean", "description": "whether the job asked to be announced when it ends"},
    QUEUE: nullable({"type": "string", "description": "the queue it waits in (null: none)"}),
    AFTER: {"type": "array", "items": {"$ref": "#/components/schemas/Dependency"},
            "description": "the jobs it waits for: [id, \"ok\"] (must exit 0) or [id, \"any\"]"},
    PYTHON: nullable({"type": "string", "description": "the interpreter a function job runs (null: a command job, "
                                                       "which has no result)"}),
    RESULT_MAX: nullable({"type": "integer", "description": "a function job's cap on its pickled result, in bytes"}),
}

JOB_SCHEMAS: dict[str, Any] = {
    "LimitsRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "What the job may use; a missing or null limit means unlimited.",
        "properties": {
            "cpu": nullable({
                "anyOf": [{"type": "number", "minimum": 0.01, "maximum": MAX_CPUS},
                          {"type": "string", "pattern": _CPU_PATTERN, "maxLength": 20}],
                "description": "CPUs, e.g. 0.5 for half a core",
            }),
            "memory": _size("RAM, swap not allowed on top"),
            "pids": nullable({"type": "integer", "minimum": 1, "description": "most processes and threads at once"}),
            "io_read_bps": _size("bytes per second read from the disk of the job directory"),
            "io_write_bps": _size("bytes per second written to that disk (direct I/O)"),
            "gpus": nullable({"type": "integer", "minimum": 0, "maximum": MAX_GPUS,
                              "description": "GPUs given to the job alone (CUDA_VISIBLE_DEVICES); it waits "
                                             "until that many are free"}),
            "require_isolation": nullable({
                "type": "boolean",
                "description": "refuse to start rather than run with a limit not enforced (default false)",
            }),
        },
    },
    "Limits": {
        "type": "object",
        "required": ["cpu", "memory", "pids", "io_read_bps", "io_write_bps", "require_isolation"],
        "properties": {
            "cpu": nullable({"type": "number"}),
            "memory": nullable({"type": "integer"}),
            "pids": nullable({"type": "integer"}),
            "io_read_bps": nullable({"type": "integer"}),
            "io_write_bps": nullable({"type": "integer"}),
            "gpus": {"type": "integer", "minimum": 0, "description": "absent: none asked for"},
            "require_isolation": {"type": "boolean"},
        },
    },
    "JobStatus": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"type": "string", "enum": _STATES},
            "exit_code": nullable({"type": "integer"}),
            "signal": nullable({"type": "integer"}),
            "oom_killed": {"type": "boolean"},
            "started_at": nullable({"type": "string", "format": "date-time"}),
            "ended_at": nullable({"type": "string", "format": "date-time"}),
            "peak_memory_bytes": nullable({"type": "integer"}),
            "cpu_seconds": nullable({"type": "number"}),
            "memory_bytes": nullable({"type": "integer"}),
            "isolation": nullable({"type": "string", "enum": ["cgroup-v2", "cgroup-v1", "none"]}),
            "isolation_note": {"type": "string"},
            "pid": nullable({"type": "integer"}),
            "note": {"type": "string"},
            "backend": {"type": "string"},
            "limits": {"$ref": "#/components/schemas/Limits"},
            TIMEOUT: nullable({"type": "number", "description": "the job's time limit in seconds"}),
            "attempt": {"type": "integer", "minimum": 1, "description": "which attempt this is (1-based)"},
            RETRIES: {"type": "integer", "minimum": 0, "description": "how many more attempts a failed one may make"},
            RETRY_ON: {"type": "array", "items": {"type": "string", "enum": _RETRYABLE},
                       "description": "which endings are retried"},
            "log_dropped_bytes": {"type": "integer", "minimum": 0,
                                  "description": "bytes the log cap (log_max) cut from the middle of the log"},
            "log_stopped": {"type": "string", "description": 'why the log stopped taking output ("disk full: ..."), '
                                                             'or "": what the job wrote after was dropped'},
            "cpu_throttled_seconds": nullable({"type": "number", "description": "time the CPU limit held the job back"}),
            "cpu_pressure": nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
            "memory_pressure": nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
            "io_pressure": nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
            "peak_pids": nullable({"type": "integer", "description": "the most tasks the job had at once"}),
            "peak_pids_sampled": {"type": "boolean", "description": "peak_pids is the largest of samples taken "
                                                                    "every 0.5 s or more (cgroup v1): a burst can be missed"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", *(name for name in JOB_FIELDS if name not in _NOT_REQUIRED), "status"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            **{name: _SHOWN[name] for name in JOB_FIELDS},
            "status": {"$ref": "#/components/schemas/JobStatus"},
            "attempts": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/JobStatus"},
                "description": "with ?attempts=1: each attempt's status, first to last (the last is status)",
            },
        },
    },
    "NewJob": {
        "type": "object",
        "additionalProperties": False,
        "description": "A new job, or with rerun_of a re-run: a new job like that one (its command, limits, env and "
                       "lifecycle options), changed by the fields given (null: back to the default)",
        "anyOf": [{"required": ["command"]}, {"required": ["rerun_of"]}],
        "properties": {name: _REQUEST[name] for name in NEW_JOB_FIELDS},
    },
    "FunctionJob": {
        "type": "object",
        "required": ["job", "call"],
        "description": "A new function job, as multipart/form-data: the part job, then the part call. The server "
                       "stores the call and never unpickles it; the job, as the caller's uid in its sandbox, does",
        "properties": {
            "job": {"type": "object", "additionalProperties": False, "required": ["client_python"],
                    "properties": {
                        **{name: _REQUEST[name] for name in NEW_JOB_FIELDS if name not in ("command", "rerun_of")},
                        PYTHON: _REQUEST[PYTHON], RESULT_MAX: _REQUEST[RESULT_MAX],
                        "client_python": {"type": "string", "pattern": r"^[0-9]{1,2}\.[0-9]{1,3}$",
                                          "description": "the client's Python major.minor (\"3.11\"): python's must "
                                                         "be the same"}},
                    "description": "the new job's fields (application/json), as NewJob's but command and rerun_of"},
            "call": {"type": "string", "format": "binary", "maxLength": MAX_CALL_BYTES,
                     "description": f"the pickled call (application/octet-stream), at most {MAX_CALL_BYTES} bytes"},
        },
    },
    "Result": {
        "type": "object",
        "required": ["id", "ok", "type", "size"],
        "description": "A function job's outcome (result.json): JSON, read without unpickling anything",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "ok": {"type": "boolean", "description": "true: the function returned; false: it raised, or its result "
                                                     "was not kept (error says why)"},
            "type": nullable({"type": "string", "description": "the returned value's or the exception's type "
                                                               "(\"numpy.ndarray\", \"ValueError\")"}),
            "size": {"type": "integer", "minimum": 0, "description": "bytes of the pickle (GET .../result/pickle); "
                                                                     "0: none"},
            "traceback": nullable({"type": "string", "description": "the exception's traceback, as the job printed it"}),
            "python": nullable({"type": "string", "description": "the job's Python major.minor"}),
            "error": nullable({"type": "string", "description": "why no result was kept, or why the exception could "
                                                                "not be sent back"}),
        },
    },
    "Dependency": {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                        {"type": "string", "enum": ["ok", "any"]}],
        "minItems": 2,
        "maxItems": 2,
    },
}
"""The component schemas of a job: ``Job``, ``NewJob``, their limits, status and dependencies."""
