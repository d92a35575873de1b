"""The v1 routes of the jobber server: the calling certificate's jobs, as JSON.

Every handler works on ``JobStore(<caller's certificate hash>)`` only, so another
certificate's job id is answered exactly like an id that was never used. Blocking core
calls (start spawns a supervisor, stop waits out its grace period, status reads a few
files) run in worker threads; following a log and waiting for a job's end run on the
event loop (``watch.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

from jobber import __version__
from jobber._backends.context import check_env
from jobber._errors import JobError, JobNotFound, LimitError
from jobber._jobs.job import Job
from jobber._jobs.store import JobStore, jobs_dir
from jobber._limits import Limits
from jobber._server.errors import ApiError, public_message
from jobber._server.openapi import DEFAULT_READ_BYTES, MAX_GRACE_S, MAX_READ_BYTES, MAX_WAIT_S, openapi_document
from jobber._server.state import CONFIG, HUB
from jobber._server.watch import FOLLOW_CHUNK, ServerClosing, follow_log, resolve_offset, wait_for_end

__all__ = ["add_routes"]

log = logging.getLogger("jobber.server")

# A follower whose client has not taken a chunk for this long is dropped: it holds a log
# descriptor and buffers, and other followers must not wait behind it.
_WRITE_TIMEOUT_S = 60.0
_JOB_ID = re.compile(r"^[0-9]{1,18}$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)$")
_NEW_JOB_EXAMPLE = '{"command": "python train.py", "limits": {"cpu": 1, "memory": "2G"}}'
_LIMIT_TYPES: dict[str, tuple[type, ...]] = {
    "cpu": (int, float, str),
    "memory": (int, str),
    "pids": (int,),
    "io_read_bps": (int, str),
    "io_write_bps": (int, str),
    "require_isolation": (bool,),
}


def add_routes(app: web.Application) -> None:
    """Register the v1 routes (HEAD is not offered: a HEAD follow would stream forever)."""
    get = functools.partial(app.router.add_get, allow_head=False)
    get("/v1/openapi.json", get_openapi)
    get("/v1/identity", get_identity)
    get("/v1/jobs", list_jobs)
    app.router.add_post("/v1/jobs", create_job)
    get("/v1/jobs/{job_id}", get_job)
    app.router.add_post("/v1/jobs/{job_id}/start", start_job)
    app.router.add_post("/v1/jobs/{job_id}/stop", stop_job)
    get("/v1/jobs/{job_id}/log", read_log)


async def _blocking(pool: Executor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))


def _store(request: web.Request) -> JobStore:
    return JobStore(request["identity"].hash, jobs_dir())


def _job(request: web.Request) -> Job:
    raw = request.match_info["job_id"]
    if not _JOB_ID.match(raw):
        if raw.isascii() and raw.isdigit():
            job_id = -1  # a whole number too long to be an id: simply not found
        else:
            raise ApiError(400, f"{raw[:40]!r} is not a job id: ids are positive whole numbers (GET /v1/jobs lists yours)")
    else:
        job_id = int(raw)
    try:
        return _store(request).get_job(job_id)
    except JobNotFound:
        # Built here from the id alone, so that another certificate's job and a job that
        # never existed get the very same answer.
        raise ApiError(404, f"no job {raw[:40]} for this certificate (GET /v1/jobs lists yours)", "JobNotFound",
                       job_id if job_id > 0 else None) from None


def _job_json(job: Job, status: Any = None) -> dict[str, Any]:
    status = status if status is not None else job.status()
    return {"id": job.id, "command": job.command, "limits": job.limits.to_dict(), "status": status.to_dict()}


def _query(request: web.Request, parsers: dict[str, Callable[[str, str], Any]]) -> dict[str, Any]:
    unknown = sorted(set(request.query) - set(parsers))
    if unknown:
        takes = ", ".join(parsers) or "no parameters"
        raise ApiError(400, f"unknown query parameter(s) {', '.join(repr(u[:40]) for u in unknown)}; this endpoint takes {takes}")
    values = {}
    for name, parse in parsers.items():
        given = request.query.getall(name, [])
        if len(given) > 1:
            raise ApiError(400, f"query parameter {name!r} is given {len(given)} times: give it once")
        if given:
            values[name] = parse(name, given[0])
    return values


def _whole(low: int, high: int | None = None, hint: str = "") -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,19}", text):
            raise ApiError(400, f"{name}={raw[:40]!r} is not a whole number{hint}")
        value = int(text)
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ApiError(400, f"{name}={value} is out of range: it must be {bound}{hint}")
        return value

    return parse


def _seconds(high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 <= value <= high:
            raise ApiError(400, f"{name}={raw[:40]!r}: give a number of seconds from 0 to {high:g}")
        return value

    return parse


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, f"{name}={raw[:40]!r}: use 1 or 0 (true or false)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def _json_body(request: web.Request, fields: set[str], required: set[str], example: str) -> dict[str, Any]:
    raw = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge, a 413
    if not raw.strip():
        if required:
            raise ApiError(400, f"the request body is empty: send a JSON object such as {example}")
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        detail = str(err)[:120] if isinstance(err, ValueError) else "nested too deeply"
        raise ApiError(400, f"the request body is not valid JSON ({detail}): send an object such as {example}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object such as {example}, not a {type(data).__name__}")
    unknown = sorted(set(data) - fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ApiError(400, f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown)}; known fields: {known}")
    missing = sorted(required - set(data))
    if missing:
        raise ApiError(400, f"missing field(s) {', '.join(missing)}: send an object such as {example}")
    return data


def _limits(value: Any) -> Limits | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, 'limits must be an object such as {"cpu": 1, "memory": "2G", "pids": 100}', "LimitError")
    for name, given in value.items():
        kinds = _LIMIT_TYPES.get(name)
        if kinds is None or given is None:
            continue  # unknown names are reported by Limits.from_dict, with the known ones
        if isinstance(given, bool) and bool not in kinds or not isinstance(given, kinds):
            shown = json.dumps(given)[:40]
            raise ApiError(400, f"limits.{name}: {shown} is not a valid value; see LimitsRequest in GET /v1/openapi.json", "LimitError")
    cpu = value.get("cpu")
    if isinstance(cpu, str) and not (len(cpu) <= 20 and _CPU.match(cpu)):
        raise ApiError(400, f"limits.cpu: {cpu[:40]!r} is not a number of CPUs such as 0.5 or 2", "LimitError")
    try:
        limits = Limits.from_dict({k: v for k, v in value.items() if v is not None})
    except LimitError as err:
        raise ApiError(400, public_message(str(err)), "LimitError") from None
    except (OverflowError, ValueError) as err:  # a size too large for a float, say
        raise ApiError(400, f"limits: a value is out of range ({err})", "LimitError") from None
    return limits


def _start(request: web.Request, job: Job) -> None:
    config = request.app[CONFIG]
    job.start(user=config.job_user, cwd=config.job_cwd)


async def get_openapi(request: web.Request) -> web.Response:
    _query(request, {})
    return web.json_response(openapi_document(__version__))


async def get_identity(request: web.Request) -> web.Response:
    _query(request, {})
    identity = request["identity"]
    return web.json_response({"hash": identity.hash, "subject": identity.subject})


async def list_jobs(request: web.Request) -> web.Response:
    _query(request, {})
    store = _store(request)
    jobs = await _blocking(request.app[CONFIG].starts, lambda: [_job_json(job) for job in store.get_jobs()])
    return web.json_response({"jobs": jobs})


async def create_job(request: web.Request) -> web.Response:
    _query(request, {})
    data = await _json_body(request, {"command", "limits", "env", "start"}, {"command"}, _NEW_JOB_EXAMPLE)
    command = data["command"]
    if not isinstance(command, str) or not command.strip():
        raise ApiError(400, f"command must be a non-empty string: the shell command to run, e.g. {_NEW_JOB_EXAMPLE}", "JobError")
    if "\0" in command:
        raise ApiError(400, "the command contains a NUL byte, which no shell can run", "JobError")
    limits = _limits(data.get("limits"))
    try:
        env = {} if data.get("env") is None else check_env(data["env"])
    except JobError as err:
        raise ApiError(400, str(err), "JobError") from None
    start = data.get("start", True)
    if not isinstance(start, bool):
        raise ApiError(400, f"start must be true or false, not {json.dumps(start)[:40]}")
    config = request.app[CONFIG]
    job = await _blocking(config.starts, lambda: _store(request).new_job(command, limits, env=env))
    if start:
        try:
            await _blocking(config.starts, _start, request, job)
        except JobError as err:
            log.warning("job %d of %s did not start: %s", job.id, request["identity"].label, err)
            raise ApiError(409, f"job {job.id} was created but did not start: {public_message(str(err))}",
                           "JobError", job.id) from None
    return web.json_response(await _blocking(config.starts, _job_json, job), status=201)


async def get_job(request: web.Request) -> web.Response:
    query = _query(request, {"wait": _seconds(MAX_WAIT_S)})
    job = _job(request)
    status = None
    if query.get("wait"):
        status = await wait_for_end(request.app[HUB], job, query["wait"])
    return web.json_response(await _blocking(request.app[CONFIG].starts, _job_json, job, status))


async def start_job(request: web.Request) -> web.Response:
    _query(request, {})
    job = _job(request)
    await _json_body(request, set(), set(), "{}")
    config = request.app[CONFIG]
    try:
        await _blocking(config.starts, _start, request, job)
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    return web.json_response(await _blocking(config.starts, _job_json, job))


async def stop_job(request: web.Request) -> web.Response:
    _query(request, {})
    job = _job(request)
    data = await _json_body(request, {"grace"}, set(), '{"grace": 5}')
    grace = data.get("grace", 5.0)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_S:
        raise ApiError(400, f"grace must be a number of seconds from 0 to {MAX_GRACE_S:g}, not {json.dumps(grace)[:40]}")
    config = request.app[CONFIG]
    try:
        status = await _blocking(config.stops, job.stop, float(grace))
    except JobError as err:
        raise ApiError(409, public_message(str(err)), "JobError", job.id) from None
    return web.json_response(await _blocking(config.starts, _job_json, job, status))


async def read_log(request: web.Request) -> web.StreamResponse:
    hint = "; to start N bytes before the end, pass tail=N"
    query = _query(request, {
        "offset": _whole(0, hint=hint),
        "tail": _whole(0),
        "length": _whole(1, MAX_READ_BYTES),
        "follow": _flag,
    })
    if "offset" in query and "tail" in query:
        raise ApiError(400, "give offset or tail, not both: offset counts from the start, tail from the end")
    job = _job(request)
    if query.get("follow"):
        return await _follow(request, job, query)
    fd = -1
    try:
        fd = os.open(job.log_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        pass  # not started yet: an empty log
    try:
        size = os.fstat(fd).st_size if fd >= 0 else 0
        start = max(0, size - query["tail"]) if "tail" in query else query.get("offset", 0)
        buf = bytearray(min(query.get("length", DEFAULT_READ_BYTES), query.get("tail", MAX_READ_BYTES)))
        n = os.preadv(fd, [buf], start) if fd >= 0 and buf else 0
    finally:
        if fd >= 0:
            os.close(fd)
    return web.Response(body=bytes(buf[:n]), content_type="application/octet-stream",
                        headers={"X-Jobber-Offset": str(start), "Cache-Control": "no-store"})


async def _follow(request: web.Request, job: Job, query: dict[str, Any]) -> web.StreamResponse:
    if "tail" in query:
        start = resolve_offset(job.log_path, -query["tail"]) if query["tail"] else _end_of(job)
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
        async with contextlib.aclosing(follow_log(request.app[HUB], job, start)) as chunks:
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
    except (JobError, OSError) as err:
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


def _end_of(job: Job) -> int:
    try:
        return os.stat(job.log_path).st_size
    except FileNotFoundError:
        return 0


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
