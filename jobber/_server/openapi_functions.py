"""The function-job part of the OpenAPI document: the multipart upload and the result endpoints.

A function job is created by the same ``POST /v1/jobs`` as a command job, as
multipart/form-data (its fields, then its pickled call); its outcome is read from two
endpoints of its own. ``openapi.py`` composes these into the document; their schemas
(``FunctionJob``, ``Result``) are in ``job_schema.py``.
"""

from __future__ import annotations

from typing import Any

from jobber._server.openapi_responses import BAD, FORBIDDEN, JOB_ID, NOT_FOUND, QUOTA, error, ok

__all__ = ["FUNCTION_JOB_CONTENT", "RESULT_PATHS"]

FUNCTION_JOB_CONTENT: dict[str, Any] = {
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/FunctionJob"},
                            "encoding": {"job": {"contentType": "application/json"},
                                         "call": {"contentType": "application/octet-stream"}}},
}
"""The request body of ``POST /v1/jobs`` for a function job (beside the JSON of a command job)."""

_NO_RESULT = error("a command job (it has no result), a job not ended yet, or one that ended without a result "
                   "(the message says how: killed, out of memory, timed out)")

RESULT_PATHS: dict[str, Any] = {
    "/v1/jobs/{job_id}/result": {
        "get": {
            "operationId": "getResult",
            "summary": "An ended function job's outcome (result.json); the pickle itself is at .../result/pickle",
            "parameters": [JOB_ID],
            "responses": {"200": ok("the outcome", "Result"), "400": BAD, "403": FORBIDDEN, "404": NOT_FOUND,
                          "409": _NO_RESULT, "429": QUOTA},
        },
    },
    "/v1/jobs/{job_id}/result/pickle": {
        "get": {
            "operationId": "getResultPickle",
            "summary": "An ended function job's pickled return value (or exception), for its owner's client to load",
            "description": "Streamed from the job's file as the job wrote it: the server never unpickles it.",
            "parameters": [JOB_ID],
            "responses": {
                "200": {"description": "the pickle",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "400": BAD, "403": FORBIDDEN, "404": NOT_FOUND,
                "409": error("as GET .../result, or the outcome holds no pickle (its error says why)"),
                "429": QUOTA,
            },
        },
    },
}
"""The paths of a function job's outcome: its ``Result`` as JSON, and its pickle as the job wrote it."""
