"""``jobber.Session``: one protocol, documented once, that every session has.

A ``Certificate`` (each method forwarded to its ``JobStore``), the ``JobStore`` itself and
the remote session (what ``jobber.connect`` returns) each have every Session method, with
the protocol's parameters and its documentation. What each method does is tested on a
real store (test_storage, test_queues, ...) and a real server (test_client, test_server_*).
"""

from __future__ import annotations

import inspect
import pydoc

import pytest

import jobber
from jobber import Certificate, JobNotFound, Limits, Session
from jobber._backends.remote.backend import Remote
from jobber._backends.remote.session import RemoteSession
from jobber._jobs.store import JobStore

METHODS = ("new_job", "new_function_job", "executor", "get_job", "get_jobs", "find_job", "rerun", "prune", "set_queue",
           "queues", "sweep")
IMPLEMENTED_BY_THE_PROTOCOL = {"sweep", "executor"}  # the same for every session


def parameters(function) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


class TestTheProtocol:
    def test_it_declares_the_session_methods(self):
        declared = {name for name, value in vars(Session).items() if inspect.isfunction(value) and not name.startswith("_")}
        assert declared == set(METHODS)

    def test_it_is_public(self):
        assert jobber.Session is Session and "Session" in jobber.__all__

    @pytest.mark.parametrize("name", METHODS)
    def test_each_method_has_a_google_style_docstring(self, name):
        method = getattr(Session, name)
        doc = inspect.getdoc(method)
        if len(inspect.signature(method).parameters) > 1:
            assert "\nArgs:\n" in doc
        assert "\nReturns:\n" in doc


@pytest.mark.parametrize("implementation", [Certificate, JobStore, RemoteSession])
class TestEveryImplementation:
    @pytest.mark.parametrize("name", METHODS)
    def test_has_the_method_with_the_protocols_parameters(self, implementation, name):
        assert parameters(getattr(implementation, name)) == parameters(getattr(Session, name))

    @pytest.mark.parametrize("name", sorted(set(METHODS) - IMPLEMENTED_BY_THE_PROTOCOL))
    def test_implements_it_rather_than_inheriting_the_protocols_stub(self, implementation, name):
        assert inspect.getattr_static(implementation, name) is not vars(Session)[name]

    @pytest.mark.parametrize("name", METHODS)
    def test_the_method_is_documented(self, implementation, name):
        assert inspect.getdoc(getattr(implementation, name))

    def test_is_a_session(self, implementation):
        assert issubclass(implementation, Session)


class TestDocumentedOnce:
    @pytest.mark.parametrize("name", ["get_job", "get_jobs", "find_job", "prune", "set_queue", "sweep"])
    def test_the_store_and_the_remote_session_show_the_protocols_docstring(self, name):
        assert inspect.getdoc(getattr(JobStore, name)) == inspect.getdoc(getattr(RemoteSession, name)) \
            == inspect.getdoc(getattr(Session, name))

    def test_the_stores_older_name_for_find_job_is_the_same_method(self):
        assert JobStore.find is JobStore.find_job


class TestCertificate:
    """A Certificate's session methods are its JobStore's, with the protocol's help."""

    @pytest.mark.parametrize("name", METHODS)
    def test_help_and_signature_show_the_real_parameters_and_docs(self, name):
        method = getattr(Certificate, name)
        assert inspect.signature(method) == inspect.signature(getattr(Session, name))
        assert inspect.getdoc(method) == inspect.getdoc(getattr(Session, name))
        shown = pydoc.render_doc(method, renderer=pydoc.plaintext)
        assert str(inspect.signature(method)) in shown
        assert inspect.getdoc(method).splitlines()[0] in shown

    def test_new_job_shows_every_keyword(self, identity):
        names = list(inspect.signature(identity.new_job).parameters)
        assert names == ["command", "limits", "env", "cwd", "label", "timeout", "log_max", "retries", "retry_on",
                         "oom_growth", "notify", "queue", "after", "options"]

    def test_each_method_calls_its_store_with_the_arguments_given(self, monkeypatch, identity):
        calls = []

        class Recorder:
            def __getattr__(self, name):
                return lambda *args, **kwargs: calls.append((name, args, kwargs)) or name

        monkeypatch.setattr(Certificate, "_session", lambda self: Recorder())
        job = object()
        assert identity.new_job("echo hi", env={"A": "1"}, partition="debug") == "new_job"
        assert identity.get_job(7) == "get_job"
        assert identity.get_jobs(label="train") == "get_jobs"
        assert identity.find_job("train") == "find_job"
        assert identity.rerun(job, label="again") == "rerun"
        assert identity.prune(keep_last=2) == "prune"
        assert identity.set_queue("gpu", parallel=2) == "set_queue"
        assert identity.queues() == "queues"
        assert identity.sweep("echo {x}", x=[1, 2]) == "sweep"
        assert calls == [
            ("new_job", ("echo hi", None), {"env": {"A": "1"}, "partition": "debug"}),
            ("get_job", (7,), {}),
            ("get_jobs", ("train",), {}),
            ("find_job", ("train",), {}),
            ("rerun", (job,), {"label": "again"}),
            ("prune", (), {"keep_last": 2}),
            ("set_queue", ("gpu",), {"parallel": 2}),
            ("queues", (), {}),
            ("sweep", ("echo {x}",), {"x": [1, 2]}),
        ]

    def test_a_wrong_call_names_the_method(self, identity):
        with pytest.raises(TypeError, match=r"^get_job\(\): missing a required argument: 'job_id'"):
            identity.get_job()
        with pytest.raises(TypeError, match=r"^prune\(\): too many positional arguments"):
            identity.prune("7d")

    def test_on_a_real_store(self, identity):
        assert isinstance(identity, Session)
        job = identity.new_job("true", Limits(memory="64M"), label="first")
        assert identity.get_jobs() == [job] and identity.get_job(job.id) == job
        assert identity.find_job("first") == job == identity.find_job(str(job.id))
        again = identity.rerun(job, label="second")
        assert (again.rerun_of, again.label, again.limits) == (job.id, "second", Limits(memory="64M"))
        assert identity.get_jobs(label="second") == [again]
        with pytest.raises(JobNotFound, match=r"^no job is labelled 'nope' \(see `jobber ls` for ids and labels\)$"):
            identity.find_job("nope")
        assert identity.prune(dry_run=True) == []  # created, never ended: never pruned
        assert identity.set_queue("q", parallel=1)["parallel"] == 1
        assert identity.queues()["q"]["parallel"] == 1
        sweep = identity.sweep("echo {x}", x=[1, 2], start=False)
        assert [j.command for j in sweep] == ["echo 1", "echo 2"]
        assert identity.get_jobs() == [job, again, *sweep]


class TestRemoteSession:
    def test_is_a_session_for_its_jobs(self, pki, server):
        cert, key = pki.client()
        with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10) as session:
            assert isinstance(session, Session) and isinstance(session, Remote)
            job = session.new_job("true", label="remote")
            assert session.find_job("remote") == job == session.find_job(job.id)
            with pytest.raises(JobNotFound, match=f"^no job is labelled 'nope' on {session.url}$"):
                session.find_job("nope")
            assert session.rerun(job, label="again").rerun_of == job.id
            assert job.rerun(label="third").label == "third"  # through the session that made the job


def test_a_remote_session_s_timeout_can_be_set_as_before(server, tenant, pki):
    cert, key = tenant
    with jobber.connect(server.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=5) as remote:
        remote.timeout = 60
        assert remote.timeout == 60.0 and remote.transport.timeout == 60.0
