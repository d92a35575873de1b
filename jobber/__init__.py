"""jobber: isolated, resource-limited jobs launched from a notebook, with live logs.

    import jobber
    cert = jobber.Certificate.from_pem(open("me.pem", "rb").read())
    job = cert.new_job("python train.py", jobber.Limits(cpu=1, memory="2G"))
    job.start()
    for chunk in job.follow():
        print(chunk.decode(errors="replace"), end="")

See DESIGN.md for the layers and the storage layout.
"""

from jobber._certificates import Certificate, default_root, get_client_certificates
from jobber._errors import CertificateError, JobberError, JobError, JobNotFound, LimitError
from jobber._jobs.job import Job
from jobber._jobs.status import JobStatus
from jobber._limits import Limits
from jobber._tail import last_lines

__version__ = "0.1.0"

__all__ = [
    "Certificate",
    "CertificateError",
    "Job",
    "JobError",
    "JobNotFound",
    "JobStatus",
    "JobberError",
    "LimitError",
    "Limits",
    "connect",
    "default_root",
    "get_client_certificates",
    "last_lines",
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
