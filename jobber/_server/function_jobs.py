"""Function jobs over the v1 API: the call uploaded with the new job, the result read by its owner.

    POST /v1/jobs   multipart/form-data, two parts in this order:
                    "job"   application/json: the NewJob fields (python, result_max, ...) and
                            "client_python", the client's "MAJOR.MINOR"
                    "call"  application/octet-stream: the pickled call (at most MAX_CALL_BYTES)
    GET  /v1/jobs/ID/result          the result's description (result.json, JSON)
    GET  /v1/jobs/ID/result/pickle   the pickled return value or exception (streamed)

The server never unpickles anything: the call's bytes go to the job's directory as they
came, and only the tenant's own job, as its uid and inside its sandbox, loads them
(``function_files.py`` hands them over); the result's bytes are sent to the job's owner
as the job left them, for the owner's client to load. ``result.json`` is JSON, read as
such. Another certificate's job is answered 404, exactly as a job that never existed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from jobber._errors import JobError
from jobber._jobs.job import Job, spec_of
from jobber._jobs.jobdir import JobDir
from jobber._jobs.pycall import RESULT, RESULT_META, result_max_of
from jobber._jobs.results import read_result
from jobber._jobs.spec import PYTHON, RESULT_MAX
from jobber._jobs.status import JobStatus
from jobber._server.api_limits import MAX_BODY_BYTES, MAX_CALL_BYTES
from jobber._server.errors import ApiError, public_message
from jobber._server.framing import body_error
from jobber._server.function_files import import_result, remove_function_dir
from jobber._server.interpreters import Interpreters, check_client_python
from jobber._server.request_parsing import json_object, query_params
from jobber._server.route_helpers import job_of, json_reply, work
from jobber._server.state import CONFIG
from jobber._server.tenancy import Tenancy

__all__ = ["CLIENT_PYTHON", "FUNCTION_JOB_EXAMPLE", "forget_function_dirs", "function_options", "get_result",
           "get_result_pickle", "read_function_job", "result_meta", "result_pickle"]

CLIENT_PYTHON = "client_python"
FUNCTION_JOB_EXAMPLE = ('multipart/form-data: a part "job" (JSON such as {"python": "python3", '
                        '"client_python": "3.11", "limits": {"memory": "2G"}}), then a part "call" (the pickled call)')
_CHUNK = 1 << 20
_MEBI = 1 << 20


async def read_function_job(request: web.Request, fields: set[str]) -> tuple[dict[str, Any], bytes]:
    """A function job's request: its JSON fields (``fields`` and ``client_python``) and its call.

    Raises:
        ApiError: 400 (not the two parts, in order; bad JSON), 408 (a part stopped
            arriving), 413 (the call is over ``MAX_CALL_BYTES``).
    """
    try:
        reader = await request.multipart()
        job_part = await _next_part(request, reader, "job")
        data = json_object(await _read_part(request, job_part, MAX_BODY_BYTES, "the job part"),
                           fields | {CLIENT_PYTHON}, {CLIENT_PYTHON}, FUNCTION_JOB_EXAMPLE, must_send=True)
        call = await _read_part(request, await _next_part(request, reader, "call"), MAX_CALL_BYTES, "the call")
        if await _within(request, reader.next()) is not None:
            raise ApiError(400, f"a function job's request has two parts, job then call, and no more: send {FUNCTION_JOB_EXAMPLE}")
    except (web.RequestPayloadError, HttpProcessingError) as err:  # bad chunking (framing.py)
        raise ApiError(400, body_error(err)) from None
    except (ValueError, AssertionError, RuntimeError) as err:  # aiohttp's multipart parser
        raise ApiError(400, f"the request body is not a readable multipart/form-data body ({str(err)[:120]}): send "
                            f"{FUNCTION_JOB_EXAMPLE}") from None
    if not call:
        raise ApiError(400, "the call part is empty: send the pickled call (jobber packs it for you: "
                            "session.new_function_job, session.executor())", "JobError")
    return data, call


async def _within(request: web.Request, awaitable: Any) -> Any:
    timeout = request.app[CONFIG].body_timeout
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body stopped arriving for {timeout:g} s: send it whole, at once") from None


async def _next_part(request: web.Request, reader: Any, name: str) -> BodyPartReader:
    part = await _within(request, reader.next())
    if not isinstance(part, BodyPartReader) or part.name != name:
        given = "nothing" if part is None else f"a part named {getattr(part, 'name', None)!r}"
        raise ApiError(400, f"expected the part {name!r} of a function job, got {given}: send {FUNCTION_JOB_EXAMPLE}")
    return part


async def _read_part(request: web.Request, part: BodyPartReader, cap: int, what: str) -> bytes:
    chunks, size = [], 0
    while chunk := await _within(request, part.read_chunk(_CHUNK)):
        size += len(chunk)
        if size > cap:
            if cap == MAX_CALL_BYTES:
                raise ApiError(413, f"the call is over {cap // _MEBI} MiB, the most a function job's pickled function "
                                    "and arguments may be on this server: pass large data as a file the function reads "
                                    "on the server (or a URL it downloads), not as an argument", "JobError")
            raise ApiError(413, f"{what} is over {cap} bytes: a job's fields fit in far less", "JobError")
        chunks.append(chunk)
    return b"".join(chunks)


def function_options(data: dict[str, Any], call: bytes | None, interpreters: Interpreters,
                     tenancy: Tenancy) -> dict[str, Any]:
    """``python`` (the interpreter's path, checked against the client's version),
    ``result_max`` and ``python_version`` (the client's) of a new function job; {} for a
    command job (which may name neither).
    Blocking: the first check of an interpreter runs it.

    Raises:
        ApiError: 400 saying what to send instead.
    """
    if call is None:
        given = sorted(name for name in (PYTHON, RESULT_MAX) if data.get(name) is not None)
        if given:
            raise ApiError(400, f"{' and '.join(given)} belong to a function job, whose call comes with it: send "
                                f"{FUNCTION_JOB_EXAMPLE} (jobber.connect(...).executor() does)", "JobError")
        return {}
    refused = tenancy.function_jobs_refused()
    if refused is not None:
        raise ApiError(400, refused, "JobError")
    if "command" in data or "rerun_of" in data:
        raise ApiError(400, "a function job runs its call: send no command (nor rerun_of) with it", "JobError")
    client = check_client_python(data.get(CLIENT_PYTHON))
    try:
        result_max = result_max_of(data.get(RESULT_MAX))
    except JobError as err:
        raise ApiError(400, str(err), type(err).__name__) from None
    return {PYTHON: interpreters.check(data.get(PYTHON), client), RESULT_MAX: result_max, "python_version": client}


def _function_job(job: Job) -> None:
    """Refuse a command job's result, with the core's sentence."""
    if not spec_of(job).is_function:
        raise ApiError(409, f"job {job.id} is a command job: it has no result (GET /v1/jobs/{job.id}/log has its "
                            "output)", "JobError", job.id)


def _ended(job: Job) -> JobStatus:
    status = job.status()
    if not status.ended:
        raise ApiError(409, f"job {job.id} has not ended yet (it is {status.state}): its result comes once it has "
                            f"(GET /v1/jobs/{job.id}?wait=60 waits for its end)", "JobError", job.id)
    return status


def _imported(job: Job, tenancy: Tenancy, owner: str) -> Path:
    """The job's directory, holding the result the job left (imported from its function
    directory on a server whose jobs run as a tenant's uid).

    Raises:
        ApiError: 409 saying why the job has no result.
    """
    _function_job(job)
    status = _ended(job)
    assert job.path is not None  # a server's jobs are of this host
    where = tenancy.function_dir(owner, job.id)
    try:
        if where is not None:
            import_result(job.path, where[0], where[1], result_max_of(spec_of(job).result_max))
        if not (job.path / RESULT_META).exists():
            # The core's sentence for a job that left no result: killed, out of memory, timed out, ...
            read_result(JobDir(job.path.parent, owner, job.id), job.id, spec_of(job), status)
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    except OSError as err:  # the job directory's disk (full, read-only): the server's, said as it is
        raise ApiError(409, f"job {job.id}'s result could not be copied on the server ({err.strerror}): ask again "
                            "later, or ask the server's operator", "JobError", job.id) from None
    return job.path


def result_meta(job: Job, tenancy: Tenancy, owner: str) -> bytes:
    """``GET /v1/jobs/ID/result``: ``result.json`` of the ended function job, and its id.

    Raises:
        ApiError: 409 for a command job, a job still running, or one that left no result.
    """
    path = _imported(job, tenancy, owner)
    meta = json.loads((path / RESULT_META).read_bytes())
    has_pickle = (path / RESULT).exists()
    return json.dumps({**meta, "size": (path / RESULT).stat().st_size if has_pickle else 0, "id": job.id}).encode()


async def get_result(request: web.Request) -> web.Response:
    """A function job's result's description (``function_jobs.py``), to its owner only."""
    query_params(request, {})
    job = job_of(request)
    return json_reply(await work(request, result_meta, job, request.app[CONFIG].tenancy, request["identity"].hash))


async def get_result_pickle(request: web.Request) -> web.StreamResponse:
    """A function job's pickled result, streamed from its file (never held in memory, never unpickled)."""
    query_params(request, {})
    job = job_of(request)
    path = await work(request, result_pickle, job, request.app[CONFIG].tenancy, request["identity"].hash)
    return web.FileResponse(path, chunk_size=1 << 20, headers={
        "Content-Type": "application/octet-stream", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def forget_function_dirs(tenancy: Tenancy, owner: str, job_ids: list[int]) -> None:
    """Remove the function directories of removed jobs (what their runners left)."""
    for job_id in job_ids:
        where = tenancy.function_dir(owner, job_id)
        if where is not None:
            remove_function_dir(where[0])


def result_pickle(job: Job, tenancy: Tenancy, owner: str) -> Path:
    """``GET /v1/jobs/ID/result/pickle``: the path of the pickle to stream.

    Raises:
        ApiError: as `result_meta`; 409 when the result holds no pickle (its description says why).
    """
    path = _imported(job, tenancy, owner) / RESULT
    if not path.exists():
        raise ApiError(409, f"job {job.id}'s result holds no pickle: GET /v1/jobs/{job.id}/result says why",
                       "JobError", job.id)
    return path
