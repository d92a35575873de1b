"""Which identity the Jupyter server shows the jobs of: one per server (a single-user server).

Precedence: the panel's ``certPath`` setting (JupyterLab's settings editor) when not
empty, else the server's ``$JOBBER_CERT``, else none. With a ``server`` setting (or
``$JOBBER_SERVER``) the jobs are a jobber server's, reached with ``jobber.connect`` and
the key and CA of ``$JOBBER_KEY``/``$JOBBER_CA``; otherwise they are this host's, in
``$JOBBER_JOBS_DIR/<cert hash>/``.

    GET /jobber/api/identity -> {"configured", "problem", "hash", "subject", "source",
                                 "server", "jobs_dir"}
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import jobber
from jobber import JobberError
from jobber._cli_certs import ca_hint
from jobber._jobs.store import JobStore

__all__ = ["Identity", "IdentityProblem"]

_MAX_SETTING = 4096  # a path or URL longer than this is no path or URL


class IdentityProblem(JobberError):
    """The server has no usable identity: the message says why and what to do."""


class Identity:
    """The identity whose jobs this Jupyter server shows, and the session that reaches them.

    ``configure`` changes it (the frontend's settings); ``generation`` counts the changes,
    so that feeds built for an earlier identity know to start over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self._cert_setting = ""
        self._server_setting = ""
        self._session: Any = None
        self._cert: Any = None
        self._source = ""
        self._server: str | None = None
        self.problem: str | None = None
        self._resolve()

    @property
    def session(self) -> Any:
        """The session (a ``jobber.Certificate`` or a remote session).

        Raises:
            IdentityProblem: none is configured, or it is unusable (why).
        """
        if self._session is None:
            raise IdentityProblem(self.problem or "no identity")
        return self._session

    @property
    def local_dir(self) -> Path | None:
        """The directory of the identity's jobs on this host (None for a remote identity)."""
        if self._cert is None or self._server:
            return None
        return JobStore(self._cert.hash()).path

    def configure(self, cert_path: Any, server: Any) -> None:
        """Take the panel's settings (``""``: not set).

        Raises:
            IdentityProblem: a setting that is not text, or too long; or a certificate
                path given that is not a usable certificate (the identity is unchanged).
        """
        for name, value in (("certPath", cert_path), ("server", server)):
            if not isinstance(value, str) or len(value) > _MAX_SETTING or "\0" in value:
                raise IdentityProblem(f"{name} must be a path or URL as text (at most {_MAX_SETTING} characters), "
                                      f"not {type(value).__name__ if not isinstance(value, str) else 'that'}")
        cert_path, server = cert_path.strip(), server.strip()
        if cert_path:
            _check_cert_path(cert_path)
        with self._lock:
            self._cert_setting, self._server_setting = cert_path, server
            self._resolve()
            self.generation += 1

    def describe(self) -> dict[str, Any]:
        """The identity as ``GET /jobber/api/identity`` answers."""
        cert = self._cert
        local = self.local_dir
        return {"configured": self._session is not None, "problem": self.problem,
                "hash": cert.hash() if cert is not None else "", "subject": cert.subject if cert is not None else "",
                "source": self._source or None, "server": self._server,
                "jobs_dir": os.fspath(local) if local is not None else None}

    def _resolve(self) -> None:
        """Find the identity from the settings and the environment (under the lock)."""
        self._session = self._cert = None
        self.problem = None
        self._server = self._server_setting or os.environ.get("JOBBER_SERVER") or None
        path = self._cert_setting or os.environ.get("JOBBER_CERT", "")
        self._source = "setting" if self._cert_setting else "JOBBER_CERT" if path else ""
        if not path:
            self.problem = ("no identity: set the Jobs panel's certificate (Settings > Jobber: certPath) or start "
                            "Jupyter with JOBBER_CERT=/path/to/client.pem")
            return
        try:
            self._cert = jobber.Certificate.from_file(os.path.expanduser(path))
            if self._server:
                key = os.environ.get("JOBBER_KEY")
                if not key:
                    raise IdentityProblem(f"a jobber server ({self._server}) needs the certificate's private key: "
                                          "start Jupyter with JOBBER_KEY=/path/to/client.key")
                self._session = jobber.connect(self._server, cert=os.path.expanduser(path), key=key,
                                               ca=os.environ.get("JOBBER_CA"))
                self._source = "remote"
            else:
                self._session = self._cert
        except JobberError as err:
            self.problem = str(err)
            self._session = None


def _check_cert_path(path: str) -> None:
    """A certificate path from the browser: an absolute path (or ``~/...``) to a regular
    file. Read with the Jupyter server's rights, so only what the same user could read
    anyway; it must then parse as a certificate of the pool, and nothing of a file that
    does not is ever shown.

    Raises:
        IdentityProblem: not such a path, or not a valid certificate.
    """
    full = os.path.expanduser(path)
    if not os.path.isabs(full):
        raise IdentityProblem(f"certPath {path!r} is not an absolute path: give the full path of your client "
                              "certificate (PEM), e.g. /home/you/.jobber/client.pem")
    if not os.path.isfile(full):
        raise IdentityProblem(f"certPath {path!r} is not a file: give the full path of your client certificate (PEM)")
    try:
        jobber.Certificate.from_file(full)
    except JobberError as err:
        why = ca_hint(full) or _first_line(err)  # the CLI's words for the pool's CA certificate
        raise IdentityProblem(f"certPath {path!r} is not a usable certificate: {why}") from None


def _first_line(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
