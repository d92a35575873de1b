"""The OpenAPI 3.1 description of the jobber server's API (served at /v1/openapi.json).

Kept beside the handlers (``routes.py``) rather than generated from them: the document
is the contract clients and the fuzz tests hold the server to, so it is written out. A
job's schemas, derived from the job spec, are in ``job_schema.py``; the bounds it states,
which the handlers enforce, in ``api_limits.py``.
"""

from __future__ import annotations

import copy
from typing import Any

from jobber._jobs.spec import LABEL
from jobber._server.api_limits import (
    DEFAULT_LIST_JOBS,
    DEFAULT_READ_BYTES,
    MAX_BODY_BYTES,
    MAX_CALL_BYTES,
    MAX_CPUS,
    MAX_GRACE_S,
    MAX_JOB_ID,
    MAX_LIST_JOBS,
    MAX_OFFSET,
    MAX_QUEUE_GPUS,
    MAX_QUEUE_PARALLEL,
    MAX_READ_BYTES,
    MAX_WAIT_S,
)
from jobber._server.job_schema import DURATION_PATTERN, JOB_SCHEMAS, QUEUE_PATTERN, SIZE_PATTERN, nullable

# The bounds are api_limits.py's; the handlers import them from here too.
__all__ = ["openapi_document", "MAX_BODY_BYTES", "MAX_READ_BYTES", "MAX_GRACE_S", "MAX_WAIT_S", "MAX_CPUS",
           "MAX_OFFSET", "MAX_JOB_ID", "DEFAULT_LIST_JOBS", "MAX_LIST_JOBS", "MAX_QUEUE_PARALLEL", "MAX_QUEUE_GPUS"]

_FINAL_STATES = ["exited", "failed", "stopped", "oom-killed", "timed-out"]

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
    **JOB_SCHEMAS,
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
    "QueueSettings": {
        "type": "object",
        "additionalProperties": False,
        "description": "A queue's limits: a missing or null one is left as it is, 0 removes it",
        "properties": {
            "parallel": nullable({"type": "integer", "minimum": 0, "maximum": MAX_QUEUE_PARALLEL,
                                  "description": "at most this many of its jobs run at once"}),
            "memory": nullable({"anyOf": [{"type": "integer", "minimum": 0},
                                          {"type": "string", "pattern": f"{SIZE_PATTERN}|^0$"}],
                                "description": "admit while its running jobs' memory limits sum to at most this"}),
            "cpus": nullable({"type": "number", "minimum": 0, "maximum": MAX_CPUS,
                              "description": "the same, for their CPU limits"}),
            "gpus": nullable({"type": "integer", "minimum": 0, "maximum": MAX_QUEUE_GPUS,
                              "description": "the same, for their GPUs"}),
        },
    },
    "Queue": {
        "type": "object",
        "required": ["parallel", "memory", "cpus", "gpus", "running", "waiting"],
        "properties": {
            "parallel": nullable({"type": "integer", "minimum": 1}),
            "memory": nullable({"type": "integer", "minimum": 1}),
            "cpus": nullable({"type": "number"}),
            "gpus": nullable({"type": "integer", "minimum": 1}),
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
            "older_than": nullable({
                "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                          {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 40}],
                "description": "only jobs that ended at least this long ago: seconds, or \"12h\", \"7d\"",
            }),
            "states": nullable({
                "anyOf": [{"type": "string", "enum": _FINAL_STATES},
                          {"type": "array", "items": {"type": "string", "enum": _FINAL_STATES}}],
                "description": "only jobs in these final states",
            }),
            "keep_last": nullable({"type": "integer", "minimum": 0,
                                   "description": "of the matching jobs, keep the newest this many"}),
            "dry_run": {"type": "boolean", "default": False, "description": "only say which would be removed"},
            "label": nullable({"type": "string", "maxLength": 64, "description": "only the jobs with this label"}),
            "ids": nullable({
                "anyOf": [{"type": "string", "maxLength": 4000, "pattern": "^[0-9, -]+$"},
                          {"type": "array", "items": {"type": "integer", "minimum": 1}}],
                "description": "only these jobs: ids and ranges, \"12-40,45\", or a list of ids",
            }),
        },
    },
    "Pruned": {
        "type": "object",
        "required": ["removed", "dry_run"],
        "properties": {
            "removed": {"type": "array", "items": {"type": "integer", "minimum": 1},
                        "description": "the ids removed (or, with dry_run, that would be), oldest first"},
            "dry_run": {"type": "boolean"},
            "kept": {"type": "array", "description": "the selected jobs left in place, and why (\"running\")",
                     "items": {"type": "object", "required": ["id", "reason"],
                               "properties": {"id": {"type": "integer", "minimum": 1},
                                              "reason": {"type": "string"}}}},
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
_NO_RESULT = _error("a command job (it has no result), a job not ended yet, or one that ended without a result "
                    "(the message says how: killed, out of memory, timed out)")
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
                {"name": LABEL, "in": "query", "required": False,
                 "description": "only the jobs with this label (the newest, last, is the one a label names)",
                 "schema": {"type": "string"}},
            ],
            "responses": {"200": _ok("the jobs", "JobList"), "400": _BAD, "403": _FORBIDDEN, "429": _QUOTA},
        },
        "post": {
            "operationId": "createJob",
            "summary": "Create a job, or re-run one (rerun_of), and (unless start is false) start it",
            "description": "A command job as JSON; a function job (python, result_max) as multipart/form-data, "
                           "its fields then its pickled call, which the server stores and never unpickles",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NewJob"}},
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/FunctionJob"},
                                        "encoding": {"job": {"contentType": "application/json"},
                                                     "call": {"contentType": "application/octet-stream"}}}}},
            "responses": {
                "201": _ok("the job, with its status", "Job"),
                "400": _BAD,
                "403": _FORBIDDEN,
                "404": _error("rerun_of: this certificate has no such job"),
                "408": _SLOW_BODY,
                "409": _error("the job was created but could not start (job_id says which)"),
                "413": _error(f"the body is over {MAX_BODY_BYTES} bytes, or a function job's call over "
                              f"{MAX_CALL_BYTES} bytes"),
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
                            "schema": {"type": "string", "pattern": QUEUE_PATTERN}}],
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
    "/v1/jobs/{job_id}/result": {
        "get": {
            "operationId": "getResult",
            "summary": "An ended function job's outcome (result.json); the pickle itself is at .../result/pickle",
            "parameters": [_JOB_ID],
            "responses": {"200": _ok("the outcome", "Result"), "400": _BAD, "403": _FORBIDDEN, "404": _NOT_FOUND,
                          "409": _NO_RESULT, "429": _QUOTA},
        },
    },
    "/v1/jobs/{job_id}/result/pickle": {
        "get": {
            "operationId": "getResultPickle",
            "summary": "An ended function job's pickled return value (or exception), for its owner's client to load",
            "description": "Streamed from the job's file as the job wrote it: the server never unpickles it.",
            "parameters": [_JOB_ID],
            "responses": {
                "200": {"description": "the pickle",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "400": _BAD, "403": _FORBIDDEN, "404": _NOT_FOUND,
                "409": _error("as GET .../result, or the outcome holds no pickle (its error says why)"),
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
                "Run shell commands and Python functions as isolated, resource-limited jobs. HTTPS with TLS 1.3 "
                "only; a client certificate is required, and its SHA-256 is the identity "
                "that owns jobs: each certificate sees and acts on its own jobs only. "
                "Errors are JSON: {\"error\": \"what is wrong and what to do\"}."
            ),
        },
        "paths": copy.deepcopy(_PATHS),
        "components": {"schemas": copy.deepcopy(_SCHEMAS)},
    }
