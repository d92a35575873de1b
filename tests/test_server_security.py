"""Who gets in, and what they can touch, tested for real over loopback TLS.

- Refused: TLS 1.2, no client certificate, a foreign CA, expired or not yet valid
  certificates, a forged issuer (the pool CA's name, another key), and more.
- Accepted: CA-issued certificates (version 1 from the everyday openssl recipe too), a
  pinned self-signed certificate, a chain whose intermediate the client sends.
- For every certificate of that set, the TLS handshake's verdict equals
  ``Certificate.from_pem``'s on what the client presented.
- Tenant isolation: certificate B cannot list, read, follow, wait for, start or stop A's
  jobs, and A's job ids answer B exactly as ids that do not exist.
- Pool edits apply without a restart; load: 100 followers and 50 starts at once.
- Pinned means pinned: a pinned CA:TRUE certificate (`openssl req -x509`) connects as
  itself, and a leaf it signed is refused on every request (403; the handshake cannot
  refuse it); in a CA file (``*.ca.pem``) the same certificate issues identities.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509

import jobber
from certfactory import EXPIRED, NOT_YET_VALID, SERVER_AUTH, CertFactory, Issued, require_openssl
from jobber import Certificate, CertificateError, JobNotFound
from serve_for_notebooks import Api, ServerProcess


@pytest.fixture(scope="module")
def matrix(pki) -> dict[str, tuple[Issued, bool, bool | None]]:
    """name -> (certificate, send its chain, expected verdict or None for "whatever OpenSSL says").

    The pool of ``pki.root`` gets the CAs and pinned certificates these need.
    """
    f: CertFactory = pki.factory
    ca = pki.ca
    # The cases the openssl command line makes are left out on a host without it (they skip).
    v1_root = f.openssl_v1_leaf("openssl v1 root", issuer=None) if shutil.which("openssl") else None
    pinned = f.leaf("pinned self-signed")
    pinned_expired = f.leaf("pinned but expired", valid=EXPIRED)
    old_ca = f.ca("expired CA", valid=EXPIRED)
    root2 = f.ca("root with intermediates")
    intermediate = f.ca("intermediate", issuer=root2)
    other = f.ca("foreign CA")
    pss_ca = f.ca("RSA-PSS CA", key="rsa2048", rsa_pss=True)
    for n, cert in enumerate((v1_root, pinned, pinned_expired, old_ca, root2, pss_ca)):
        if cert is None:
            continue
        # A version-1 root looks like a pinned self-signed certificate: a CA file makes it a CA.
        suffix = ".ca.pem" if cert is v1_root else ".pem"
        (pki.root / "pool" / f"matrix-{n}{suffix}").write_bytes(cert.cert_pem)
    openssl_made = {} if v1_root is None else {
        "openssl-v1-leaf-of-v3-ca": (f.openssl_v1_leaf("bob", issuer=ca), True, True),
        "openssl-v1-leaf-of-v1-root": (f.openssl_v1_leaf("bert", issuer=v1_root), True, True),
    }
    return {
        **openssl_made,
        "ca-issued": (f.leaf("alice", issuer=ca), True, True),
        "pinned-self-signed": (pinned, True, True),
        "critical-san-like-trustme": (f.leaf("carol", issuer=ca, san=[x509.DNSName("carol.example")], critical_san=True), True, True),
        "no-eku-no-key-usage": (f.leaf("dan", issuer=ca, eku=None, usage=False), True, True),
        "intermediate-sent": (f.leaf("erin", issuer=intermediate), True, True),
        "intermediate-not-sent": (f.leaf("frank", issuer=intermediate), False, False),
        "self-signed-not-in-pool": (f.leaf("grace"), True, False),
        "foreign-ca": (f.leaf("mallory", issuer=other), True, False),
        "expired": (f.leaf("old", issuer=ca, valid=EXPIRED), True, False),
        "not-yet-valid": (f.leaf("early", issuer=ca, valid=NOT_YET_VALID), True, False),
        "forged-issuer": (f.leaf("eve", issuer=f.impostor(ca)), True, False),
        "issued-by-expired-ca": (f.leaf("heidi", issuer=old_ca), True, False),
        "pinned-but-expired": (pinned_expired, True, False),
        "server-auth-only": (f.leaf("ivan", issuer=ca, eku=(SERVER_AUTH,)), True, False),
        "rsa-1024": (f.leaf("judy", issuer=ca, key="rsa1024"), True, False),
        "ed25519-key": (f.leaf("ken", issuer=ca, key="ed25519"), True, True),
        "p384-key-of-rsa-pss-ca": (f.leaf("leo", issuer=pss_ca, key="p384", rsa_pss=True), True, None),
        "the-ca-itself": (ca, True, None),
    }


@pytest.fixture(scope="module")
def server(matrix, server):
    """conftest's server, started once the matrix's CAs and pinned certificates are in the pool."""
    return server


def tls_verdict(server: ServerProcess, cert: Path | None, key: Path | None, ca: Path,
                maximum: ssl.TLSVersion | None = None) -> tuple[bool, str]:
    """Did the server take this client (answer HTTP at all)? And what it said."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the server judge weak keys, not us
    context.load_verify_locations(str(ca))
    if maximum is not None:
        context.maximum_version = maximum
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3: the server judges the client certificate after the client's
                # handshake is done, so a refusal shows on the first read.
                tls.sendall(b"GET /v1/identity HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as err:
        return False, f"{type(err).__name__}: {err}"
    if not data:
        return False, "closed without a word"
    return True, data.split(b"\r\n", 1)[0].decode()


def from_pem_verdict(issued: Issued, send_chain: bool, root: Path) -> tuple[bool, str]:
    pem = issued.fullchain_pem if send_chain else issued.cert_pem
    try:
        return True, Certificate.from_pem(pem, root).hash()
    except CertificateError as err:
        return False, str(err)


class TestProtocol:
    def test_tls_1_2_is_refused(self, pki, server):
        cert, key = pki.client()
        accepted, detail = tls_verdict(server, cert, key, pki.server_ca, maximum=ssl.TLSVersion.TLSv1_2)
        assert not accepted
        assert "VERSION" in detail.upper() or "PROTOCOL" in detail.upper(), detail

    def test_tls_1_2_is_refused_to_openssl_s_client(self, pki, server):
        require_openssl()
        cert, key = pki.client()
        result = subprocess.run(
            ["openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{server.port}", "-cert", str(cert),
             "-key", str(key), "-CAfile", str(pki.server_ca)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "alert protocol version" in result.stderr or "no protocols available" in result.stderr, result.stderr

    def test_tls_1_3_with_openssl_s_client_works(self, pki, server):
        require_openssl()
        cert, key = pki.client()
        result = subprocess.run(
            ["openssl", "s_client", "-tls1_3", "-connect", f"127.0.0.1:{server.port}", "-cert", str(cert),
             "-key", str(key), "-CAfile", str(pki.server_ca), "-quiet"],
            input="GET /v1/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            capture_output=True, text=True, timeout=30)
        assert "HTTP/1.1 200 OK" in result.stdout, result.stderr

    def test_no_client_certificate_is_refused(self, pki, server):
        accepted, detail = tls_verdict(server, None, None, pki.server_ca)
        assert not accepted
        assert "CERTIFICATE_REQUIRED" in detail.upper().replace(" ", "_"), detail

    def test_no_client_certificate_is_refused_to_curl(self, pki, server):
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        result = subprocess.run(["curl", "-sS", "--cacert", str(pki.server_ca), f"{server.url}/v1/jobs"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0 and result.stdout == ""


class TestCertificates:
    @pytest.mark.parametrize("name", [
        "ca-issued", "openssl-v1-leaf-of-v3-ca", "openssl-v1-leaf-of-v1-root", "pinned-self-signed",
        "critical-san-like-trustme", "no-eku-no-key-usage", "intermediate-sent", "intermediate-not-sent",
        "self-signed-not-in-pool", "foreign-ca", "expired", "not-yet-valid", "forged-issuer",
        "issued-by-expired-ca", "pinned-but-expired", "server-auth-only", "rsa-1024", "ed25519-key", "p384-key-of-rsa-pss-ca",
        "the-ca-itself",
    ])
    def test_tls_and_from_pem_agree(self, name, matrix, pki, server, tmp_path):
        if name not in matrix:
            require_openssl()  # the case is made by the openssl command line
        issued, send_chain, expected = matrix[name]
        cert, key = issued.write(tmp_path, "client", chain=send_chain)
        accepted, detail = tls_verdict(server, cert, key, pki.server_ca)
        valid, why = from_pem_verdict(issued, send_chain, pki.root)
        assert accepted == valid, f"TLS: {detail}; from_pem: {why}"
        if expected is not None:
            assert accepted is expected, detail
        if accepted:
            assert detail == "HTTP/1.1 200 OK"  # and the request-level check agreed too

    def test_the_identity_is_the_leaf_hash(self, matrix, pki, server, tmp_path):
        issued, _chain, _expected = matrix["intermediate-sent"]
        cert, key = issued.write(tmp_path, "client")
        identity = Api(server.url, cert, key, pki.server_ca)("GET", "/v1/identity").json()
        assert identity["hash"] == Certificate.from_pem(issued.fullchain_pem, pki.root).hash()
        assert identity["subject"] == "CN=erin"

    def test_a_refused_client_gets_a_clear_error(self, matrix, pki, server, tmp_path):
        cert, key = matrix["expired"][0].write(tmp_path, "client")
        with pytest.raises(jobber.JobberError, match="does not accept this certificate .*: the certificate "
                                                     r"\(or its CA\) has expired \(TLS alert"):
            jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca))


class TestTenantIsolation:
    @pytest.fixture
    def tenants(self, pki, server):
        a = Api(server.url, *pki.client("tenant-a"), pki.server_ca)
        b = Api(server.url, *pki.client("tenant-b"), pki.server_ca)
        job = a("POST", "/v1/jobs", {"command": "echo secret; sleep 60"}).json()
        yield a, b, job["id"]
        a("POST", f"/v1/jobs/{job['id']}/stop", {"grace": 0})

    def test_b_does_not_see_a_jobs(self, tenants):
        a, b, job_id = tenants
        assert [job["id"] for job in a("GET", "/v1/jobs").json()["jobs"]] == [job_id]
        assert b("GET", "/v1/jobs").json() == {"jobs": []}

    @pytest.mark.parametrize(("method", "action", "body"), [
        ("GET", "", None),
        ("GET", "?wait=1", None),
        ("GET", "/log", None),
        ("GET", "/log?tail=10", None),
        ("GET", "/log?follow=1", None),
        ("POST", "/start", None),
        ("POST", "/stop", {"grace": 0}),
    ])
    def test_a_jobs_answer_b_like_jobs_that_do_not_exist(self, tenants, method, action, body):
        a, b, job_id = tenants
        missing = job_id + 1  # nobody's: A has one job, B none
        assert len(str(missing)) == len(str(job_id))  # so the bodies are as long
        theirs = b(method, f"/v1/jobs/{job_id}{action}", body)
        nobodys = b(method, f"/v1/jobs/{missing}{action}", body)
        assert theirs.status == nobodys.status == 404
        assert theirs.body == nobodys.body.replace(str(missing).encode(), str(job_id).encode())
        assert sorted(theirs.headers.keys()) == sorted(nobodys.headers.keys())
        assert a("GET", f"/v1/jobs/{job_id}").json()["status"]["state"] == "running"  # untouched

    def test_b_cannot_read_a_log_through_the_client(self, tenants, pki, server):
        _a, _b, job_id = tenants
        cert, key = pki.client("tenant-c")
        with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca)) as c:
            with pytest.raises(JobNotFound):
                c.get_job(job_id)


class TestPoolEdits:
    def test_added_and_removed_certificates_apply_without_restart(self, pki, tmp_path):
        root = tmp_path / "root"
        shutil.copytree(pki.root, root)
        factory = CertFactory(tmp_path / "certs")
        new_ca = factory.ca("new CA")
        cert, key = factory.leaf("newcomer", issuer=new_ca).write(tmp_path)
        with ServerProcess(pki.server_cert, pki.server_key, root, tmp_path / "jobs") as server:
            assert not tls_verdict(server, cert, key, pki.server_ca)[0]
            (root / "pool" / "new.pem").write_bytes(new_ca.cert_pem)
            assert tls_verdict(server, cert, key, pki.server_ca)[0]
            kept = Api(server.url, cert, key, pki.server_ca).connection()
            kept.request("GET", "/v1/jobs")
            assert kept.getresponse().read() == b'{"jobs": []}'
            (root / "pool" / "new.pem").unlink()
            # A connection made before the removal is judged again at its next request...
            kept.request("GET", "/v1/jobs")
            refused = kept.getresponse()
            assert refused.status == 403
            error = json.loads(refused.read())["error"]
            assert "does not accept this certificate" in error and str(root) not in error
            kept.close()
            # ...and new connections are refused by TLS itself.
            assert not tls_verdict(server, cert, key, pki.server_ca)[0]


@pytest.fixture(scope="module")
def pinned_pki(pki, tmp_path_factory):
    """(factory, root, pinned certificates by name, a server of that root); none is in a CA file."""
    base = tmp_path_factory.mktemp("pinned")
    factory = CertFactory(base / "certs")
    me = factory.openssl_req_x509("pinned req-x509")
    strict = factory.leaf("pinned CA:FALSE")  # what CertFactory and trustme make
    sub = factory.ca("pinned intermediate", issuer=pki.ca, key_usage=False)  # CA:TRUE, not self-signed
    root = factory.root(pki.ca, me, strict, sub)  # 00.pem .. 03.pem, none a CA file
    with ServerProcess(pki.server_cert, pki.server_key, root, base / "jobs") as server:
        yield factory, root, {"me": me, "strict": strict, "sub": sub}, server


class TestPinnedMeansPinned:
    """The audit's case: a pinned certificate made by `openssl req -x509` has CA:TRUE."""

    PINNED = ("was issued by CN=pinned req-x509, which is pinned in the pool as a client certificate, "
              "not trusted as a CA: to trust it as a CA, put it in <path> in a file named ca.pem or NAME.ca.pem")

    def test_it_connects_as_itself(self, pinned_pki, pki, tmp_path):
        _factory, root, pinned, server = pinned_pki
        cert, key = pinned["me"].write(tmp_path, "me")
        assert tls_verdict(server, cert, key, pki.server_ca) == (True, "HTTP/1.1 200 OK")
        identity = Api(server.url, cert, key, pki.server_ca)("GET", "/v1/identity").json()
        assert identity["hash"] == Certificate.from_pem(pinned["me"].cert_pem, root).hash()

    @pytest.mark.parametrize("send_chain", [False, True])
    def test_a_leaf_it_signed_is_refused(self, pinned_pki, pki, tmp_path, send_chain):
        factory, root, pinned, server = pinned_pki
        mallory = factory.leaf("mallory", issuer=pinned["me"])
        if send_chain:
            mallory.chain = [pinned["me"].cert]
        cert, key = mallory.write(tmp_path, "mallory", chain=send_chain)
        valid, why = from_pem_verdict(mallory, send_chain, root)
        assert not valid and self.PINNED.replace("<path>", str(root / "pool")) in why
        # OpenSSL cannot keep a self-signed CA:TRUE trust anchor from issuing, so the
        # handshake passes, and the identity check refuses every request.
        assert tls_verdict(server, cert, key, pki.server_ca) == (True, "HTTP/1.1 403 Forbidden")
        refused = Api(server.url, cert, key, pki.server_ca)("GET", "/v1/jobs")
        assert refused.status == 403
        error = refused.json()
        assert error["type"] == "CertificateError" and self.PINNED in error["error"], error
        assert str(root) not in error["error"]
        with pytest.raises(CertificateError, match="does not accept this certificate: the certificate CN=mallory "
                                                   "was issued by CN=pinned req-x509, which is pinned"):
            jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca))

    def test_the_server_warns_of_it(self, pinned_pki):
        *_, server = pinned_pki
        log = server.log()
        assert ("01.pem: CN=pinned req-x509 is pinned (its file is not named ca.pem or NAME.ca.pem) but has "
                "basicConstraints CA:TRUE, so the TLS handshake also takes it as a CA") in log
        assert "CN=pinned CA:FALSE" not in log and "CN=pinned intermediate" not in log

    @pytest.mark.parametrize("issuer", ["strict", "sub"])
    def test_leaves_of_other_pinned_certificates_are_refused_by_the_handshake(self, pinned_pki, pki, tmp_path,
                                                                              issuer):
        # CA:FALSE fails OpenSSL's CA check; a pinned CA that is not self-signed is not in the trust store.
        factory, root, pinned, server = pinned_pki
        mallory = factory.leaf("mallory", issuer=pinned[issuer])
        cert, key = mallory.write(tmp_path, "mallory", chain=False)
        accepted, detail = tls_verdict(server, cert, key, pki.server_ca)
        assert not accepted, detail
        valid, why = from_pem_verdict(mallory, False, root)
        assert not valid, why

    def test_in_a_ca_file_it_issues_identities(self, pinned_pki, pki, tmp_path):
        factory, pinned_root, pinned, _server = pinned_pki
        root = tmp_path / "root"
        shutil.copytree(pinned_root, root)
        mallory = factory.leaf("mallory", issuer=pinned["me"])
        cert, key = mallory.write(tmp_path, "mallory", chain=False)
        me_cert, me_key = pinned["me"].write(tmp_path, "me")
        warning = "CN=pinned req-x509 is pinned (its file is not named ca.pem or NAME.ca.pem)"
        with ServerProcess(pki.server_cert, pki.server_key, root, tmp_path / "jobs") as server:
            assert tls_verdict(server, cert, key, pki.server_ca) == (True, "HTTP/1.1 403 Forbidden")
            assert server.log().count(warning) == 1
            (root / "pool" / "01.pem").rename(root / "pool" / "pinned.ca.pem")  # applies at once
            assert tls_verdict(server, cert, key, pki.server_ca) == (True, "HTTP/1.1 200 OK")
            assert from_pem_verdict(mallory, False, root)[0]
            assert tls_verdict(server, me_cert, me_key, pki.server_ca) == (True, "HTTP/1.1 200 OK")
            assert "the pool changed" in server.log() and server.log().count(warning) == 1


class TestLoad:
    FOLLOWERS = 100
    STARTS = 50

    def test_followers_and_starts_at_once(self, pki, server):
        cert, key = pki.client("loaded")
        session = jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=60)
        talker = session.new_job(
            "i=0; while [ $i -lt 300 ]; do echo \"line $i $(printf '%080d' $i)\"; i=$((i+1)); sleep 0.01; done")
        received: list[bytes] = [b""] * self.FOLLOWERS

        def follow(n: int) -> None:
            received[n] = b"".join(talker.follow())

        def start_one(n: int) -> int:
            job = session.new_job(f"echo started $JOBBER_JOB_ID {n}")
            job.start()
            return job.id

        with ThreadPoolExecutor(self.FOLLOWERS + self.STARTS) as pool:
            followers = [pool.submit(follow, n) for n in range(self.FOLLOWERS)]
            talker.start()
            starts = [pool.submit(start_one, n) for n in range(self.STARTS)]
            # The server answers a status request while it streams to 100 and starts 50.
            assert session.get_job(talker.id).status().state in ("running", "exited")
            started_ids = [future.result(timeout=120) for future in starts]
            for future in followers:
                future.result(timeout=120)
        whole = bytearray(1 << 20)
        size = talker.tail(whole)
        assert size == sum(len(f"line {i} {i:080d}\n") for i in range(300))
        assert all(data == whole[:size] for data in received), "a follower missed bytes"
        assert len(set(started_ids)) == self.STARTS
        for job_id in started_ids:
            job = session.get_job(job_id)
            assert job.wait(60).state == "exited"
            buf = bytearray(100)
            assert bytes(buf[: job.tail(buf)]).startswith(f"started {job_id} ".encode())
