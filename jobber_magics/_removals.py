"""The removal of a job whose live view has shown its end, noticed.

A view's updater ends with its job, so nothing of it would see the job removed later
(``%jobber_rm``, a prune, ``job.remove()``, ``jobber rm`` in a terminal). One daemon thread
for the kernel asks the jobs of such views for their status now and then, and tells a view
whose job is gone (``JobNotFound``); it runs while there is a view to watch.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Protocol

from jobber import JobberError, JobNotFound

__all__ = ["EndedView", "RemovalWatch", "REMOVALS", "check_removals_soon"]


class EndedView(Protocol):
    """What the watch needs of a view (``JobWidget``)."""

    job: Any

    @property
    def closed(self) -> bool:
        """Whether the view was closed (its job is not watched then)."""

    def show_removed(self) -> None:
        """Say that the job was removed."""


class RemovalWatch:
    """Notices the removal of jobs whose views have shown their end (their updaters are
    gone): one daemon thread for the kernel, running while there is a view to watch.

    Each job is asked again after a growing pause (1 s, then half as long again each
    time, at most 30 s): a job removed in the next cell is seen at once, and a notebook of
    a hundred ended views costs little. ``check_soon`` asks every one now (after
    ``%jobber_rm`` and ``%jobber_prune``).
    """

    FIRST_S, GROWTH, MOST_S = 1.0, 1.5, 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # widget -> (when to ask next, the pause after that)
        self._due: weakref.WeakKeyDictionary[EndedView, tuple[float, float]] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None

    def watch(self, widget: EndedView) -> None:
        """Watch ``widget``'s job until it is removed or the widget closes."""
        with self._lock:
            self._due[widget] = (time.monotonic() + self.FIRST_S, self.FIRST_S * self.GROWTH)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jobber-widget-removals", daemon=True)
                self._thread.start()

    def check_soon(self) -> None:
        """Ask every watched view's job now: something was just removed."""
        with self._lock:
            now = time.monotonic()
            for widget, (_at, _pause) in list(self._due.items()):
                self._due[widget] = (now, self.FIRST_S)
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._due:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [widget for widget, (at, _pause) in self._due.items() if at <= now]
                for widget in due:
                    _at, pause = self._due[widget]
                    self._due[widget] = (now + pause, min(pause * self.GROWTH, self.MOST_S))
                wake = min(at for at, _pause in self._due.values()) - now
            for widget in due:
                if widget.closed or self._removed(widget):
                    with self._lock:
                        self._due.pop(widget, None)
            self._wake.wait(max(0.05, min(wake, 1.0)))
            self._wake.clear()

    @staticmethod
    def _removed(widget: EndedView) -> bool:
        try:
            widget.job.status()
        except JobNotFound:
            widget.show_removed()
            return True
        except JobberError:
            return False  # a server out of reach, say: ask again later
        return False


REMOVALS = RemovalWatch()


def check_removals_soon() -> None:
    """Have every ended job's view ask now whether its job was removed."""
    REMOVALS.check_soon()
