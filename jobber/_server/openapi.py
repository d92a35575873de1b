"""The OpenAPI 3.1 description of the jobber server's API (served at /v1/openapi.json).

Kept beside the handlers (``routes.py``) rather than generated from them: the document
is the contract clients and the fuzz tests hold the server to, so it is written out.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document", "MAX_BODY_BYTES", "MAX_READ_BYTES", "MAX_GRACE_S", "MAX_WAIT_S", "MAX_CPUS",
           "MAX_OFFSET", "MAX_JOB_ID", "DEFAULT_LIST_JOBS", "MAX_LIST_JOBS", "MAX_QUEUE_PARALLEL", "MAX_QUEUE_GPUS"]

MAX_BODY_BYTES = 1 << 20
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
# As jobber._jobs.queues: a queue's name.
_QUEUE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$"

# A positive number (some digit other than 0) with an optional binary unit.
_SIZE_PATTERN = r"^\s*([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)\s*([bB]|[kKmMgGtT]([iI]?[bB])?)?\s*$"
# At least 0.01 CPUs, the smallest quota the kernel takes.
_CPU_PATTERN = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0*\.(0[1-9]|[1-9])[0-9]*)$"
# Any text with something other than white space in it, and no NUL byte.
_COMMAND_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
_STATES = ["created", "pending", "running", "exited", "failed", "stopped", "oom-killed", "timed-out"]
_FINAL_STATES = ["exited", "failed", "stopped", "oom-killed", "timed-out"]
_RETRYABLE = ["failed", "oom-killed", "timed-out"]
# As jobber._jobs.options: a label is not only digits (it would read as an id).
_LABEL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}$"
_DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([sS]|[sS][eE][cC]|[mM]|[mM][iI][nN]|[hH]|[dD])?\s*$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _size(what: str) -> dict[str, Any]:
    return _nullable({
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": _SIZE_PATTERN},
        ],
        "description": f"{what}: bytes, or a size such as \"512M\" or \"2G\" (binary units)",
    })


def _label(what: str) -> dict[str, Any]:
    return {"type": "string", "pattern": _LABEL_PATTERN, "not": {"pattern": "^[0-9]+$"}, "description": what}


_LIFECYCLE_REQUEST: dict[str, Any] = {
    "label": _nullable(_label("a short name (1-64 letters, digits and _.:+-, not only digits): GET /v1/jobs?label= "
                              "filters by it")),
    "timeout": _nullable({
        "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                  {"type": "string", "pattern": _DURATION_PATTERN, "maxLength": 40}],
        "description": "a time limit: seconds, or \"90s\", \"30m\", \"2h\", \"1d\"; past it the job is stopped and "
                       "ends timed-out",
    }),
    "log_max": _nullable({
        "anyOf": [{"type": "integer", "minimum": 0},
                  {"type": "string", "pattern": f"{_SIZE_PATTERN}|^0$"}],
        "description": "the log's cap: bytes (at least 4096, or 0 for none) or a size such as \"200M\"; past it the "
                       "log keeps its head and its newest bytes (status.log_dropped_bytes says how many went). "
                       "Default: the server's (1 GiB)",
    }),
    "retries": _nullable({"type": "integer", "minimum": 0, "maximum": 100, "default": 0,
                          "description": "start an attempt that ended in a retry_on state again, up to this many times"}),
    "retry_on": _nullable({
        "anyOf": [{"type": "string", "enum": _RETRYABLE},
                  {"type": "array", "minItems": 1, "items": {"type": "string", "enum": _RETRYABLE}}],
        "default": ["failed"],
        "description": "which endings are retried",
    }),
    "oom_growth": _nullable({
        "anyOf": [{"type": "number", "exclusiveMinimum": 1, "maximum": 16},
                  {"type": "array", "minItems": 2, "maxItems": 2},
                  {"type": "string"}],
        "description": "after an OOM kill the next attempt gets memory x this factor (above 1, at most 16); "
                       "[factor, cap] or \"factor:cap\" (e.g. [1.5, \"16G\"]) bound it where the server takes a cap",
    }),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong, and what to do"},
            "type": {
                "type": "string",
                "description": "the jobber exception a Python client raises for it",
                "enum": ["JobberError", "CertificateError", "JobNotFound", "JobError", "LimitError"],
            },
            "job_id": {"type": "integer"},
            "quota": {
                "type": "string",
                "description": "with 429: the cap reached (the limit is in limit)",
                "enum": ["max_running_jobs", "max_jobs", "max_requests_in_flight"],
            },
            "limit": {"type": "integer", "description": "with 429: the cap's value"},
        },
    },
    "LimitsRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "What the job may use; a missing or null limit means unlimited.",
        "properties": {
            "cpu": _nullable({
                "anyOf": [{"type": "number", "minimum": 0.01, "maximum": MAX_CPUS},
                          {"type": "string", "pattern": _CPU_PATTERN, "maxLength": 20}],
                "description": "CPUs, e.g. 0.5 for half a core",
            }),
            "memory": _size("RAM, swap not allowed on top"),
            "pids": _nullable({"type": "integer", "minimum": 1, "description": "most processes and threads at once"}),
            "io_read_bps": _size("bytes per second read from the disk of the job directory"),
            "io_write_bps": _size("bytes per second written to that disk (direct I/O)"),
            "gpus": _nullable({"type": "integer", "minimum": 0, "maximum": MAX_GPUS,
                               "description": "GPUs given to the job alone (CUDA_VISIBLE_DEVICES); it waits "
                                              "until that many are free"}),
            "require_isolation": _nullable({
                "type": "boolean",
                "description": "refuse to start rather than run with a limit not enforced (default false)",
            }),
        },
    },
    "Limits": {
        "type": "object",
        "required": ["cpu", "memory", "pids", "io_read_bps", "io_write_bps", "require_isolation"],
        "properties": {
            "cpu": _nullable({"type": "number"}),
            "memory": _nullable({"type": "integer"}),
            "pids": _nullable({"type": "integer"}),
            "io_read_bps": _nullable({"type": "integer"}),
            "io_write_bps": _nullable({"type": "integer"}),
            "gpus": {"type": "integer", "minimum": 0, "description": "absent: none asked for"},
            "require_isolation": {"type": "boolean"},
        },
    },
    "JobStatus": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"type": "string", "enum": _STATES},
            "exit_code": _nullable({"type": "integer"}),
            "signal": _nullable({"type": "integer"}),
            "oom_killed": {"type": "boolean"},
            "started_at": _nullable({"type": "string", "format": "date-time"}),
            "ended_at": _nullable({"type": "string", "format": "date-time"}),
            "peak_memory_bytes": _nullable({"type": "integer"}),
            "cpu_seconds": _nullable({"type": "number"}),
            "memory_bytes": _nullable({"type": "integer"}),
            "isolation": _nullable({"type": "string", "enum": ["cgroup-v2", "cgroup-v1", "none"]}),
            "isolation_note": {"type": "string"},
            "pid": _nullable({"type": "integer"}),
            "note": {"type": "string"},
            "backend": {"type": "string"},
            "limits": {"$ref": "#/components/schemas/Limits"},
            "timeout": _nullable({"type": "number", "description": "the job's time limit in seconds"}),
            "attempt": {"type": "integer", "minimum": 1, "description": "which attempt this is (1-based)"},
            "retries": {"type": "integer", "minimum": 0, "description": "how many more attempts a failed one may make"},
            "log_dropped_bytes": {"type": "integer", "minimum": 0,
                                  "description": "bytes the log cap (log_max) cut from the middle of the log"},
            "log_stopped": {"type": "string", "description": 'why the log stopped taking output ("disk full: ..."), '
                                                             'or "": what the job wrote after was dropped'},
            "cpu_throttled_seconds": _nullable({"type": "number", "description": "time the CPU limit held the job back"}),
            "cpu_pressure": _nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
            "memory_pressure": _nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
            "io_pressure": _nullable({"type": "number", "description": "PSI some avg10 (0-100), cgroup v2 only"}),
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "command", "limits", "env", "label", "rerun_of", "timeout", "log_max", "retries", "retry_on",
                     "oom_growth", "queue", "after", "status"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "command": {"type": "string"},
            "limits": {"$ref": "#/components/schemas/Limits"},
            "env": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "the variables given when it was made (not what it inherits)"},
            "label": _nullable({"type": "string"}),
            "rerun_of": _nullable({"type": "integer", "minimum": 1, "description": "the job this one re-ran"}),
            "timeout": _nullable({"type": "number", "description": "the time limit in seconds"}),
            "log_max": _nullable({"type": "integer", "description": "the log's cap in bytes (0: none; null: the server's)"}),
            "retries": {"type": "integer", "minimum": 0},
            "retry_on": {"type": "array", "items": {"type": "string", "enum": _RETRYABLE}},
            "oom_growth": _nullable({"type": "number"}),
            "oom_growth_max": _nullable({"type": "integer", "description": "the cap of oom_growth in bytes"}),
            "queue": _nullable({"type": "string", "description": "the queue it waits in (null: none)"}),
            "after": {"type": "array", "items": {"$ref": "#/components/schemas/Dependency"},
                      "description": "the jobs it waits for: [id, \"ok\"] (must exit 0) or [id, \"any\"]"},
            "status": {"$ref": "#/components/schemas/JobStatus"},
            "attempts": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/JobStatus"},
                "description": "with ?attempts=1: each attempt's status, first to last (the last is status)",
            },
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_after": {
                "type": "integer",
                "minimum": 1,
                "description": "present when more jobs follow: ask again with after=this (absent from the last page)",
            },
        },
    },
    "NewJob": {
        "type": "object",
        "additionalProperties": False,
        "description": "A new job, or with rerun_of a re-run: a new job like that one (its command, limits, env and "
                       "lifecycle options), changed by the fields given (null: back to the default)",
        "anyOf": [{"required": ["command"]}, {"required": ["rerun_of"]}],
        "properties": {
            "command": {"type": "string", "pattern": _COMMAND_PATTERN, "description": "run as /bin/sh -c COMMAND"},
            "limits": _nullable({"$ref": "#/components/schemas/LimitsRequest"}),
            "env": _nullable({
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
            "queue": _nullable({"type": "string", "pattern": _QUEUE_PATTERN,
                                "description": "wait in this queue of yours (PUT /v1/queues/NAME sets its limits); "
                                               "the job is pending, its note says why, until the queue admits it"}),
            "after": _nullable({
                "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                          {"type": "array", "maxItems": 1000, "items": {"anyOf": [
                              {"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                              {"$ref": "#/components/schemas/Dependency"}]}}],
                "description": "start once these jobs of yours ended: an id alone must exit 0 (else this job "
                               "ends failed, unrun), [id, \"any\"] may end any way. Another certificate's id is "
                               "refused as an id that does not exist",
            }),
            **_LIFECYCLE_REQUEST,
        },
    },
    "Dependency": {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID},
                        {"type": "string", "enum": ["ok", "any"]}],
        "minItems": 2,
        "maxItems": 2,
    },
    "QueueSettings": {
        "type": "object",
        "additionalProperties": False,
        "description": "A queue's limits: a missing or null one is left as it is, 0 removes it",
        "properties": {
            "parallel": _nullable({"type": "integer", "minimum": 0, "maximum": MAX_QUEUE_PARALLEL,
                                   "description": "at most this many of its jobs run at once"}),
            "memory": _nullable({"anyOf": [{"type": "integer", "minimum": 0},
                                           {"type": "string", "pattern": f"{_SIZE_PATTERN}|^0$"}],
                                 "description": "admit while its running jobs' memory limits sum to at most this"}),
            "cpus": _nullable({"type": "number", "minimum": 0, "maximum": MAX_CPUS,
                               "description": "the same, for their CPU limits"}),
            "gpus": _nullable({"type": "integer", "minimum": 0, "maximum": MAX_QUEUE_GPUS,
                               "description": "the same, for their GPUs"}),
        },
    },
    "Queue": {
        "type": "object",
        "required": ["parallel", "memory", "cpus", "gpus", "running", "waiting"],
        "properties": {
            "parallel": _nullable({"type": "integer", "minimum": 1}),
            "memory": _nullable({"type": "integer", "minimum": 1}),
            "cpus": _nullable({"type": "number"}),
            "gpus": _nullable({"type": "integer", "minimum": 1}),
            "running": {"type": "integer", "minimum": 0, "description": "its jobs running now"},
            "waiting": {"type": "integer", "minimum": 0, "description": "its jobs waiting (pending) now"},
        },
    },
    "QueueList": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Queue"},
                                  "description": "name -> the queue (set ones, and those jobs name)"}},
    },
    "StopRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "grace": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_GRACE_S,
                "default": 5.0,
                "description": "seconds between SIGTERM and SIGKILL",
            },
        },
    },
    "PruneRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "older_than": _nullable({
                "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                          {"type": "string", "pattern": _DURATION_PATTERN, "maxLength": 40}],
                "description": "only jobs that ended at least this long ago: seconds, or \"12h\", \"7d\"",
            }),
            "states": _nullable({
                "anyOf": [{"type": "string", "enum": _FINAL_STATES},
                          {"type": "array", "items": {"type": "string", "enum": _FINAL_STATES}}],
                "description": "only jobs in these final states",
            }),
            "keep_last": _nullable({"type": "integer", "minimum": 0,
                                    "description": "of the matching jobs, keep the newest this many"}),
            "dry_run": {"type": "boolean", "default": False, "description": "only say which would be removed"},
        },
    },
    "Pruned": {
        "type": "object",
        "required": ["removed", "dry_run"],
        "properties": {
            "removed": {"type": "array", "items": {"type": "integer", "minimum": 1},
                        "description": "the ids removed (or, with dry_run, that would be), oldest first"},
            "dry_run": {"type": "boolean"},
        },
    },
    "Removed": {
        "type": "object",
        "required": ["id", "removed"],
        "properties": {"id": {"type": "integer", "minimum": 1}, "removed": {"const": True}},
    },
    "Identity": {
        "type": "object",
        "required": ["hash", "subject"],
        "properties": {
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "subject": {"type": "string"},
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "the job's id (another certificate's ids look like ids that do not exist)",
    "schema": {"type": "integer", "minimum": 1},
}
_BAD = _error("malformed request: the message says what is wrong")
_FORBIDDEN = _error("the client certificate passed TLS but is not a valid identity")
_NOT_FOUND = _error("this certificate has no such job")
_CONFLICT = _error("the job is not in a state that allows this (already started, never started)")
_TOO_LARGE = _error(f"the body is over {MAX_BODY_BYTES} bytes")
_SLOW_BODY = _error("the body did not arrive in time (jobber serve --header-timeout)")
_QUOTA = _error("a cap of this certificate is reached: quota names it, limit gives its value "
                "(jobber serve --max-running-jobs, --max-jobs, --max-requests-in-flight)")
_OFFSET_HEADERS = {
    "X-Jobber-Offset": {
        "description": "the log offset of the first byte of the body",
        "schema": {"type": "integer", "minimum": 0},
    },
}

_PATHS: dict[str, Any] = {
    "/v1/openapi.json": {
        "get": {
            "operationId": "getOpenAPI",
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "429": _QUOTA},
        },
    },
    "/v1/identity": {
        "get": {
            "operationId": "getIdentity",
            "summary": "Who the server takes the caller to be (its certificate's hash and subject)",
            "responses": {"200": _ok("the caller's identity", "Identity"), "403": _FORBIDDEN, "429": _QUOTA},
        },
    },
    "/v1/jobs": {
        "get": {
            "operationId": "listJobs",
            "summary": "The caller's jobs, by id, with their status, a page at a time",
            "parameters": [
                {"name": "limit", "in": "query", "required": False,
                 "description": f"most jobs in this page (default {DEFAULT_LIST_JOBS})",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_JOBS, "default": DEFAULT_LIST_JOBS}},
                {"name": "after", "in": "query", "required": False,
                 "description": "only jobs with a larger id: the next_after of the previous page",
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_JOB_ID, "default": 0}},
                {"name": "label", "in": "query", "required": False,
                 "description": "only the jobs with this label (the newest, last, is the one a label names)",
                 "schema": {"type": "string"}},
            ],
            "responses": {"200": _ok("the jobs", "JobList"), "400": _BAD, "403": _FORBIDDEN, "429": _QUOTA},
        },
        "post": {
            "operationId": "createJob",
            "summary": "Create a job, or re-run one (rerun_of), and (unless start is false) start it",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewJob"}}}},
            "responses": {
                "201": _ok("the job, with its status", "Job"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _error("rerun_of: this certificate has no such job"),
                "408": _SLOW_BODY,
                "409": _error("the job was created but could not start (job_id says which)"),
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/jobs:prune": {
        "post": {
            "operationId": "pruneJobs",
            "summary": "Remove the caller's ended jobs (directories and logs) that match; never a running one",
            "description": "cert.prune(): an empty body prunes every ended job. Another certificate's jobs are never "
                           "seen or touched.",
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PruneRequest"}}}},
            "responses": {
                "200": _ok("the ids removed (or that would be)", "Pruned"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "408": _SLOW_BODY,
                "409": _error("a job's directory could not be read or removed"),
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}": {
        "get": {
            "operationId": "getJob",
            "summary": "One job and its status; with wait, once it ended (or wait seconds passed)",
            "parameters": [
                _JOB_ID,
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "description": "answer once the job has ended or this many seconds passed",
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                },
                {"name": "attempts", "in": "query", "required": False,
                 "description": "add attempts: each attempt's status, first to last (job.attempts)",
                 "schema": {"type": "boolean", "default": False}},
            ],
            "responses": {"200": _ok("the job", "Job"), "400": _BAD, "403": _FORBIDDEN, "404": _NOT_FOUND,
                          "429": _QUOTA},
        },
        "delete": {
            "operationId": "removeJob",
            "summary": "Remove an ended (or never started) job: its directory and log",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _ok("the job is gone", "Removed"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _NOT_FOUND,
                "408": _SLOW_BODY,
                "409": _error("the job is running, or starting: stop it first"),
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}/start": {
        "post": {
            "operationId": "startJob",
            "summary": "Start a job created with start: false",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _ok("the started job", "Job"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _NOT_FOUND,
                "408": _SLOW_BODY,
                "409": _CONFLICT,
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}/stop": {
        "post": {
            "operationId": "stopJob",
            "summary": "Stop the whole job: SIGTERM, then SIGKILL after grace seconds",
            "parameters": [_JOB_ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StopRequest"}}}},
            "responses": {
                "200": _ok("the job, ended", "Job"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _NOT_FOUND,
                "408": _SLOW_BODY,
                "409": _CONFLICT,
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/queues": {
        "get": {
            "operationId": "listQueues",
            "summary": "The caller's queues: their limits, and their jobs running and waiting",
            "description": "Queues are per certificate: another certificate's queue of the same name is its own.",
            "responses": {"200": _ok("the queues", "QueueList"), "403": _FORBIDDEN, "429": _QUOTA},
        },
    },
    "/v1/queues/{name}": {
        "put": {
            "operationId": "setQueue",
            "summary": "Set a queue's limits (cert.set_queue); they apply to its waiting jobs at once",
            "parameters": [{"name": "name", "in": "path", "required": True, "description": "the queue",
                            "schema": {"type": "string", "pattern": _QUEUE_PATTERN}}],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueueSettings"}}}},
            "responses": {
                "200": _ok("the queue now", "Queue"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "408": _SLOW_BODY,
                "413": _TOO_LARGE,
                "429": _QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}/log": {
        "get": {
            "operationId": "readLog",
            "summary": "Read the log (stdout and stderr), or follow it live",
            "description": (
                "Without follow: up to `length` bytes from `offset`, or the last `tail` bytes. "
                "With follow=1: a chunked stream from `offset` (or the last `tail` bytes) that "
                "delivers output as it is written and ends once the job has ended and the log "
                "is drained. X-Jobber-Offset gives the offset of the first byte: to resume after "
                "a lost connection, follow again from it plus the bytes received."
            ),
            "parameters": [
                _JOB_ID,
                {"name": "offset", "in": "query", "required": False, "description": "byte offset to start at",
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
                {"name": "tail", "in": "query", "required": False,
                 "description": "start this many bytes before the end instead (not with offset)",
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
                {"name": "length", "in": "query", "required": False,
                 "description": "most bytes to return (default 65536); with follow, the stream ends after this many",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_READ_BYTES, "default": DEFAULT_READ_BYTES}},
                {"name": "follow", "in": "query", "required": False, "description": "stream until the job has ended",
                 "schema": {"type": "boolean", "default": False}},
            ],
            "responses": {
                "200": {
                    "description": "the log bytes, as the job wrote them",
                    "headers": _OFFSET_HEADERS,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _NOT_FOUND,
                "429": _QUOTA,
            },
        },
    },
}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the v1 API.

    Args:
        version: the jobber version, reported as the document's ``info.version``.

    Returns:
        A fresh JSON-able dict (callers may change it).
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobber",
            "version": version,
            "description": (
                "Run shell commands as isolated, resource-limited jobs. HTTPS with TLS 1.3 "
                "only; a client certificate is required, and its SHA-256 is the identity "
                "that owns jobs: each certificate sees and acts on its own jobs only. "
                "Errors are JSON: {\"error\": \"what is wrong and what to do\"}."
            ),
        },
        "paths": copy.deepcopy(_PATHS),
        "components": {"schemas": copy.deepcopy(_SCHEMAS)},
    }
