"""Requests whose HTTP framing is broken, sent as raw bytes over a real mTLS connection.

Each is answered 400 with the API's JSON error body (``{"error", "type"}``, what is wrong
and what to send instead), the connection is closed, and the server's log gets one line
for it: no ERROR, no traceback (aiohttp answers these itself, as text/plain, and logs a
traceback each: ``jobber/_server/framing.py``). Covered: a header and a request line over
8190 bytes, more than 100 headers, bad chunking (in the first bytes, and in a body the
app is already reading), Content-Length beside Transfer-Encoding, a request line that is
not HTTP, a header name with a space, a Content-Length that is not a number. Then the
server still answers, and a request just inside the limits is served.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from polling import poll
from serve_for_notebooks import Api

HEAD = b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
CHUNKED = b"POST /v1/jobs HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

CASES = [
    pytest.param(b"GET /v1/identity HTTP/1.1\r\n" + HEAD + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", b"",
                 "a request line or header is over 8190 bytes", id="header-over-8190-bytes"),
    pytest.param(b"GET /v1/identity?" + b"a" * 9000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", b"",
                 "a request line or header is over 8190 bytes", id="request-line-over-8190-bytes"),
    pytest.param(b"GET /v1/identity HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % n for n in range(101)) + b"\r\n", b"",
                 "more than 100 headers", id="101-headers"),
    pytest.param(CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", b"", "the chunked body is malformed", id="bad-chunk-size"),
    pytest.param(CHUNKED + b"2\r\n{}\r\n", b"zz\r\n0\r\n\r\n", "the chunked body is malformed",
                 id="bad-chunk-in-a-body-being-read"),
    pytest.param(b"POST /v1/jobs HTTP/1.1\r\n" + HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                 b"", "Transfer-Encoding", id="content-length-and-chunked"),
    pytest.param(b"G@T /v1/identity HTTP/1.1\r\n" + HEAD + b"\r\n", b"", "not an HTTP/1.1 request", id="bad-method"),
    pytest.param(b"GET /v1/identity HTTP/1.1\r\n" + HEAD + b"Bad Header: 1\r\n\r\n", b"", "send a well-formed",
                 id="space-in-a-header-name"),
    pytest.param(b"POST /v1/jobs HTTP/1.1\r\n" + HEAD + b"Content-Length: abc\r\n\r\n{}", b"", "Content-Length",
                 id="content-length-not-a-number"),
]


def exchange(api: Api, first: bytes, later: bytes = b"") -> bytes:
    """Send ``first`` (then, once the server has it, ``later``); everything until the server closes."""
    raw = socket.create_connection((api.host, api.port), timeout=30)
    with api.context.wrap_socket(raw, server_hostname=api.host) as tls:
        tls.sendall(first)
        if later:
            time.sleep(0.3)  # so that the app is reading the body when the rest arrives
            tls.sendall(later)
        received = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                return received
            received += chunk
        return received


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def api(server, pki) -> Api:
    return Api(server.url, *pki.client("framing"), pki.server_ca)


class TestMalformedFraming:
    @pytest.mark.parametrize(("first", "later", "says"), CASES)
    def test_answered_400_as_json_with_one_log_line(self, server, api, first, later, says):
        before = len(server.log())
        status, headers, body = parse(exchange(api, first, later))  # returns once the server closed it
        assert status == 400, (status, body)
        assert headers["content-type"].startswith("application/json"), headers
        error = json.loads(body)
        assert error["type"] == "JobberError" and error["error"].startswith("malformed HTTP request: "), error
        assert says in error["error"], error
        # One line: the refusal (a request aiohttp could not parse), or the request's own
        # line with its 400 (a body that broke while the app read it).
        assert poll(lambda: server.log()[before:].strip())
        logged = [line for line in server.log()[before:].splitlines() if line.strip()]
        assert len(logged) == 1, logged
        assert ("WARNING jobber.server: 127.0.0.1: malformed HTTP request: " in logged[0]
                or '"POST /v1/jobs" 400 ' in logged[0]), logged
        assert "Traceback" not in server.log() and " ERROR " not in server.log(), server.log()[-3000:]

    def test_the_server_still_answers_and_serves_a_request_at_the_limits(self, api):
        headers = {f"X-H{n}": "1" for n in range(100 - 4)}  # with Host, Accept-Encoding, Content-Type, Content-Length
        headers["X-Big"] = "a" * 8000
        assert api("GET", "/v1/identity", headers=headers).status == 200
        job = api("POST", "/v1/jobs", {"command": "true", "start": False})
        assert job.status == 201, job.body
        assert api("DELETE", f"/v1/jobs/{job.json()['id']}").status == 200
