"""What a job is: its spec, the one typed home of everything ``spec.json`` records.

    JobSpec
      command, limits, options            what new_job was given (options: the backend, Slurm's)
      label timeout log_max retries       the lifecycle options (``LIFECYCLE_OPTIONS``)
      retry_on oom_growth (oom_growth_max) notify
      queue after                         when it may start
      extra_env cwd                       new_job's env and cwd
      python result_max                   a function job's (``new_function_job``)
      rerun_of created_at                 where it came from
      env user cwd sandbox                the run context ``start()`` records
      gpu_devices                         the GPUs a local job was given
      slurm_files slurm_name slurm_array_jobs   where Slurm keeps it

A spec is checked once, when the job is created (``JobStore.new_job``); reading it back
(:meth:`JobSpec.from_json`) trusts what was written, and keeps any key it does not know
(a newer jobber's) so that writing it again loses nothing. :meth:`JobSpec.to_json` writes
the same JSON as every earlier version did: a field at its default is left out.

The supervisor's finisher reads the spec too (``retrying.py``, in a bare interpreter): this
module imports only the standard library and ``jobber._limits``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobber._errors import JobError
from jobber._jobs.spec_names import (
    AFTER,
    LABEL,
    LIFECYCLE_OPTIONS,
    LOG_MAX,
    NOTIFY,
    OOM_GROWTH,
    OOM_GROWTH_MAX,
    PYTHON,
    QUEUE,
    RESULT_MAX,
    RETRIES,
    RETRY_ON,
    TIMEOUT,
)
from jobber._limits import Limits

__all__ = ["AFTER", "check_command", "LABEL", "LIFECYCLE_DEFAULTS", "LIFECYCLE_OPTIONS", "LOG_MAX", "NOTIFY",
           "OOM_GROWTH", "OOM_GROWTH_MAX",
           "PYTHON", "QUEUE", "RESULT_MAX", "RETRIES", "RETRY_ON", "TIMEOUT", "JobSpec"]



@dataclass(frozen=True)
class JobSpec:
    """One job's spec, as ``spec.json`` records it. ``None`` (or empty) means not set.

    Args:
        command: the shell command (``/bin/sh -c COMMAND``).
        limits: its resource limits.
        options: the backend's options: ``backend`` ("local", "slurm"), Slurm's ``partition``...
        label: a short name for listings, re-runs and filters.
        timeout: seconds, after which the job is stopped ("timed-out").
        log_max: the log's cap in bytes (0: none); a local job's start records the default.
        retries: how many times a failed attempt is started again.
        retry_on: which endings are retried.
        oom_growth: after an OOM kill the next attempt gets memory x this.
        oom_growth_max: the most memory that growth may reach (bytes).
        notify: announce the job's end (the Jobs panel notifies of it whatever its length).
        queue: the queue the job waits in.
        after: ``(job id, "ok" | "any")`` pairs: the jobs that must end first.
        extra_env: the environment ``new_job(env=...)`` gave, on top of the inherited one.
        cwd: the working directory (given to ``new_job``, or chosen at start).
        python: a function job's interpreter (``new_function_job``); None for a command job.
        result_max: a function job's cap on its pickled result, in bytes (None: the default).
        rerun_of: the id of the job this one re-ran.
        created_at: when the job was made (seconds since the epoch).
        env: the whole environment the job started with (recorded at start).
        user: the user it runs as: ``{"name", "uid", "gid"}`` (recorded at start).
        sandbox: a server's sandbox settings (``jobber._backends.context.Sandbox.to_dict``).
        gpu_devices: the GPUs a local job was given when admitted.
        slurm_files: the directory of a Slurm job's script and log.
        slurm_name: the Slurm job's name (a sweep's array shares one).
        slurm_array_jobs: on the first job of a Slurm array, the ids of all its jobs.
        extra: keys this version does not know (a newer jobber's), kept as they were.
        extra_limits: limits this version does not know (a newer jobber's), kept as they
            were: the job still reads (its label, its listing), with the limits it knows.
    """

    command: str
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    timeout: float | None = None
    log_max: int | None = None
    retries: int = 0
    retry_on: tuple[str, ...] = ("failed",)
    oom_growth: float | None = None
    oom_growth_max: int | None = None
    notify: bool = False
    queue: str | None = None
    after: tuple[tuple[int, str], ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    python: str | None = None
    result_max: int | None = None
    rerun_of: int | None = None
    created_at: float | None = None
    env: dict[str, str] | None = None
    user: dict[str, Any] | None = None
    sandbox: dict[str, Any] | None = None
    gpu_devices: tuple[int, ...] = ()
    slurm_files: str | None = None
    slurm_name: str | None = None
    slurm_array_jobs: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    extra_limits: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Sequences are kept as tuples, whatever list a caller or spec.json gave (a lone
        # string is one item, not its letters).
        for name in (RETRY_ON, "gpu_devices", "slurm_array_jobs"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, AFTER, tuple((dep[0], dep[1]) for dep in self.after))

    @property
    def is_function(self) -> bool:
        """Whether this is a function job (``new_function_job``): it has a result."""
        return self.python is not None

    @property
    def backend(self) -> str | None:
        """The backend the options name ("local", "slurm"), or None when they name none."""
        return self.options.get("backend")

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with these fields changed (``spec.replace(label="b")``).

        Raises:
            TypeError: a name that is not a field.
        """
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``spec.json`` holds: every field not at its default, then ``extra``."""
        data: dict[str, Any] = {}
        for name, value in _fields(self):
            if name == "limits":
                data[name] = {**value.to_dict(), **self.extra_limits}
            elif name in _ALWAYS:
                data[name] = dict(value) if isinstance(value, dict) else value
            elif value is None or (name in _OMIT_EMPTY and not value) or value == _DEFAULTS.get(name):
                continue
            elif isinstance(value, tuple):
                data[name] = [list(item) if isinstance(item, tuple) else item for item in value]
            elif isinstance(value, dict):
                data[name] = dict(value)
            else:
                data[name] = value
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        """Read a spec written by :meth:`to_json`, or by any earlier jobber.

        Raises:
            JobError: a field of the wrong type (``"limits": 5``): not a spec jobber wrote.
            LimitError: its limits are not limits (see ``Limits.from_dict``).
        """
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in _KNOWN:
                extra[key] = value
                continue
            _check_type(key, value)
            if key == "limits":
                value = value or {}
                known[key] = Limits.from_dict({k: v for k, v in value.items() if k in _LIMIT_NAMES})
                known["extra_limits"] = {k: v for k, v in value.items() if k not in _LIMIT_NAMES}
            elif value is not None or key in _MAY_BE_NONE:
                known[key] = value  # (a null where the field has a value by default reads as that default)
        known.setdefault("command", "")
        return cls(**known, extra=extra)

    def api_fields(self) -> dict[str, Any]:
        """The spec's fields in a job's JSON on a jobber server, beyond command and limits
        (null: not set); :meth:`from_api` reads them back."""
        return {
            "env": dict(self.extra_env),  # the owner's own: no other certificate sees this job
            LABEL: self.label,
            "rerun_of": self.rerun_of,
            TIMEOUT: self.timeout,
            LOG_MAX: self.log_max,
            RETRIES: self.retries,
            RETRY_ON: list(self.retry_on),
            OOM_GROWTH: self.oom_growth,
            OOM_GROWTH_MAX: self.oom_growth_max,
            NOTIFY: self.notify,
            QUEUE: self.queue,
            AFTER: [list(dep) for dep in self.after],
            PYTHON: self.python,
            RESULT_MAX: self.result_max,
        }

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec of a job as a jobber server describes it (``command``, ``limits``, and
        the fields of :meth:`api_fields`; its backend's options stay on the server).

        Raises:
            LimitError: its limits are not limits.
        """
        given = {key: data[key] for key in _API_FIELDS if data.get(key) is not None}
        limits = data.get("limits") or {}
        return cls(command=data["command"], limits=Limits.from_dict({k: v for k, v in limits.items() if k in _LIMIT_NAMES}),
                   extra_limits={k: v for k, v in limits.items() if k not in _LIMIT_NAMES},
                   extra_env=dict(data.get("env") or {}), after=data.get(AFTER) or (), **given)


def _fields(spec: JobSpec) -> list[tuple[str, Any]]:
    return [(name, getattr(spec, name)) for name in _NAMES if name not in _NOT_KEYS]


_NAMES = tuple(f.name for f in dataclasses.fields(JobSpec))
_NOT_KEYS = frozenset({"extra", "extra_limits"})  # fields that are no key of spec.json themselves
_KNOWN = frozenset(_NAMES) - _NOT_KEYS  # what spec.json's keys may name
_LIMIT_NAMES = frozenset(f.name for f in dataclasses.fields(Limits))
_ALWAYS = ("command", "options")  # (and limits) written even when empty, as every version did
_OMIT_EMPTY = (AFTER, "extra_env", "gpu_devices", "slurm_array_jobs")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(JobSpec) if f.default is not dataclasses.MISSING}
_MAY_BE_NONE = frozenset(name for name, default in _DEFAULTS.items() if default is None)
LIFECYCLE_DEFAULTS: dict[str, Any] = {name: _DEFAULTS.get(name) for name in LIFECYCLE_OPTIONS}
"""Each lifecycle option's value when it is not given (``retries`` 0, ``retry_on`` ("failed",))."""
_API_FIELDS = (LABEL, "rerun_of", TIMEOUT, LOG_MAX, RETRIES, RETRY_ON, OOM_GROWTH, OOM_GROWTH_MAX, NOTIFY, QUEUE, PYTHON,
               RESULT_MAX)


_TEXT = (str,)
_NUMBER = (int, float)
_OBJECT = (dict,)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    **{name: (_TEXT, "text") for name in ("command", LABEL, QUEUE, "cwd", PYTHON, "slurm_files", "slurm_name")},
    **{name: (_NUMBER, "a number") for name in (TIMEOUT, LOG_MAX, RETRIES, OOM_GROWTH, OOM_GROWTH_MAX, RESULT_MAX,
                                                 "rerun_of", "created_at")},
    **{name: (_OBJECT, "an object") for name in ("limits", "options", "extra_env", "env", "user", "sandbox")},
    NOTIFY: ((bool, int), "true or false"),
    RETRY_ON: ((str, list), "a list of endings"),
    AFTER: ((list,), "a list of [job id, condition] pairs"),
    "gpu_devices": ((list,), "a list of GPU numbers"),
    "slurm_array_jobs": ((list,), "a list of job ids"),
}


def _check_type(key: str, value: Any) -> None:
    """Refuse a field ``from_json`` could not read (Python's own errors would say nothing of it)."""
    if value is None:
        return  # (null: not set, or the default)
    types, expected = _TYPES[key]
    fits = isinstance(value, types) and not (isinstance(value, bool) and types is _NUMBER)
    if fits and key == RETRY_ON and isinstance(value, list):
        fits = all(isinstance(item, str) for item in value)
    elif fits and key == AFTER:
        fits = all(isinstance(dep, list) and len(dep) == 2 and isinstance(dep[0], int) and isinstance(dep[1], str)
                   for dep in value)
    elif fits and key in ("gpu_devices", "slurm_array_jobs"):
        fits = all(isinstance(item, int) for item in value)
    if not fits:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise JobError(f"its field {key!r} is {shown}, not {expected}: not a spec jobber wrote")


def check_command(command: object) -> str:
    """A job's command: text a shell can run (``/bin/sh -c COMMAND``), not blank.

    Raises:
        JobError: empty, blank or not text; or it holds a NUL byte.
    """
    if not isinstance(command, str) or not command.strip():
        raise JobError("the command is empty: give the shell command the job should run")
    if "\0" in command:
        raise JobError("the command contains a NUL byte, which no shell can run")
    return command
