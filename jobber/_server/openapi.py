"""The OpenAPI 3.1 description of the jobber server's API (served at /v1/openapi.json).

Kept beside the handlers (``routes.py``) rather than generated from them: the document
is the contract clients and the fuzz tests hold the server to, so it is written out. A
job's schemas, derived from the job spec, are in ``job_schema.py``; the function-job paths
(the multipart upload, the result endpoints) in ``openapi_functions.py``; the responses
every path shares in ``openapi_responses.py``; the bounds it states, which the handlers
enforce, in ``api_limits.py``.
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
from jobber._server.openapi_functions import FUNCTION_JOB_CONTENT, RESULT_PATHS
from jobber._server.openapi_responses import (
    BAD,
    CONFLICT,
    FORBIDDEN,
    JOB_ID,
    NOT_FOUND,
    QUOTA,
    SLOW_BODY,
    TOO_LARGE,
    error,
    ok,
)

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
            "skipped": {
                "type": "array",
                "description": "present when jobs of this page were left out because their files cannot be read "
                               "(damaged, or not written by jobber): each with why; GET /v1/jobs/{job_id} answers 409 "
                               "for them",
                "items": {
                    "type": "object",
                    "required": ["id", "error"],
                    "properties": {"id": {"type": "integer", "minimum": 1}, "error": {"type": "string"}},
                },
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
                          "429": QUOTA},
        },
    },
    "/v1/identity": {
        "get": {
            "operationId": "getIdentity",
            "summary": "Who the server takes the caller to be (its certificate's hash and subject)",
            "responses": {"200": ok("the caller's identity", "Identity"), "403": FORBIDDEN, "429": QUOTA},
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
            "responses": {"200": ok("the jobs", "JobList"), "400": BAD, "403": FORBIDDEN, "429": QUOTA},
        },
        "post": {
            "operationId": "createJob",
            "summary": "Create a job, or re-run one (rerun_of), and (unless start is false) start it",
            "description": "A command job as JSON; a function job (python, result_max) as multipart/form-data, "
                           "its fields then its pickled call, which the server stores and never unpickles",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NewJob"}},
                **FUNCTION_JOB_CONTENT}},
            "responses": {
                "201": ok("the job, with its status", "Job"),
                "400": BAD,
                "403": FORBIDDEN,
                "404": error("rerun_of: this certificate has no such job"),
                "408": SLOW_BODY,
                "409": error("the job was created but could not start (job_id says which)"),
                "413": error(f"the body is over {MAX_BODY_BYTES} bytes, or a function job's call over "
                             f"{MAX_CALL_BYTES} bytes"),
                "429": QUOTA,
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
                "200": ok("the ids removed (or that would be)", "Pruned"),
                "400": BAD,
                "403": FORBIDDEN,
                "408": SLOW_BODY,
                "409": error("a job's directory could not be read or removed"),
                "413": TOO_LARGE,
                "429": QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}": {
        "get": {
            "operationId": "getJob",
            "summary": "One job and its status; with wait, once it ended (or wait seconds passed)",
            "parameters": [
                JOB_ID,
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
            "responses": {"200": ok("the job", "Job"), "400": BAD, "403": FORBIDDEN, "404": NOT_FOUND,
                          "409": error("the job's files cannot be read (damaged, or not written by jobber): why"),
                          "429": QUOTA},
        },
        "delete": {
            "operationId": "removeJob",
            "summary": "Remove an ended (or never started) job: its directory and log",
            "parameters": [JOB_ID],
            "responses": {
                "200": ok("the job is gone", "Removed"),
                "400": BAD,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "408": SLOW_BODY,
                "409": error("the job is running, or starting: stop it first"),
                "413": TOO_LARGE,
                "429": QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}/start": {
        "post": {
            "operationId": "startJob",
            "summary": "Start a job created with start: false",
            "parameters": [JOB_ID],
            "responses": {
                "200": ok("the started job", "Job"),
                "400": BAD,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "408": SLOW_BODY,
                "409": CONFLICT,
                "413": TOO_LARGE,
                "429": QUOTA,
            },
        },
    },
    "/v1/jobs/{job_id}/stop": {
        "post": {
            "operationId": "stopJob",
            "summary": "Stop the whole job: SIGTERM, then SIGKILL after grace seconds",
            "parameters": [JOB_ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StopRequest"}}}},
            "responses": {
                "200": ok("the job, ended", "Job"),
                "400": BAD,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "408": SLOW_BODY,
                "409": CONFLICT,
                "413": TOO_LARGE,
                "429": QUOTA,
            },
        },
    },
    "/v1/queues": {
        "get": {
            "operationId": "listQueues",
            "summary": "The caller's queues: their limits, and their jobs running and waiting",
            "description": "Queues are per certificate: another certificate's queue of the same name is its own.",
            "responses": {"200": ok("the queues", "QueueList"), "403": FORBIDDEN, "429": QUOTA},
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
                "200": ok("the queue now", "Queue"),
                "400": BAD,
                "403": FORBIDDEN,
                "408": SLOW_BODY,
                "413": TOO_LARGE,
                "429": QUOTA,
            },
        },
    },
    **RESULT_PATHS,
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
                JOB_ID,
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
                "400": BAD,
                "403": FORBIDDEN,
                "404": NOT_FOUND,
                "429": QUOTA,
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
