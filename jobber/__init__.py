"""jobber: isolated, resource-limited jobs launched from a notebook, with live logs.

    import jobber
    cert = jobber.Certificate.from_pem(open("me.pem", "rb").read())
    job = cert.new_job("python train.py", jobber.Limits(cpu=1, memory="2G"))
    job.start()
    for chunk in job.follow():
        print(chunk.decode(errors="replace"), end="")

See docs/api.md for the contract and docs/architecture.md for the layers and the storage layout.
"""

from jobber._certificates import Certificate, default_root, get_client_certificates
from jobber._cli_certs import ca_hint
from jobber._errors import CertificateError, JobberError, JobError, JobNotFound, LimitError, RemoteError
from jobber._job_flags import JobFlags
from jobber._jobs.executor import Executor
from jobber._jobs.history import last_runs
from jobber._jobs.job import Job
from jobber._jobs.oversubscription import oversubscription
from jobber._jobs.status import JobStatus
from jobber._jobs.sweeps import Sweep
from jobber._limits import Limits
from jobber._session import Session
from jobber._tail import last_lines
from jobber._text import format_elapsed, format_size

__version__ = "0.1.0"

__all__ = [
    "Certificate",
    "CertificateError",
    "Executor",
    "Job",
    "JobError",
    "JobFlags",
    "JobNotFound",
    "JobStatus",
    "JobberError",
    "LimitError",
    "RemoteError",
    "Session",
    "Sweep",
    "Limits",
    "connect",
    "default_root",
    "doctor",
    "format_elapsed",
    "format_size",
    "ca_hint",
    "get_client_certificates",
    "last_lines",
    "last_runs",
    "oversubscription",
]


def connect(url: str, *, cert: str, key: str, ca: str | None = None, timeout: float = 30.0):
    """Open a session with a jobber server, over HTTPS with a client certificate.

    The session has the job methods of a Certificate (``get_jobs``, ``get_job``,
    ``new_job``, ``generate_job_id``) and its jobs behave like local ones.

    Args:
        url: the server, e.g. ``https://jobs.example.org:8443``.
        cert: the client certificate (PEM file).
        key: its private key (PEM file).
        ca: the CA that signed the server's certificate (default: the system's CAs).
        timeout: seconds before a request is abandoned.

    Returns:
        A remote session.

    Raises:
        JobberError: the server is unreachable or refuses the certificate.
    """
    from jobber._backends.remote.session import RemoteSession

    return RemoteSession(url, cert=cert, key=key, ca=ca, timeout=timeout)


def doctor(root: str | None = None):
    """Check this host and user as the next local job will meet them.

    What confines jobs here and why (cgroup v2, v1, a cgroup delegated by systemd, or
    none), whether each limit (cpu, memory, pids, io) is enforced and how to fix it when
    not, the launcher in use, the jobs directory, the identity and the pool. The limits
    are checked by making the cgroup a job would get and removing it again.

    Args:
        root: the jobber root whose pool to check (default: $JOBBER_ROOT, else ~/.jobber).

    Returns:
        A diagnosis: ``.confined`` (every limit enforced), ``.isolation``, ``.checks``
        (each with ``name``, ``ok``, ``found``, ``fix``), ``.to_dict()``; ``str()`` of it
        is what ``jobber doctor`` prints.
    """
    from jobber._doctor import diagnose

    return diagnose(root)
