"""The responses and the job-id parameter that the paths of the OpenAPI document share.

Kept apart from ``openapi.py`` so that the function-job paths (``openapi_functions.py``)
use the same ones: a 403 or a 429 reads alike on every endpoint.
"""

from __future__ import annotations

from typing import Any

from jobber._server.api_limits import MAX_BODY_BYTES

__all__ = ["BAD", "CONFLICT", "FORBIDDEN", "JOB_ID", "NOT_FOUND", "QUOTA", "SLOW_BODY", "TOO_LARGE", "error", "ok"]


def error(description: str) -> dict[str, Any]:
    """An error response: its JSON body is an ``Error``.

    Args:
        description: when the server answers with it.

    Returns:
        The OpenAPI response object.
    """
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def ok(description: str, schema: str) -> dict[str, Any]:
    """A success response whose JSON body is the component schema ``schema``.

    Args:
        description: what the body is.
        schema: the name of a schema under ``#/components/schemas``.

    Returns:
        The OpenAPI response object.
    """
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "the job's id (another certificate's ids look like ids that do not exist)",
    "schema": {"type": "integer", "minimum": 1},
}
BAD = error("malformed request: the message says what is wrong")
FORBIDDEN = error("the client certificate passed TLS but is not a valid identity")
NOT_FOUND = error("this certificate has no such job")
CONFLICT = error("the job is not in a state that allows this (already started, never started)")
TOO_LARGE = error(f"the body is over {MAX_BODY_BYTES} bytes")
SLOW_BODY = error("the body did not arrive in time (jobber serve --header-timeout)")
QUOTA = error("a cap of this certificate is reached: quota names it, limit gives its value "
              "(jobber serve --max-running-jobs, --max-jobs, --max-requests-in-flight)")
