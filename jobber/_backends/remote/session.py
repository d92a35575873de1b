"""The remote session: a jobber server's jobs, behaving like local ones (standard library only).

    session = jobber.connect("https://jobs.example.org:8443", cert="me.pem", key="me.key", ca="ca.pem")
    job = session.new_job("python train.py", jobber.Limits(memory="2G"))
    job.start()
    for chunk in job.follow():
        ...

``RemoteSession`` is a ``jobber.Session``, as a ``Certificate`` is, and its jobs are
``jobber.Job`` instances holding a ``RemoteBackend``, with the same exceptions, so the CLI
and the magics need no special cases. It speaks to the server through its ``transport``
(``transport.py``: the requests, and where network, TLS and the server's errors become
jobber's); its jobs use the same transport.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from jobber._backends.context import check_env
from jobber._backends.remote.backend import RemoteBackend
from jobber._backends.remote.transport import Transport
from jobber._errors import JobError
from jobber._jobs.job import Job
from jobber._jobs.options import check_label, check_lifecycle, check_lifecycle_option
from jobber._jobs.queues import check_after, check_queue
from jobber._jobs.selection import JobIds, Pruned
from jobber._jobs.spec import (
    LABEL,
    LIFECYCLE_DEFAULTS,
    LIFECYCLE_OPTIONS,
    PYTHON,
    RESULT_MAX,
    RETRY_ON,
    check_command,
)
from jobber._jobs.store import validate_job_id
from jobber._limits import Limits
from jobber._session import Session, lookup

__all__ = ["RemoteSession"]

# The server's cap on a function job's call (jobber._server.api_limits.MAX_CALL_BYTES):
# checked here too, so that a large call is refused before it is sent.
MAX_CALL_BYTES = 64 << 20
_NEW_JOB_KEYWORDS = ("env", "cwd", *LIFECYCLE_OPTIONS, "queue", "after")
_PAGE = 500  # jobs per listing request (the server allows up to 1000)
# What Job.rerun may change remotely (cwd and backend options are the server's to choose).
_RERUN_FIELDS = ("command", "limits", "env", *LIFECYCLE_OPTIONS)


class _Listed(list):
    """A server's listing of jobs, as a plain ``list``; ``skipped``: the jobs it left out
    because it cannot read their files (job id -> why), which ``jobber ls`` reports."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[int, str] = {}


class RemoteSession(Session):
    """A jobber server, reached over HTTPS with a client certificate (TLS 1.3 only).

    Use ``jobber.connect``. The server's identity of the caller is the client
    certificate's SHA-256: the session sees and acts on that certificate's jobs only.

    Args:
        url, cert, key, ca, timeout: the server, the client certificate and its key, the
            server's CA and the seconds to wait, for its `Transport` (see there).

    Raises:
        CertificateError: the certificate or key cannot be loaded.
        JobberError: the server is unreachable, does not speak TLS 1.3, or refuses the
            certificate.
    """

    def __init__(self, url: str, *, cert: str, key: str, ca: str | None = None, timeout: float = 30.0) -> None:
        self.transport = Transport(url, cert=cert, key=key, ca=ca, timeout=timeout)
        with open(cert, "rb") as file:  # readable: the transport just loaded it
            self._pem = file.read()
        identity = self.transport.json("GET", "/v1/identity")
        self._hash = identity["hash"]
        self.subject: str = identity["subject"]

    @property
    def url(self) -> str:
        """The server's URL, without a trailing slash."""
        return self.transport.url

    @property
    def timeout(self) -> float:
        """Seconds to wait for the server on each request (may be set)."""
        return self.transport.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.transport.timeout = float(seconds)

    def __repr__(self) -> str:
        return f"<jobber.RemoteSession {self.url} as {self.subject}>"

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's kept-alive connection (others close when their threads end)."""
        self.transport.close()

    def hash(self) -> str:
        """The SHA-256 of the client certificate, as the server computed it: the identity."""
        return self._hash

    def bytes(self) -> bytes:
        """The client certificate file's PEM."""
        return self._pem

    def new_job(self, command: str, limits: Limits | None = None, *, env: Mapping[str, str] | None = None,
                cwd: str | None = None, label: str | None = None, timeout: float | str | None = None,
                log_max: int | str | None = None, retries: int = 0, retry_on: Sequence[str] | None = None,
                oom_growth: Any = None, notify: bool = False, queue: str | None = None, after: Any = None,
                **options: Any) -> Job:
        """`Session.new_job` on the server, which runs the job and enforces its options.

        Unlike a local job: ``env`` is set on the server; ``cwd`` is refused (the server's
        operator chooses where jobs run); ``queue`` and ``after`` name this certificate's
        queues and jobs on the server; and only ``backend="local"`` is accepted, the
        server's own host. A malformed argument fails here, before any request, as it
        would locally; ``LimitError`` also when the server refuses a limit.
        """
        _check_remote_options(options, cwd)
        check_command(command)
        body = {"command": command, **_job_body(limits, env, queue, after, label=label, timeout=timeout,
                                                log_max=log_max, retries=retries, retry_on=retry_on,
                                                oom_growth=oom_growth, notify=notify)}
        return Job(RemoteBackend(self, self.transport.json("POST", "/v1/jobs", body)))

    def new_function_job(self, call: bytes, limits: Limits | None = None, *, python: str | None = None,
                         result_max: int | str | None = None, **new_job_options: Any) -> Job:
        """`Session.new_function_job` on the server: the call's bytes are uploaded with the job.

        The server stores them in the job's directory and never unpickles them: only the
        job, as this certificate's uid in its sandbox, loads them. ``python`` names an
        interpreter on the server (default ``python3`` on the jobs' ``PATH``; a path only
        if the operator allowed it, ``jobber serve --python``); the server refuses one of
        another major.minor than this process's, naming both, before the job is made.
        The call may be at most 64 MiB (the server's cap): pass large data as files on
        the server. Other options as `new_job`.

        Raises:
            JobError: ``call`` is not bytes or too large, an option is malformed, or the
                server refuses the interpreter.
        """
        options = dict(new_job_options)
        named = {name: options.pop(name) for name in _NEW_JOB_KEYWORDS if name in options}
        _check_remote_options(options, named.pop("cwd", None))
        if not isinstance(call, (bytes, bytearray, memoryview)) or not len(call):
            raise JobError(f"call must be the pickled call (bytes from pack_call), not {type(call).__name__}")
        call = bytes(call) if not isinstance(call, bytes) else call
        if len(call) > MAX_CALL_BYTES:
            raise JobError(f"the call is {len(call) / (1 << 20):.1f} MiB, over the {MAX_CALL_BYTES >> 20} MiB a "
                           "jobber server takes for a function and its arguments: pass large data as a file the "
                           "function reads on the server (or a URL it downloads), not as an argument")
        if python is not None and (not isinstance(python, str) or not python.strip()):
            raise JobError(f"python must name an interpreter on the server (\"python3\"), not {python!r}")
        lifecycle = {name: named[name] for name in LIFECYCLE_OPTIONS if name in named}
        fields = {**_job_body(limits, named.get("env"), named.get("queue"), named.get("after"), **lifecycle),
                  PYTHON: python, RESULT_MAX: result_max, "client_python": f"{sys.version_info[0]}.{sys.version_info[1]}"}
        try:
            encoded = json.dumps(fields).encode()
        except (TypeError, ValueError):
            raise JobError(f"result_max {result_max!r}: give a size such as \"200M\" or a number of bytes") from None
        # The upload may take longer than a request's usual wait: a second per MiB more.
        wait = self.timeout + len(call) / (1 << 20)
        data = self.transport.multipart("/v1/jobs", [("job", "application/json", encoded),
                                                     ("call", "application/octet-stream", call)], timeout=wait)
        return Job(RemoteBackend(self, data))

    def get_job(self, job_id: int) -> Job:
        job_id = validate_job_id(job_id)
        return Job(RemoteBackend(self, self.transport.json("GET", f"/v1/jobs/{job_id}", job_id=job_id)))

    def get_jobs(self, label: str | None = None) -> list[Job]:
        jobs = _Listed()  # with the jobs the server left out (files it cannot read): job id -> why
        after: int | None = 0
        while after is not None:  # the server answers a page at a time
            query: dict[str, Any] = {"limit": _PAGE, "after": after, **({} if label is None else {LABEL: label})}
            page = self.transport.json("GET", f"/v1/jobs?{urlencode(query)}")
            jobs += [Job(RemoteBackend(self, data)) for data in page["jobs"]]
            jobs.skipped.update((entry["id"], entry["error"]) for entry in page.get("skipped", ()))
            after = page.get("next_after")
        return jobs

    def find_job(self, ref: int | str) -> Job:
        return lookup(self, ref, hint=f"on {self.url}")

    def rerun(self, job: Job, **overrides: Any) -> Job:
        """`Session.rerun` on the server, which copies the job and records ``rerun_of``.

        ``cwd`` and backend ``options`` are refused, as by `new_job`.
        """
        unknown = set(overrides) - {*_RERUN_FIELDS, "cwd", "options"}
        if unknown:
            raise JobError(f"rerun: {', '.join(sorted(unknown))} cannot be changed; change "
                           f"{', '.join(sorted(_RERUN_FIELDS))}", job_id=job.id)
        _check_remote_options(overrides.pop("options", None) or {}, overrides.pop("cwd", None))
        body: dict[str, Any] = {"rerun_of": job.id, "start": False}
        if "command" in overrides:
            body["command"] = overrides["command"]
        if "limits" in overrides:
            limits = overrides["limits"]
            if limits is not None and not isinstance(limits, Limits):
                raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}", job_id=job.id)
            body["limits"] = None if limits is None else limits.to_dict()
        if "env" in overrides:
            body["env"] = check_env(overrides["env"]) if overrides["env"] else None
        body.update(_lifecycle_body({k: v for k, v in overrides.items() if k in LIFECYCLE_OPTIONS}, defaults_too=True))
        return Job(RemoteBackend(self, self.transport.json("POST", "/v1/jobs", body, job_id=job.id)))

    def prune(self, *, older_than: float | str | None = None, states: str | Iterable[str] | None = None,
              keep_last: int | None = None, dry_run: bool = False, label: str | None = None,
              ids: Any = None) -> Pruned:
        if isinstance(states, (str, type(None))):
            chosen: Any = states
        elif isinstance(states, Iterable):
            chosen = list(states)
        else:
            raise JobError(f"states {states!r}: give final states, e.g. ('exited', 'failed')")
        body = {"older_than": older_than, "states": chosen, "keep_last": keep_last, "dry_run": dry_run}
        if label is not None:
            body["label"] = check_label(label)
        if ids is not None:
            body["ids"] = str(JobIds.parse(ids))  # ranges as text: "12-40" stays short over the wire
        try:
            json.dumps(body)
        except (TypeError, ValueError):
            raise JobError(f"prune: {body!r} holds a value that is neither a number nor text: give older_than as "
                           "seconds or '7d', states as names, keep_last as a whole number") from None
        answer = self.transport.json("POST", "/v1/jobs:prune", body)
        return Pruned(answer["removed"], {int(item["id"]): str(item["reason"]) for item in answer.get("kept", [])})

    def set_queue(self, name: str, *, parallel: int | None = None, memory: int | str | None = None,
                  cpus: float | None = None, gpus: int | None = None) -> dict[str, Any]:
        body = {key: value for key, value in (("parallel", parallel), ("memory", memory), ("cpus", cpus),
                                              ("gpus", gpus)) if value is not None}
        return dict(self.transport.json("PUT", f"/v1/queues/{quote(check_queue(name), safe='')}", body))

    def queues(self) -> dict[str, dict[str, Any]]:
        return dict(self.transport.json("GET", "/v1/queues")["queues"])

    def generate_job_id(self) -> int:
        """Not offered remotely: ``new_job`` reserves the id and creates the job at once.

        Raises:
            JobError: always.
        """
        raise JobError("generate_job_id is not supported remotely: new_job(command) reserves an id and creates the job in one step")


def _check_remote_options(options: Mapping[str, Any], cwd: Any) -> None:
    """Refuse what a server chooses itself: where jobs run and in which directory."""
    if options and dict(options) != {"backend": "local"}:
        raise JobError(
            f"a jobber server runs jobs on its own host: {', '.join(sorted(options))} cannot be used "
            "remotely (run Slurm jobs from a host with sbatch)"
        )
    if cwd is not None:
        raise JobError("cwd is a directory on the server, chosen by its operator (jobber serve --job-user): "
                       "leave it out, or cd inside the command (`cd data && python train.py`)")


def _job_body(limits: Limits | None, env: Mapping[str, str] | None, queue: str | None, after: Any,
              **lifecycle: Any) -> dict[str, Any]:
    """A new job's fields but its command (or call), checked here with the local rules
    first, so that a malformed one fails before any request, as it would locally."""
    if limits is not None and not isinstance(limits, Limits):
        raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
    check_lifecycle(**lifecycle)  # as a whole, as the store does: oom_growth needs retries
    body: dict[str, Any] = {"limits": None if limits is None else limits.to_dict(), "start": False,
                            **_lifecycle_body(lifecycle)}
    if env:
        body["env"] = check_env(env)
    if queue is not None:
        body["queue"] = check_queue(queue)
    if after is not None:
        body["after"] = check_after(after)
    return body


def _lifecycle_body(given: dict[str, Any], *, defaults_too: bool = False) -> dict[str, Any]:
    """The lifecycle options as JSON fields, each checked here first with the local rules
    (so a malformed one fails as it would locally, before any request); null stands for
    the default. ``defaults_too``: keep the fields given their default value (a re-run's
    overrides), else leave them out."""
    body: dict[str, Any] = {}
    for name, value in given.items():
        if value is not None:
            check_lifecycle_option(name, value)
        if isinstance(value, (tuple, list, set, frozenset)):
            value = list(value)
        as_given = tuple(value) if isinstance(value, list) else (value,) if name == RETRY_ON and isinstance(value, str) else value
        default = value is None or as_given == LIFECYCLE_DEFAULTS[name]
        if defaults_too or not default:
            body[name] = value
    return body
