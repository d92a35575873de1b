"""The v1 routes of the jobber server: the calling certificate's jobs, as JSON.

Every handler works on ``JobStore(<caller's certificate hash>)`` only, so another
certificate's job id is answered exactly like an id that was never used. Blocking core
calls (start spawns a supervisor, status reads a few files, a listing many, log reads)
run in the worker threads every tenant shares in turn (``quotas.FairPool``); following a
log, waiting for a job's end and a stop's grace period run on the event loop
(``watch.py``, ``stops.py``), holding no thread. Each certificate's caps
(``quotas.Tenants``) and every input (``request_parsing.py``) are checked before anything
is made. Jobs are reached through ``Job`` (and ``jobber._jobs.job``'s functions) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

from aiohttp import web

from jobber import __version__
from jobber._errors import JobError, JobNotFound
from jobber._jobs.function_jobs import new_function_job
from jobber._jobs.job import Job, log_length, signal
from jobber._jobs.job import read_log as read_job_log
from jobber._jobs.spec import LABEL, PYTHON, RESULT_MAX
from jobber._jobs.store import JobStore
from jobber._server import stops
from jobber._server.errors import ApiError, public_message
from jobber._server.function_jobs import (
    forget_function_dirs,
    function_options,
    get_result,
    get_result_pickle,
    read_function_job,
)
from jobber._server.lifecycle_fields import (
    NEW_JOB_EXAMPLE,
    NEW_JOB_FIELDS,
    PRUNE_EXAMPLE,
    PRUNE_FIELDS,
    QUEUE_EXAMPLE,
    QUEUE_FIELDS,
    attempts_json,
    check_rerun_of,
    job_fields,
    labelled,
    lifecycle_json,
    prune,
    prune_arguments,
    queue_arguments,
    queue_name,
    strict_flag,
)
from jobber._server.openapi import (
    DEFAULT_LIST_JOBS,
    DEFAULT_READ_BYTES,
    MAX_GRACE_S,
    MAX_JOB_ID,
    MAX_LIST_JOBS,
    MAX_OFFSET,
    MAX_READ_BYTES,
    MAX_WAIT_S,
    openapi_document,
)
from jobber._server.quotas import Tenant
from jobber._server.request_parsing import flag, json_body, query_params, seconds, whole
from jobber._server.route_helpers import encoded, job_of, json_reply, store_of, tenant_of, work
from jobber._server.state import CONFIG, HUB
from jobber._server.watch import FOLLOW_CHUNK, ServerClosing, follow_log, wait_for_end

__all__ = ["add_routes"]

log = logging.getLogger("jobber.server")

# A follower whose client has not taken a chunk for this long is dropped: it holds a log
# descriptor and buffers, and other followers must not wait behind it.
_WRITE_TIMEOUT_S = 60.0


def add_routes(app: web.Application) -> None:
    """Register the v1 routes (HEAD is not offered: a HEAD follow would stream forever)."""
    get = functools.partial(app.router.add_get, allow_head=False)
    get("/v1/openapi.json", get_openapi)
    get("/v1/identity", get_identity)
    get("/v1/jobs", list_jobs)
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_post("/v1/jobs:prune", prune_jobs)  # not /v1/jobs/prune, which would read as job "prune"
    get("/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/v1/jobs/{job_id}", delete_job)
    app.router.add_post("/v1/jobs/{job_id}/start", start_job)
    app.router.add_post("/v1/jobs/{job_id}/stop", stop_job)
    get("/v1/jobs/{job_id}/log", read_log)
    get("/v1/jobs/{job_id}/result", get_result)
    get("/v1/jobs/{job_id}/result/pickle", get_result_pickle)
    get("/v1/queues", list_queues)
    app.router.add_put("/v1/queues/{name}", set_queue)


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return not future.cancelled() and future.exception() is None


def _job_bytes(job: Job, status: Any = None, attempts: bool = False) -> bytes:
    return encoded(_job_json(job, status, attempts))


def _job_json(job: Job, status: Any = None, attempts: bool = False) -> dict[str, Any]:
    status = status if status is not None else job.status()
    data = {"id": job.id, "command": job.command, "limits": job.limits.to_dict(), **lifecycle_json(job),
            "status": status.to_dict()}
    if attempts:
        data["attempts"] = attempts_json(job)
    return data


def _start(request: web.Request, job: Job) -> None:
    # As the tenant's own uid, with nothing of the server's environment (tenancy.py).
    request.app[CONFIG].tenancy.start(job, request["identity"].hash)


async def get_openapi(request: web.Request) -> web.Response:
    query_params(request, {})
    return web.json_response(openapi_document(__version__))


async def get_identity(request: web.Request) -> web.Response:
    query_params(request, {})
    identity = request["identity"]
    return web.json_response({"hash": identity.hash, "subject": identity.subject})


async def list_jobs(request: web.Request) -> web.Response:
    query = query_params(request, {"limit": whole(1, MAX_LIST_JOBS), "after": whole(0, MAX_JOB_ID),
                             LABEL: lambda _name, raw: raw})
    page = await work(request, _list_page, store_of(request), query.get("after", 0), query.get("limit", DEFAULT_LIST_JOBS),
                       query.get(LABEL))
    return json_reply(page)


def _list_page(store: JobStore, after: int, limit: int, label: str | None = None) -> bytes:
    """Up to ``limit`` jobs with ids above ``after`` (with ``label``, if given), and the
    ``after`` of the next page when there is one (``next_after``, absent from the last page).

    A job whose files cannot be read is left out of ``jobs`` (as the Jobs panel leaves it
    out; ``GET /v1/jobs/{id}`` answers 409 for it) and named in ``skipped`` with why, so
    that one damaged job never fails the whole listing.
    """
    jobs = [job for job in store.get_jobs() if job.id > after]
    if label is not None:
        jobs = [job for job in jobs if labelled(job, label)]
    listed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    last = after
    for job in jobs:
        if len(listed) == limit:
            break
        last = job.id
        try:
            listed.append(_job_json(job))
        except JobNotFound:
            continue  # removed since the directory was listed: not part of the answer
        except JobError as err:
            if job.path is None or not job.path.is_dir():
                continue  # removed meanwhile, as above
            log.info("job %s of %s left out of a listing: %s", job.id, store.owner[:12], err)
            skipped.append({"id": job.id, "error": public_message(str(err))})
    more = len(listed) == limit and jobs[-1].id > last
    page: dict[str, Any] = {"jobs": listed, "next_after": last} if more else {"jobs": listed}
    if skipped:
        page["skipped"] = skipped
    return encoded(page)


async def create_job(request: web.Request) -> web.Response:
    query_params(request, {})
    call = None
    if request.content_type == "multipart/form-data":  # a function job: its fields, then its call
        data, call = await read_function_job(request, NEW_JOB_FIELDS | {PYTHON, RESULT_MAX})
    else:
        data = await json_body(request, NEW_JOB_FIELDS, set(), NEW_JOB_EXAMPLE, must_send=True)
        if "rerun_of" not in data and "command" not in data:
            raise ApiError(400, f"missing field(s) command: send an object such as {NEW_JOB_EXAMPLE}")
    config = request.app[CONFIG]
    function = await work(request, function_options, data, call, config.interpreters, config.tenancy)
    original = None if "rerun_of" not in data else job_of(request, check_rerun_of(data["rerun_of"]))
    fields = job_fields({name: value for name, value in data.items() if name not in (PYTHON, RESULT_MAX)})
    start = data.get("start", True)
    if not isinstance(start, bool):
        raise ApiError(400, f"start must be true or false, not {json.dumps(start)[:40]}")
    tenants, tenant, store = config.tenants, tenant_of(request), store_of(request)
    await tenants.reserve_job(tenant, store)  # 429 over a cap: nothing is made
    try:
        if start:
            await tenants.reserve_start(tenant, store)
    except BaseException:
        tenants.job_created(tenant, False)
        raise
    # Made even if the client hangs up meanwhile, and counted by the callback either way.
    if call is not None:
        make = lambda: new_function_job(store, call, **fields, **function)  # noqa: E731
    elif original is None:
        make = lambda: store.new_job(**fields)  # noqa: E731
    else:
        make = lambda: store.rerun(original, **fields)  # noqa: E731
    creation = config.work.submit(tenant.owner, make, must_run=True)
    creation.add_done_callback(lambda done: tenants.job_created(tenant, _succeeded(done)))
    try:
        job = await asyncio.shield(creation)
    except BaseException as err:
        if start:
            tenants.job_started(tenant, -1, False)
        if isinstance(err, JobNotFound) and original is not None:
            raise ApiError(404, f"no job {original.id} for this certificate (removed meanwhile?)", "JobNotFound",
                           original.id) from None
        if isinstance(err, JobError) and original is not None:  # nothing was made: rerun checks first
            raise ApiError(400, public_message(str(err)), type(err).__name__, original.id) from None
        if isinstance(err, JobError):
            # Refused before anything was made: a bad option, an after job this certificate
            # does not have (another's reads the same), more GPUs than the host has.
            raise ApiError(400, public_message(str(err)), type(err).__name__) from None
        raise
    if start:
        try:
            await _start_counted(request, tenant, job)
        except JobError as err:
            log.warning("job %d of %s did not start: %s", job.id, request["identity"].label, public_message(str(err)))
            raise ApiError(409, f"job {job.id} was created but did not start: {public_message(str(err))}",
                           "JobError", job.id) from None
    return json_reply(await work(request, _job_bytes, job), status=201)


async def _start_counted(request: web.Request, tenant: Tenant, job: Job) -> None:
    """Start a job whose start ``reserve_start`` counted: it runs, and is counted as
    running or not, even when the client hangs up meanwhile."""
    config = request.app[CONFIG]
    future = config.work.submit(tenant.owner, _start, request, job, must_run=True)
    future.add_done_callback(lambda done: config.tenants.job_started(tenant, job.id, _succeeded(done)))
    await asyncio.shield(future)


async def get_job(request: web.Request) -> web.Response:
    query = query_params(request, {"wait": seconds(MAX_WAIT_S), "attempts": strict_flag})
    job = job_of(request)
    status = None
    if query.get("wait"):
        status = await wait_for_end(request.app[HUB], job, query["wait"])
    try:
        return json_reply(await work(request, _job_bytes, job, status, query.get("attempts", False)))
    except JobError as err:  # its status.json damaged, or not jobber's: this job only, as the listing says
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None


async def start_job(request: web.Request) -> web.Response:
    query_params(request, {})
    job = job_of(request)
    await json_body(request, set(), set(), "{}")
    tenant = tenant_of(request)
    await request.app[CONFIG].tenants.reserve_start(tenant, store_of(request))
    try:
        await _start_counted(request, tenant, job)
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    return json_reply(await work(request, _job_bytes, job))


async def delete_job(request: web.Request) -> web.Response:
    query_params(request, {})
    job = job_of(request)
    await json_body(request, set(), set(), "{}")
    try:
        await work(request, job.remove)
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    await work(request, forget_function_dirs, request.app[CONFIG].tenancy, request["identity"].hash, [job.id])
    request.app[CONFIG].tenants.job_removed(tenant_of(request), job.id)
    return web.json_response({"id": job.id, "removed": True})


async def prune_jobs(request: web.Request) -> web.Response:
    """``cert.prune`` of the caller's jobs: ended ones only, never another certificate's."""
    query_params(request, {})
    arguments = prune_arguments(await json_body(request, PRUNE_FIELDS, set(), PRUNE_EXAMPLE))
    try:
        pruned = await work(request, prune, store_of(request), arguments)
    except JobError as err:
        raise ApiError(409, f"cannot prune now: {public_message(str(err))}", "JobError") from None
    if not pruned["dry_run"]:
        request.app[CONFIG].tenants.jobs_removed(tenant_of(request), pruned["removed"])
        await work(request, forget_function_dirs, request.app[CONFIG].tenancy, request["identity"].hash,
                    pruned["removed"])
    return web.json_response(pruned)


async def stop_job(request: web.Request) -> web.Response:
    query_params(request, {})
    job = job_of(request)
    data = await json_body(request, {"grace"}, set(), '{"grace": 5}')
    grace = data.get("grace", 5.0)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_S:
        raise ApiError(400, f"grace must be a number of seconds from 0 to {MAX_GRACE_S:g}, not {json.dumps(grace)[:40]}")
    # A task of its own: the stop runs to its end (SIGKILL after the grace) even if the
    # client hangs up meanwhile.
    send = functools.partial(work, request, signal, job, must_run=True)  # send(kill): one signal, in a thread
    stopping = asyncio.ensure_future(stops.stop(request.app[HUB], send, job, float(grace)))
    try:
        status = await asyncio.shield(stopping)
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    return json_reply(await work(request, _job_bytes, job, status))


async def list_queues(request: web.Request) -> web.Response:
    """``cert.queues()`` of the caller: its own queues, never another certificate's."""
    query_params(request, {})
    return json_reply(await work(request, _queues_bytes, store_of(request)))


def _queues_bytes(store: JobStore) -> bytes:
    return encoded({"queues": store.queues()})


async def set_queue(request: web.Request) -> web.Response:
    """``cert.set_queue(NAME, ...)`` of the caller; an admission pass runs at once, so
    its waiting jobs that now fit start (as their tenant's uid, as every start)."""
    query_params(request, {})
    name = queue_name(request.match_info["name"])
    arguments = queue_arguments(await json_body(request, QUEUE_FIELDS, set(), QUEUE_EXAMPLE))
    store = store_of(request)
    try:
        queue = await work(request, _set_queue, store, name, arguments, must_run=True)
    except JobError as err:
        raise ApiError(400, public_message(str(err)), type(err).__name__) from None
    return json_reply(queue)


def _set_queue(store: JobStore, name: str, arguments: dict[str, Any]) -> bytes:
    store.set_queue(name, **arguments)
    blank = {"parallel": None, "memory": None, "cpus": None, "gpus": None, "running": 0, "waiting": 0}
    return encoded(store.queues().get(name, blank))


async def read_log(request: web.Request) -> web.StreamResponse:
    hint = "; to start N bytes before the end, pass tail=N"
    query = query_params(request, {
        "offset": whole(0, MAX_OFFSET, hint=hint),
        "tail": whole(0, MAX_OFFSET),
        "length": whole(1, MAX_READ_BYTES),
        "follow": flag,
    })
    if "offset" in query and "tail" in query:
        raise ApiError(400, "give offset or tail, not both: offset counts from the start, tail from the end")
    job = job_of(request)
    if query.get("follow"):
        return await _follow(request, job, query)
    start, data = await work(request, _read, job, query)
    return web.Response(body=data, content_type="application/octet-stream",
                        headers={"X-Jobber-Offset": str(start), "Cache-Control": "no-store"})


def _read(job: Job, query: dict[str, Any]) -> tuple[int, bytes]:
    """(the logical offset of the first byte, the bytes) of a log read (``logcut``: a
    capped log reads as its head, a marker line, its newest bytes)."""
    buf = bytearray(min(query.get("length", DEFAULT_READ_BYTES), query.get("tail", MAX_READ_BYTES)))
    if not buf:  # tail=0: nothing, from the end
        return log_length(job), b""
    start, n = read_job_log(job, buf, -query["tail"] if "tail" in query else query.get("offset", 0))
    return start, bytes(buf[:n])


async def _follow(request: web.Request, job: Job, query: dict[str, Any]) -> web.StreamResponse:
    if "tail" in query:
        start = max(0, log_length(job) - query["tail"])
    else:
        start = query.get("offset", 0)
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream",
        "X-Jobber-Offset": str(start),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        left = query.get("length")
        loop = asyncio.get_running_loop()
        first = "tail" not in query  # follow(0) reads a retried job from its first attempt, as Job.follow does
        async with contextlib.aclosing(follow_log(request.app[HUB], job, start, from_first_attempt=first)) as chunks:
            async for chunk in chunks:
                if left is not None:
                    chunk, left = chunk[:left], left - min(left, len(chunk))
                # A client that takes nothing for a minute is cut off (its write then
                # fails): a timer, not wait_for, which would cost a task per chunk.
                timer = loop.call_later(_WRITE_TIMEOUT_S, _drop_stuck_follower, request, job)
                try:
                    await response.write(chunk)
                finally:
                    timer.cancel()
                if len(chunk) == FOLLOW_CHUNK:
                    await asyncio.sleep(0)  # a log that keeps coming must not keep the others waiting
                if left == 0:
                    break
    except ServerClosing:
        _abort(request)  # unfinished on purpose: the client resumes from its offset
        return response
    except (JobError, JobNotFound, OSError) as err:  # JobNotFound: removed while followed
        if isinstance(err, ConnectionError):
            raise
        # The headers are out: the only way left to say "failed" is an unfinished stream.
        log.error("follow of job %d failed: %s", job.id, err)
        _abort(request)
        return response
    await response.write_eof()
    return response


def _drop_stuck_follower(request: web.Request, job: Job) -> None:
    log.warning("dropped a follower of job %d (%s): it took nothing for %.0f s",
                job.id, request["identity"].label, _WRITE_TIMEOUT_S)
    _abort(request)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
