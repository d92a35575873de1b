"""How the server fails: ``ApiError``, and the JSON body every failure is answered with.

The routes raise ``ApiError``; the app's middleware turns it, and every other failure,
into ``{"error": ..., "type": ...}`` (``error_response``). ``public_message`` takes the
server's paths out of a core error before a caller sees it.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

# An absolute path with a directory in it (/srv/jobs/3/log), not 3/log or ~/log.
_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


class ApiError(Exception):
    """An error answered as ``{"error": message, "type": ...}`` with an HTTP status.

    Args:
        status: the HTTP status.
        message: what is wrong and what to do.
        kind: the jobber exception a client should raise (see the OpenAPI ``Error``).
        job_id: the job concerned, if any.
    """

    def __init__(self, status: int, message: str, kind: str = "JobberError", job_id: int | None = None, *,
                 extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.job_id = job_id
        self.extra = extra or {}  # more fields of the body: a 429's "quota" and "limit"
        self.headers = headers


def public_message(message: str) -> str:
    """The message without the server's file paths (job dirs, cgroups, the pool)."""
    return _PATH.sub("<path>", message)


def error_response(status: int, message: str, kind: str = "JobberError", job_id: int | None = None,
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> web.Response:
    """The JSON error body every failure gets."""
    body: dict[str, Any] = {"error": message, "type": kind}
    if job_id is not None:
        body["job_id"] = job_id
    body.update(extra or {})
    return web.json_response(body, status=status, headers=headers)
