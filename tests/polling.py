"""Polls with a deadline, for what sends no event a test could wait on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float = 10.0, every: float = 0.02) -> T:
    """Call ``predicate`` every ``every`` seconds until it returns something true, or
    ``timeout`` seconds have passed; return its last answer.

    For ``assert poll(...), message``: `wait_for` raises instead.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() <= deadline:
        time.sleep(every)
    return value


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", every: float = 0.02) -> T:
    """What ``predicate`` returns once it is true (asked every ``every`` seconds).

    Raises:
        AssertionError: ``timeout`` seconds passed first ("timed out waiting for WHAT").
    """
    value = poll(predicate, timeout, every)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value
