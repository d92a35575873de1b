"""Fuzz the server from its own OpenAPI document (schemathesis, positive and negative data).

Every generated request goes over real mTLS to a server subprocess. Required: no 5xx,
responses that match the document (status codes, content types, headers, bodies), and
no crash (the server still answers at the end, and its log has no "bug:" line). Schema-
invalid requests must be refused with a 4xx.

Two operations block by design: a follow streams until its job ends, and ``wait`` holds
the answer up to 60 s. Against them a short client timeout is allowed to expire (the
server frees the request when the client goes), and nothing else may time out.
"""

from __future__ import annotations

import os
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from jobber import __version__
from jobber._server.openapi import openapi_document
from serve_for_notebooks import Api

EXAMPLES_PER_OPERATION = 28
_BLOCKING_TIMEOUT_S = 0.5

schema = schemathesis.openapi.from_dict(openapi_document(__version__))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES_PER_OPERATION)

# Not positive_data_acceptance: OpenAPI cannot say that offset and tail exclude each
# other, so a schema-valid request with both gets its (documented) 400.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, unsupported_method, allow_header_conformance]


@pytest.fixture(scope="module")
def server(pki, server):
    """conftest's server, checked before it stops."""
    yield server
    # Still alive and answering after everything the fuzzer threw at it.
    cert, key = pki.client("survivor")
    assert Api(server.url, cert, key, pki.server_ca)("GET", "/v1/jobs").status == 200
    assert server.proc.poll() is None


@pytest.fixture(scope="module")
def fuzz_session(pki, server):
    cert, key = pki.client("fuzzer")
    with requests.Session() as session:
        session.cert = (str(cert), str(key))
        session.verify = str(pki.server_ca)
        session.trust_env = False  # or $REQUESTS_CA_BUNDLE would replace verify
        # A few jobs to aim at: ended ones, so that follows of them end too.
        for command in ("echo one", "printf 'two\\n'; exit 2", "true"):
            reply = session.post(f"{server.url}/v1/jobs", json={"command": command}, timeout=30)
            assert reply.status_code == 201, reply.text
            session.get(f"{server.url}/v1/jobs/{reply.json()['id']}?wait=30", timeout=60)
        yield session


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api(case, pki, server, fuzz_session):
    blocking = case.operation.path in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/log") and case.method == "GET"
    try:
        response = case.call(base_url=server.url, session=fuzz_session, verify=str(pki.server_ca),
                             timeout=_BLOCKING_TIMEOUT_S if blocking else 30)
    except requests.exceptions.ReadTimeout:
        if blocking:
            return  # a follow of a running job, or a long wait: blocking is the contract
        raise
    case.validate_response(response, checks=CHECKS)


def test_the_fuzz_is_bounded():
    """A few hundred requests at most, so the run stays well under a minute."""
    operations = sum(len(methods) for methods in openapi_document(__version__)["paths"].values())
    assert operations * EXAMPLES_PER_OPERATION <= 400


def test_jobs_the_fuzzer_started_are_stopped(server, fuzz_session):
    """Random commands ran as jobs; none may outlive the module (checked again at teardown)."""
    jobs = fuzz_session.get(f"{server.url}/v1/jobs", timeout=30).json()["jobs"]
    for job in jobs:
        if job["status"]["state"] == "running":
            fuzz_session.post(f"{server.url}/v1/jobs/{job['id']}/stop", json={"grace": 0}, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {job["status"]["state"] for job in fuzz_session.get(f"{server.url}/v1/jobs", timeout=30).json()["jobs"]}
        if "running" not in states:
            break
        time.sleep(0.1)
    assert "running" not in states
    assert os.path.isdir(server.jobs_dir)
