"""The one exception tree of jobber.

    JobberError                      every error jobber raises on purpose
    ├── CertificateError             an identity or the pool is unusable
    │   └── JobNotFound              (also a LookupError) no such job for this identity
    └── JobError                     a job cannot be created, started, stopped or read
        ├── LimitError               (also a ValueError) a resource limit is malformed
        ├── RemoteError              a function job's exception that cannot be rebuilt here
        └── DiskFull                 (also an OSError) the jobs directory's filesystem is full

Foreign errors (OSError from cgroupfs, cryptography's errors, ssl.SSLError) are translated
into these at one boundary each, chained with ``from err``.
"""

from __future__ import annotations

__all__ = ["JobberError", "CertificateError", "JobNotFound", "JobError", "LimitError", "RemoteError", "DiskFull"]


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


class RemoteError(JobError):
    """A function job raised an exception that cannot be rebuilt in this process (its
    class is not importable here, or it would not pickle): its type's name and its
    traceback, as text.

    Attributes:
        type_name: the exception's qualified type name ("mypkg.errors.TrainingDiverged").
        traceback_text: the traceback the job printed.
    """

    def __init__(self, message: str, *, type_name: str, traceback_text: str, job_id: int | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.type_name = type_name
        self.traceback_text = traceback_text

    def __reduce__(self):  # picklable despite its keyword-only constructor
        return (_remote_error, (str(self), self.type_name, self.traceback_text, self.job_id))


def _remote_error(message: str, type_name: str, traceback_text: str, job_id: int | None) -> RemoteError:
    return RemoteError(message, type_name=type_name, traceback_text=traceback_text, job_id=job_id)


class DiskFull(JobError, OSError):
    """A job's file could not be written: its filesystem is full (ENOSPC) or the user's
    disk quota is used up (EDQUOT). It says which filesystem, and what to do.

    Also an ``OSError`` (``errno`` is the kernel's), so code that writes a file on a
    best-effort basis goes on as it would for any other failed write.

    Attributes:
        path: the file that could not be written.
        mount: the filesystem's mount point.
    """

    def __init__(self, message: str, *, errno: int, path: str, mount: str, job_id: int | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.errno, self.strerror, self.filename = errno, message, path
        self.path, self.mount = path, mount

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # picklable despite its keyword-only constructor
        return (_disk_full, (str(self), self.errno, self.path, self.mount, self.job_id))


def _disk_full(message: str, errno: int, path: str, mount: str, job_id: int | None) -> DiskFull:
    return DiskFull(message, errno=errno, path=path, mount=mount, job_id=job_id)
