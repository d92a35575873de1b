"""The lifecycle options of a new job, checked once for every backend.

    label     a short name for listings, re-runs and filters ("train")
    timeout   seconds, or "90s" "30m" "2h" "1d": the job is stopped, "timed-out"
    log_max   a size ("200M"): past it the log keeps its head and its newest bytes
    retries   start a failed attempt again, up to N times (retry_on: which endings;
              not given: "failed", and "oom-killed" too with oom_growth)
    oom_growth  retry OOM kills, the next attempt getting memory x this (up to a cap:
                (1.5, "16G"); without one, up to the host's memory); it needs retries,
                and a retry_on given with it must name "oom-killed"
    notify    True: announce the job's end (the JupyterLab Jobs panel notifies of it)

They are recorded in the job's spec; the backend that runs the job enforces them.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from jobber._errors import JobError
from jobber._jobs.spec import LABEL, LIFECYCLE_DEFAULTS, LOG_MAX, NOTIFY, OOM_GROWTH, OOM_GROWTH_MAX, RETRIES, RETRY_ON, TIMEOUT
from jobber._limits import parse_size
from jobber._states import RETRYABLE
from jobber._text import format_duration

__all__ = ["DEFAULT_LOG_MAX", "RETRYABLE", "check_lifecycle", "check_lifecycle_option", "grows_on_retry",
           "default_log_max", "parse_duration", "format_duration"]

DEFAULT_LOG_MAX = 1 << 30
"""The log cap when none is given: 1 GiB (``JOBBER_LOG_MAX`` changes it; "0" for none)."""
OOM_KILLED = RETRYABLE[1]
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}$")
_ID_LIKE = re.compile(r"[0-9]+(-[0-9]+)?")  # what reads as an id or an id range (jobber rm 12-40)
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_MAX_RETRIES = 100


def default_log_max() -> int:
    """The log cap for a job that set none: ``$JOBBER_LOG_MAX`` ("500M", "0" for none), else 1 GiB.

    Raises:
        JobError: ``$JOBBER_LOG_MAX`` is not a size.
    """
    raw = os.environ.get("JOBBER_LOG_MAX", "").strip()
    if not raw:
        return DEFAULT_LOG_MAX
    if raw == "0":
        return 0
    size = parse_size(raw, "JOBBER_LOG_MAX")
    return max(size, 4096)


# 100 years: well inside what the supervisor's 64-bit count of nanoseconds holds (292 years).
TIMEOUT_MAX_S = 100 * 365 * 86400


def parse_duration(value: float | int | str, what: str = TIMEOUT) -> float:
    """Seconds from a number or a duration string ("90s", "30m", "2h", "1d").

    Raises:
        JobError: not a positive duration.
    """
    if isinstance(value, bool):
        raise JobError(f"{what}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[(match.group(2) or "").lower()]
    else:
        raise JobError(f"{what}: {value!r} is not a duration: write seconds, or e.g. 90s, 30m, 2h, 1d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise JobError(f"{what}: {value!r} is not a positive duration")
    return seconds


def check_label(label: Any) -> str:
    """A label: 1-64 letters, digits, ``_.:+-``, not all digits (ids are).

    Raises:
        JobError: anything else.
    """
    if not isinstance(label, str) or not _LABEL.fullmatch(label) or _ID_LIKE.fullmatch(label):
        raise JobError(f"label {label!r} is not a label: use 1-64 letters, digits and _.:+- (not only digits, "
                       "nor a range such as 12-40, which would read as job ids), e.g. train or lr-0.01")
    return label


def check_lifecycle(*, label: Any = None, timeout: Any = None, log_max: Any = None,
                    retries: Any = LIFECYCLE_DEFAULTS[RETRIES], retry_on: Any = None,
                    oom_growth: Any = None, notify: Any = None, backend: str | None = None) -> dict[str, Any]:
    """The ``JobSpec`` fields for a new job's lifecycle options (only those that were given).

    ``retry_on`` None means not given: ``("failed",)``, and with ``oom_growth``
    ``("failed", "oom-killed")``, since growing memory is for retrying OOM kills. For a
    ``backend`` "slurm" job, ``oom_growth`` is left to ``check_lifecycle_for``, which refuses
    it with Slurm's reason.

    Raises:
        JobError: a malformed option, saying which and what it expects; ``oom_growth``
            without ``retries``, or with a ``retry_on`` that does not name "oom-killed".
    """
    fields = _checked(label=label, timeout=timeout, log_max=log_max, retries=retries, retry_on=retry_on,
                      oom_growth=oom_growth, notify=notify)
    if oom_growth is None or backend == "slurm":
        return fields  # (a Slurm job is refused oom_growth with Slurm's reason: check_lifecycle_for)
    if not retries:
        raise JobError("oom_growth needs retries: it grows the memory of an attempt retried after an OOM kill, "
                       "and this job has none; add retries (e.g. retries=2, --retries 2), or drop oom_growth")
    chosen = fields.get(RETRY_ON, LIFECYCLE_DEFAULTS[RETRY_ON])
    if retry_on is None:
        fields[RETRY_ON] = [*chosen, OOM_KILLED]
    elif OOM_KILLED not in chosen:
        raise JobError(f"oom_growth grows the memory of an attempt retried after an OOM kill, but retry_on "
                       f"{','.join(chosen)} does not retry OOM kills: add {OOM_KILLED} to retry_on "
                       f"(retry_on={(*chosen, OOM_KILLED)!r}, --retry-on {','.join([*chosen, OOM_KILLED])}), or drop oom_growth")
    return fields


def grows_on_retry(retries: Any, retry_on: Any) -> bool:
    """Whether ``oom_growth`` could apply with these ``retries`` and ``retry_on`` (None: not
    given): some retries, and OOM kills among what is retried or may be added to it."""
    chosen = (retry_on,) if isinstance(retry_on, str) else retry_on
    return bool(retries) and (chosen is None or OOM_KILLED in chosen)


def check_lifecycle_option(name: str, value: Any) -> dict[str, Any]:
    """One lifecycle option checked alone, as `check_lifecycle` checks it, without the rules
    that join it to the others (``oom_growth`` needs ``retries``): a re-run's override, say.

    Raises:
        JobError: a malformed option.
    """
    return _checked(**{name: value})


def _checked(*, label: Any = None, timeout: Any = None, log_max: Any = None,
             retries: Any = LIFECYCLE_DEFAULTS[RETRIES], retry_on: Any = None, oom_growth: Any = None,
             notify: Any = None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if notify is not None and not isinstance(notify, bool):
        raise JobError(f"notify must be True or False (announce the job's end, or not), not {notify!r}")
    if notify:
        fields[NOTIFY] = True
    if label is not None:
        fields[LABEL] = check_label(label)
    if timeout is not None:
        fields[TIMEOUT] = parse_duration(timeout)
        if fields[TIMEOUT] > TIMEOUT_MAX_S:
            raise JobError(f"timeout {timeout!r} is more than 100 years, the longest time limit jobber keeps "
                           "(its supervisor counts nanoseconds in 64 bits): give a shorter one, or none for no limit")
    if log_max is not None:
        size = 0 if log_max in (0, "0") else parse_size(log_max, LOG_MAX)
        if 0 < size < 4096:
            raise JobError(f"log_max {log_max!r} is below 4 KiB: a log that small keeps nothing useful")
        fields[LOG_MAX] = size
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= _MAX_RETRIES:
        raise JobError(f"retries must be a whole number from 0 to {_MAX_RETRIES}, not {retries!r}")
    if retries:
        fields[RETRIES] = retries
    if retry_on is None:
        retry_on = LIFECYCLE_DEFAULTS[RETRY_ON]
    elif isinstance(retry_on, str):
        retry_on = (retry_on,)
    wrong = [state for state in retry_on if state not in RETRYABLE]
    if wrong or not retry_on:
        raise JobError(f"retry_on {list(retry_on)!r}: choose among {', '.join(RETRYABLE)}")
    if retries and tuple(retry_on) != LIFECYCLE_DEFAULTS[RETRY_ON]:
        fields[RETRY_ON] = list(dict.fromkeys(retry_on))
    if oom_growth is not None:
        fields.update(_check_growth(oom_growth))
    return fields


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_growth(value: Any) -> dict[str, Any]:
    """``oom_growth``: a factor (1.5), or a factor and a cap ((1.5, "16G")), or "1.5:16G"."""
    given = value
    if isinstance(value, str):  # the command line's "1.5" or "1.5:16G"
        value = tuple(value.split(":", 1)) if ":" in value else _number(value)
    cap = None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise JobError(f"oom_growth {given!r}: give a factor, or a factor and a cap such as (1.5, \"16G\")")
        value, cap = value
        if isinstance(value, str):
            value = _number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 < value <= 16:
        raise JobError(f"oom_growth must be a factor above 1 (at most 16), e.g. 1.5 or (1.5, \"16G\"), not {given!r}")
    out: dict[str, Any] = {OOM_GROWTH: float(value)}
    if cap is not None:
        try:
            out[OOM_GROWTH_MAX] = parse_size(cap, "oom_growth's cap")
        except JobError as err:
            raise JobError(f"oom_growth {given!r}: {err}") from None
    return out
