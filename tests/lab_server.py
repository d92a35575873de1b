"""A real Jupyter server with the jobber_lab extension, as a subprocess on loopback.

Used by tests/test_lab_server.py and benchmarks/bench_lab.py: the server is the venv's
``jupyter-server``, its extension enabled by the repository's own
``jupyter-config/jupyter_server_config.d/jobber_lab.json`` (``JUPYTER_CONFIG_PATH``), with
a token, an identity (``JOBBER_CERT``) and a jobs directory of the caller's choosing.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

REPO = Path(__file__).resolve().parent.parent
JUPYTER_SERVER = Path(sys.executable).parent / "jupyter-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """One ``jupyter server`` process configured with one identity.

    Args:
        cert: the client certificate (``JOBBER_CERT``).
        root: the pool's root (``JOBBER_ROOT``).
        jobs_dir: ``JOBBER_JOBS_DIR``.
        remote: ``JOBBER_SERVER``, ``JOBBER_KEY`` and ``JOBBER_CA`` for a jobber server's jobs.
    """

    def __init__(self, cert: Path, root: Path, jobs_dir: Path, remote: dict[str, str] | None = None) -> None:
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._home = tempfile.TemporaryDirectory(prefix="jobber-lab-")
        home = Path(self._home.name)
        env = {**os.environ, "JOBBER_CERT": str(cert), "JOBBER_ROOT": str(root), "JOBBER_JOBS_DIR": str(jobs_dir),
               "JUPYTER_CONFIG_PATH": str(REPO / "jupyter-config"), "JUPYTER_CONFIG_DIR": str(home / "config"),
               "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "PYTHONWARNINGS": "error::DeprecationWarning:jobber_lab"}
        for name in ("JOBBER_SERVER", "JOBBER_KEY", "JOBBER_CA"):
            env.pop(name, None)
        env.update(remote or {})
        self.log_path = home / "server.log"
        args = [str(JUPYTER_SERVER), "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={home}"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> LabServer:
        """Return once the server answers; raise with its log if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if requests.get(f"{self.url}/jobber/api/identity", headers=self.auth, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"jupyter server did not answer within {timeout} s:\n{self.log()}")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True, raw: bytes | None = None) -> requests.Response:
        """A request to ``/jobber/api{path}`` (with the token unless ``auth`` is False)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        return requests.request(method, f"{self.url}/jobber/api{path}", data=data, headers=self.auth if auth else {},
                                timeout=30)

    async def socket(self, path: str, *, auth: bool = True) -> Any:
        """A WebSocket to ``/jobber/api{path}``."""
        url = f"ws://127.0.0.1:{self.port}/jobber/api{path}"
        return await websocket_connect(HTTPRequest(url, headers=self.auth if auth else {}))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._home.cleanup()


async def receive(ws: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The next message of ``ws``, as JSON; AssertionError after ``timeout`` or on close."""
    message = await asyncio.wait_for(ws.read_message(), timeout)
    assert message is not None, "the socket closed"
    return json.loads(message)


async def receive_until(ws: Any, predicate: Any, timeout: float = 30.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Messages of ``ws`` until one satisfies ``predicate``: that one, and all seen."""
    seen = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"no such message within {timeout} s; saw {[m.get('type') for m in seen]}: {seen[-3:]}")
        message = await receive(ws, left)
        seen.append(message)
        if predicate(message):
            return message, seen


async def close(ws: Any, timeout: float = 10.0) -> None:
    """Close ``ws`` and wait for the server's answer to the close (its ``on_close`` has run)."""
    ws.close()
    deadline = asyncio.get_running_loop().time() + timeout
    while await asyncio.wait_for(ws.read_message(), max(0.1, deadline - asyncio.get_running_loop().time())) is not None:
        pass
