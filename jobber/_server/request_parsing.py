"""What a request to the v1 API holds, checked: its query parameters and its JSON body.

Every refusal is an ``ApiError`` 400 (408 for a body that does not arrive in time) whose
message says what to send instead; nothing is made before the input has passed.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from jobber._server.errors import ApiError
from jobber._server.framing import body_error
from jobber._server.state import CONFIG

__all__ = ["flag", "json_body", "json_object", "query_params", "seconds", "whole"]

# A lone UTF-16 surrogate: JSON's "\ud800" parses into one, and no file, argument or
# environment can hold it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def query_params(request: web.Request, parsers: dict[str, Callable[[str, str], Any]]) -> dict[str, Any]:
    """The request's query parameters, each given at most once and read by its parser.

    Args:
        request: the request.
        parsers: each parameter the endpoint takes, and its parser (``whole``, ``seconds``,
            ``flag``, ...): ``parse(name, raw) -> value``, raising ``ApiError``.

    Returns:
        The value of each parameter given.

    Raises:
        ApiError: 400 for an unknown parameter, one given twice, or a bad value.
    """
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


def whole(low: int, high: int | None = None, hint: str = "") -> Callable[[str, str], int]:
    """A parser of whole numbers from ``low`` to ``high``; ``hint`` ends its refusals."""
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


def seconds(high: float) -> Callable[[str, str], float]:
    """A parser of a number of seconds from 0 to ``high``."""
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 <= value <= high:
            raise ApiError(400, f"{name}={raw[:40]!r}: give a number of seconds from 0 to {high:g}")
        return value

    return parse


def flag(name: str, raw: str) -> bool:
    """A parser of a yes/no parameter: 1, true, yes, on (or 0, false, no, off, empty)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, f"{name}={raw[:40]!r}: use 1 or 0 (true or false)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def json_body(request: web.Request, fields: set[str], required: set[str], example: str, *,
                     must_send: bool = False) -> dict[str, Any]:
    """The request's JSON object, read within the server's body timeout.

    Args:
        request: the request.
        fields: the fields the endpoint knows.
        required: the fields it needs.
        example: a body to show in refusals.
        must_send: an empty body is refused even when no field is required.

    Returns:
        The object ({} for an empty body the endpoint allows).

    Raises:
        ApiError: 400 (not JSON, not an object, unknown or missing fields, a lone
            surrogate), 408 (the body did not arrive in time).
    """
    timeout = request.app[CONFIG].body_timeout
    try:
        raw = await asyncio.wait_for(request.read(), timeout)  # over client_max_size: a 413
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s: send it whole, at once") from None
    except (web.RequestPayloadError, HttpProcessingError) as err:  # bad chunking (framing.py)
        raise ApiError(400, body_error(err)) from None
    return json_object(raw, fields, required, example, must_send=must_send)


def json_object(raw: bytes, fields: set[str], required: set[str], example: str, *,
                must_send: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object of the endpoint's ``fields`` (see `json_body`).

    Raises:
        ApiError: 400, as `json_body`.
    """
    if not raw.strip():
        if required or must_send:
            raise ApiError(400, f"the request body is empty: send a JSON object such as {example}")
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        detail = str(err)[:120] if isinstance(err, ValueError) else "nested too deeply"
        raise ApiError(400, f"the request body is not valid JSON ({detail}): send an object such as {example}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object such as {example}, not a {type(data).__name__}")
    _check_text(data)
    unknown = sorted(set(data) - fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ApiError(400, f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown)}; known fields: {known}")
    missing = sorted(required - set(data))
    if missing:
        raise ApiError(400, f"missing field(s) {', '.join(missing)}: send an object such as {example}")
    return data


def _check_text(data: Any) -> None:
    """Refuse a lone surrogate anywhere in the parsed body (walked without recursion)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and (found := _SURROGATE.search(value)):
            raise ApiError(400, f"the request body holds a lone surrogate (\\u{ord(found.group()):04x}) in a string: "
                                "a \\uD800-\\uDFFF escape must be one half of a pair; send valid Unicode text")
