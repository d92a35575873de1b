"""The one exception tree of jobber.

    JobberError                      every error jobber raises on purpose
    ├── CertificateError             an identity or the pool is unusable
    │   └── JobNotFound              (also a LookupError) no such job for this identity
    └── JobError                     a job cannot be created, started, stopped or read
        └── LimitError               (also a ValueError) a resource limit is malformed

Foreign errors (OSError from cgroupfs, cryptography's errors, ssl.SSLError) are translated
into these at one boundary each, chained with ``from err``.
"""

from __future__ import annotations

__all__ = ["JobberError", "CertificateError", "JobNotFound", "JobError", "LimitError"]


class JobberError(Exception):
    """Base of every error jobber raises on purpose."""


class CertificateError(JobberError):
    """A certificate, a private key or the certificate pool is unusable.

    Attributes:
        path: the file involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class JobNotFound(CertificateError, LookupError):
    """The identity has no job with this id (another identity's jobs look the same).

    Attributes:
        job_id: the id that was asked for.
    """

    def __init__(self, job_id: int, message: str | None = None) -> None:
        super().__init__(message or f"no job {job_id} for this certificate (list them with `jobber ls` or %jobber_jobs)")
        self.job_id = job_id

    def __reduce__(self):  # keep it picklable with its keyword-free constructor
        return (type(self), (self.job_id, str(self)))


class JobError(JobberError):
    """A job cannot be created, started, stopped or read.

    Attributes:
        job_id: the job concerned, when there is one.
    """

    def __init__(self, message: str, *, job_id: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class LimitError(JobError, ValueError):
    """A resource limit is malformed (a size like "12Q", a negative CPU count)."""
