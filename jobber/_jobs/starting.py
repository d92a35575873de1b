"""How long a start waits for its launch.

``job.start()`` returns once its job runs, or waits in line (a queue, ``after``, GPUs). An
executor starting many jobs of a queue asks for less (:func:`in_background`): a job its
own start lets through is launched, and its launcher's answer read in the background, so
that ``ex.map`` over a thousand items is never held up by each launch in turn. A launch
that fails there ends its job "failed", with the reason, as an admitted job's always did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["backgrounded", "in_background"]

_background: ContextVar[bool] = ContextVar("jobber_start_in_background", default=False)


@contextmanager
def in_background() -> Iterator[None]:
    """Within: a start leaves its queued job's launch to finish in the background."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def backgrounded() -> bool:
    """Whether the start under way may leave its launch to the background."""
    return _background.get()
