"""Run a jobber server on a free loopback port, for notebooks and tests.

As a script, it makes a demo PKI (``jobber certs init-demo``) in DIR, starts
``python -m jobber serve`` on 127.0.0.1 with a private jobs directory, prints the
environment a client needs, and serves until SIGINT/SIGTERM:

    $ python tests/serve_for_notebooks.py /tmp/jobber-nb &
    export JOBBER_SERVER=https://127.0.0.1:40123 JOBBER_CERT=/tmp/jobber-nb/client.pem ...
    $ eval "$(...)"; pytest --nbval notebooks/03-remote.ipynb

``notebooks/03-remote.ipynb`` uses a server named by those variables when JOBBER_SERVER is
set, and otherwise starts its own the same way. The server tests import ``ServerProcess``,
``TestPki`` (certificates made with tests/certfactory.py) and ``Api`` (raw HTTPS calls).
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "TestPki", "Api", "Reply", "demo_environment", "job_python", "main", "shared_state_dir"]

_BANNER = re.compile(r"listening on (https://\S+?)/? ")
_state_dir: Path | None = None
_job_python: Path | None = None


def job_python() -> Path | None:
    """An interpreter for a server's function jobs, made once per process and removed at
    exit: a venv of the host's ``/usr/bin/python3`` with this process's cloudpickle copied
    in, under /var/tmp and readable by every uid (a tenant's job must run it; this
    process's own interpreter may live in a directory only root can enter). None when
    the host's Python is not this one's major.minor (function jobs need the same)."""
    global _job_python
    if _job_python is None:
        host = Path("/usr/bin/python3")
        try:
            version = subprocess.run([str(host), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            version = None
        if version != f"{sys.version_info[0]}.{sys.version_info[1]}":
            return None
        import cloudpickle

        base = Path(tempfile.mkdtemp(prefix="jobber-test-python-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        atexit.register(shutil.rmtree, base, True)
        subprocess.run([str(host), "-m", "venv", "--without-pip", str(base / "venv")], check=True)
        site = next((base / "venv" / "lib").glob("python3*/site-packages"))
        shutil.copytree(Path(cloudpickle.__file__).parent, site / "cloudpickle")
        _job_python = base / "venv" / "bin" / "python3"
    return _job_python


def shared_state_dir() -> Path:
    """One state directory (tenants' uids and homes) for every server this process starts,
    so that no two of them give one uid to two tenants. It is outside /tmp (each job gets a
    private /tmp) and reachable by the tenants' uids; removed when the process exits."""
    global _state_dir
    if _state_dir is None:
        _state_dir = Path(tempfile.mkdtemp(prefix="jobber-test-state-", dir="/var/tmp"))
        os.chmod(_state_dir, 0o711)
        atexit.register(shutil.rmtree, _state_dir, True)
    return _state_dir


class ServerProcess:
    """``python -m jobber serve`` in a subprocess, on a free port unless one is given.

    Args:
        cert, key: the server's certificate and key.
        root: the jobber root whose pool admits clients.
        jobs_dir: the server's ``JOBBER_JOBS_DIR``.
        port: 0 for any free port.
        job_user: ``--job-user``, or None for the server's default.
        log: where the server's stderr goes (default: ``jobs_dir``/../server-PORT.log).
        single_tenant: ``--single-tenant``; None: when not root, or with ``job_user``
            (the server refuses to run tenants' jobs as one uid without it).
        state_dir: ``--state-dir`` when each tenant has a uid (default: ``shared_state_dir()``).
        uid_range: ``--uid-range``.
        private_tmp: False for ``--no-private-tmp``.
        env: more of the server's environment.
        args: more options of ``jobber serve`` (``["--max-connections", "100"]``).
    """

    def __init__(self, cert: Path, key: Path, root: Path, jobs_dir: Path, *, port: int = 0,
                 job_user: str | None = None, log: Path | None = None, log_level: str = "info",
                 single_tenant: bool | None = None, state_dir: Path | None = None, uid_range: str | None = None,
                 private_tmp: bool = True, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.cert, self.key, self.root, self.jobs_dir = Path(cert), Path(key), Path(root), Path(jobs_dir)
        self.port = port
        self.job_user = job_user
        self.single_tenant = (os.geteuid() != 0 or job_user is not None) if single_tenant is None else single_tenant
        self.state_dir = state_dir
        self.uid_range = uid_range
        self.private_tmp = private_tmp
        self.env = dict(env or {})
        self.args = list(args or [])
        self.log_level = log_level
        self.log_path = Path(log) if log else self.jobs_dir.parent / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        self.url = ""
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait for its banner.

        Raises:
            RuntimeError: the server exited or printed no banner in time (its log is included).
        """
        argv = [sys.executable, "-m", "jobber", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--cert", str(self.cert), "--key", str(self.key), "--root", str(self.root),
                "--log-level", self.log_level]
        if self.job_user:
            argv += ["--job-user", self.job_user]
        if self.single_tenant:
            argv.append("--single-tenant")
        elif os.geteuid() == 0:
            argv += ["--state-dir", str(self.state_dir or shared_state_dir())]
        if self.uid_range:
            argv += ["--uid-range", self.uid_range]
        if not self.private_tmp:
            argv.append("--no-private-tmp")
        argv += self.args
        env = {**os.environ, "JOBBER_JOBS_DIR": str(self.jobs_dir), "PYTHONUNBUFFERED": "1", **self.env}
        if "JOBBER_SERVE_PYTHON" not in env and job_python() is not None:
            env["JOBBER_SERVE_PYTHON"] = str(job_python())  # function jobs' python3: one with cloudpickle
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._offset = self._log_file.tell()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _BANNER.search(self.log())
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the jobber server did not start:\n{self.log()}")

    def log(self) -> str:
        """What the server printed since this start."""
        try:
            with open(self.log_path, "rb") as file:
                file.seek(self._offset)
                return file.read().decode(errors="replace")
        except (OSError, AttributeError):
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop the server (jobs keep running); returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TestPki:
    """A client CA in a fresh pool, a server certificate for 127.0.0.1, and client identities.

    Args:
        directory: where the files go.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path) -> None:
        from cryptography import x509

        from certfactory import SERVER_AUTH, CertFactory

        self.directory = Path(directory)
        self.factory = CertFactory(self.directory / "factory")
        self.ca = self.factory.ca("jobber test client CA")
        self.root = self.factory.root(self.ca)
        server_ca = self.factory.ca("jobber test server CA")
        server = self.factory.leaf("127.0.0.1", issuer=server_ca, eku=(SERVER_AUTH,), san=[
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        self.server_cert, self.server_key = server.write(self.directory, "server")
        self.server_ca = self.directory / "server-ca.pem"
        self.server_ca.write_bytes(server_ca.cert_pem)
        self._count = 0

    def client(self, name: str | None = None, issued: Any = None) -> tuple[Path, Path]:
        """Files (cert, key) of a new identity issued by the pool's CA (or of ``issued``)."""
        self._count += 1
        issued = issued or self.factory.leaf(name or f"user{self._count}", issuer=self.ca)
        return issued.write(self.directory / "clients", f"{issued.name}-{self._count}")


@dataclass
class Reply:
    """A raw HTTP answer."""

    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """Raw HTTPS calls to a jobber server with a client certificate (for status codes and bodies)."""

    def __init__(self, url: str, cert: Path | None, key: Path | None, ca: Path, *,
                 maximum_version: ssl.TLSVersion | None = None) -> None:
        self.host, port = url.removeprefix("https://").rsplit(":", 1)
        self.port = int(port)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.load_verify_locations(str(ca))
        if maximum_version is not None:
            self.context.maximum_version = maximum_version
        if cert is not None:
            self.context.load_cert_chain(str(cert), str(key))

    def connection(self, timeout: float = 30.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def __call__(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
        conn = self.connection(timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def stream(self, path: str, timeout: float = 30.0) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        """Open a streaming GET (a follow); the caller closes the connection."""
        conn = self.connection(timeout)
        conn.request("GET", path)
        return conn, conn.getresponse()


def demo_environment(directory: Path) -> dict[str, str]:
    """Make a demo PKI in ``directory`` (once) and return the client's environment, less the URL."""
    directory = Path(directory)
    if not (directory / "client.pem").exists():
        subprocess.run([sys.executable, "-m", "jobber", "certs", "init-demo", str(directory)],
                       check=True, stdout=subprocess.DEVNULL)
    return {
        "JOBBER_CERT": str(directory / "client.pem"),
        "JOBBER_KEY": str(directory / "client.key"),
        "JOBBER_CA": str(directory / "ca.pem"),
        "JOBBER_ROOT": str(directory),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="where the demo PKI and the jobs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    directory = Path(args.directory or tempfile.mkdtemp(prefix="jobber-nb-")).absolute()
    env = demo_environment(directory)
    server = ServerProcess(directory / "server.pem", directory / "server.key", directory,
                           directory / "jobs", log=directory / "server.log").start()
    env["JOBBER_SERVER"] = server.url
    print("export " + " ".join(f"{name}={value}" for name, value in env.items()), flush=True)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    while not stop and server.proc and server.proc.poll() is None:
        time.sleep(0.2)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
