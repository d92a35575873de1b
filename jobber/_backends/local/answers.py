"""Launchers' answers that no caller waits for, and launches that Ctrl-C must not cut short.

An admission pass starts every job it let through, then reads their launchers' answers
(``admission.run_pass``). An executor starting a queue's jobs does not wait for them: they
are read here, in a thread of the process (:func:`answer_later`), which ends once it has
had nothing to read for a few seconds; a failure an answer tells of ends its job "failed".
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["answer_later", "uninterrupted"]

_IDLE_S = 5.0


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C (a notebook's interrupt) is raised after the block, not in it: a job a pass let
    through and did not launch would wait, "starting", for as long as this process lives.
    Only in the main thread with Python's own handler (elsewhere nothing can be deferred)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    interrupted: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        raise KeyboardInterrupt


_later_lock = threading.Lock()
_later: queue.SimpleQueue | None = None


def answer_later(answer: Callable[[], None]) -> None:
    """Read a launcher's answer (``answer``) in a thread of this process, which ends once
    it has had nothing to read for a few seconds; a failure it tells of ends that job "failed"."""
    global _later
    with _later_lock:
        if _later is None:
            _later = queue.SimpleQueue()
            threading.Thread(target=_read_answers, args=(_later,), name="jobber-launch-answers", daemon=True).start()
        _later.put(answer)


def _read_answers(answers: queue.SimpleQueue) -> None:
    global _later
    while True:
        try:
            answer = answers.get(timeout=_IDLE_S)
        except queue.Empty:
            with _later_lock:
                if answers.empty():
                    _later = None
                    return
            continue
        try:
            answer()
        except Exception:  # noqa: BLE001, S110 - start_admitted's answer handles its own failures; a thread must not print
            pass


def _forked() -> None:
    global _later, _later_lock
    _later, _later_lock = None, threading.Lock()  # the parent's thread does not run here


os.register_at_fork(after_in_child=_forked)
