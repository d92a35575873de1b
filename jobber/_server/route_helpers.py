"""What every v1 handler does first: find the caller's store and job, run blocking calls in
the shared worker threads on the caller's turn, and answer JSON (``routes.py``,
``function_jobs.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from jobber._errors import JobError, JobNotFound
from jobber._jobs.job import Job
from jobber._jobs.store import JobStore, jobs_dir
from jobber._server.errors import ApiError, public_message
from jobber._server.quotas import Tenant
from jobber._server.state import CONFIG

__all__ = ["encoded", "job_of", "json_reply", "store_of", "tenant_of", "work"]

_JOB_ID = re.compile(r"^[0-9]{1,18}$")


async def work(request: web.Request, fn: Callable[..., Any], *args: Any, must_run: bool = False) -> Any:
    """``fn(*args)`` in the shared worker threads, on the caller's turn (``quotas.FairPool``)."""
    return await request.app[CONFIG].work.run(request["identity"].hash, fn, *args, must_run=must_run)


def tenant_of(request: web.Request) -> Tenant:
    """The caller's counts and caps (``quotas.Tenants``)."""
    return request.app[CONFIG].tenants.get(request["identity"].hash)


def json_reply(body: bytes, status: int = 200) -> web.Response:
    """A JSON body encoded in a worker thread (a long listing takes a while to encode)."""
    return web.Response(body=body, status=status, content_type="application/json")


def encoded(value: Any) -> bytes:
    """``value`` as JSON bytes."""
    return json.dumps(value).encode()


def store_of(request: web.Request) -> JobStore:
    """The caller's jobs: ``JobStore(<its certificate's hash>)``, never another's."""
    return JobStore(request["identity"].hash, jobs_dir())


def job_of(request: web.Request, given: int | None = None) -> Job:
    """The caller's job of the path's id (or ``given``); 404 for any other."""
    raw = request.match_info["job_id"] if given is None else str(given)
    if not _JOB_ID.match(raw):
        if raw.isascii() and raw.isdigit():
            job_id = -1  # a whole number too long to be an id: simply not found
        else:
            raise ApiError(400, f"{raw[:40]!r} is not a job id: ids are positive whole numbers (GET /v1/jobs lists yours)")
    else:
        job_id = int(raw)
    try:
        return store_of(request).get_job(job_id)
    except JobNotFound:
        # Built here from the id alone, so that another certificate's job and a job that
        # never existed get the very same answer.
        raise ApiError(404, f"no job {raw[:40]} for this certificate (GET /v1/jobs lists yours)", "JobNotFound",
                       job_id if job_id > 0 else None) from None
    except JobError as err:  # its spec.json damaged, or not jobber's: this job only, as the listing says
        raise ApiError(409, public_message(str(err)), "JobError", job_id) from None


