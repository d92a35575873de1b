"""The job lifecycle on a real server over mTLS on loopback, raw and through ``jobber.connect``:
the options of ``new_job`` (label, timeout, log_max, retries, retry_on, oom_growth) and
their 400s with the library's own messages, the label filter and lookup, a timeout that
ends a job ``timed-out``, re-runs (``rerun_of``), removes, prunes with each filter, the
attempts of a job (one, and three with ``retries=2``), another tenant kept out of all of
it, and the kept-jobs quota freed by a prune. What any session does alike (labels, a
timeout, re-runs, prunes, attempts, a follower across attempts) is in tests/contract/.
"""

from __future__ import annotations

import pytest

import jobber
from jobber import JobError, JobNotFound, JobStatus, LimitError
from jobber._jobs.options import check_lifecycle
from jobber._server.openapi import openapi_document
from serve_for_notebooks import Api

STATUS_FIELDS = ("timeout", "attempt", "retries", "log_dropped_bytes", "cpu_throttled_seconds", "cpu_pressure",
                 "memory_pressure", "io_pressure")


@pytest.fixture
def other(pki, server):
    """Another tenant, as raw calls."""
    return Api(server.url, *pki.client("mallory"), pki.server_ca)


def create(api: Api, **fields) -> dict:
    reply = api("POST", "/v1/jobs", {"start": False, **fields})
    assert reply.status == 201, reply.body
    return reply.json()


def ended(api: Api, command: str, **fields) -> int:
    """A job run to its end; its id."""
    job_id = create(api, command=command, start=True, **fields)["id"]
    reply = api("GET", f"/v1/jobs/{job_id}?wait=30")
    assert reply.json()["status"]["state"] not in ("created", "running"), reply.json()
    return job_id


def ids(api: Api) -> list[int]:
    return [job["id"] for job in api("GET", "/v1/jobs").json()["jobs"]]


def local_error(**option) -> JobError:
    """What ``new_job`` raises locally for this option."""
    with pytest.raises(JobError) as caught:
        check_lifecycle(**option)
    return caught.value


BAD_OPTIONS = [
    {"label": "two words"}, {"label": "123"}, {"label": 7}, {"label": "x" * 65},
    {"timeout": "soon"}, {"timeout": 0}, {"timeout": -5}, {"timeout": "0s"}, {"timeout": True},
    {"log_max": "100"}, {"log_max": "lots"}, {"log_max": -1}, {"log_max": 1.5},
    {"retries": -1}, {"retries": 101}, {"retries": True}, {"retries": "3"},
    {"retry_on": ["nope"]}, {"retry_on": []}, {"retry_on": "running"},
    {"oom_growth": 0.5}, {"oom_growth": 100}, {"oom_growth": True}, {"oom_growth": "lots"},
]


class TestCreate:
    def test_every_option_is_kept_and_shown(self, api):
        job = create(api, command="true", label="train", timeout="2h", log_max="200M", retries=2,
                     retry_on=["failed", "oom-killed"], oom_growth=1.5)
        assert {k: job[k] for k in ("label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "rerun_of")} == {
            "label": "train", "timeout": 7200.0, "log_max": 200 << 20, "retries": 2,
            "retry_on": ["failed", "oom-killed"], "oom_growth": 1.5, "rerun_of": None}
        assert job["status"]["timeout"] == 7200.0
        assert set(STATUS_FIELDS) <= set(job["status"])
        assert job["status"]["attempt"] == 1
        assert api("GET", f"/v1/jobs/{job['id']}").json()["label"] == "train"

    def test_a_job_without_options_shows_the_defaults(self, api):
        job = create(api, command="true")
        assert {k: job[k] for k in ("label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "rerun_of")} == {
            "label": None, "timeout": None, "log_max": None, "retries": 0, "retry_on": ["failed"], "oom_growth": None,
            "rerun_of": None}

    @pytest.mark.parametrize(("given", "seconds"), [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("30m", 1800.0), ("1d", 86400.0)])
    def test_timeout_is_a_number_or_a_duration(self, api, given, seconds):
        assert create(api, command="true", timeout=given)["timeout"] == seconds

    @pytest.mark.parametrize(("given", "size"), [(4096, 4096), ("1M", 1 << 20), (0, 0), ("0", 0)])
    def test_log_max_is_bytes_or_a_size(self, api, given, size):
        assert create(api, command="true", log_max=given)["log_max"] == size

    def test_null_means_the_default(self, api):
        job = create(api, command="true", label=None, timeout=None, log_max=None, retries=None, retry_on=None,
                     oom_growth=None)
        assert (job["label"], job["timeout"], job["retries"], job["retry_on"]) == (None, None, 0, ["failed"])

    @pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda option: f"{next(iter(option))}={option[next(iter(option))]!r}")
    def test_a_bad_option_is_a_400_with_the_local_message_and_nothing_is_made(self, api, option):
        reply = api("POST", "/v1/jobs", {"command": "true", **option})
        assert reply.status == 400, reply.body
        expected = local_error(**option)
        assert reply.json() == {"error": str(expected), "type": type(expected).__name__}
        assert ids(api) == []

    @pytest.mark.parametrize(("option", "message"), [
        ({"retry_on": 5}, "retry_on 5: give a state or a list of states among failed, oom-killed, timed-out"),
        ({"retry_on": {"failed": 1}}, "retry_on {\"failed\": 1}: give a state"),
        ({"timeout": 10**400}, "timeout: 1000"),
        ({"rerun_of": 0}, "rerun_of must be the id of one of your jobs"),
        ({"rerun_of": "1"}, "rerun_of must be the id of one of your jobs"),
    ])
    def test_values_no_python_caller_could_give_are_400s_too(self, api, option, message):
        reply = api("POST", "/v1/jobs", {"command": "true", **option})
        assert reply.status == 400, reply.body
        assert reply.json()["error"].startswith(message)
        assert ids(api) == []

    @pytest.mark.parametrize("options", [
        {"oom_growth": 2}, {"retries": 0, "oom_growth": 2}, {"retries": 2, "retry_on": ["failed"], "oom_growth": 2},
        {"retries": 2, "retry_on": "timed-out", "oom_growth": [1.5, "1G"]},
    ])
    def test_oom_growth_that_could_never_apply_is_a_400_with_the_local_message(self, api, session, options):
        reply = api("POST", "/v1/jobs", {"command": "true", **options})
        expected = local_error(**options)
        assert "oom_growth" in str(expected)
        assert (reply.status, reply.json()) == (400, {"error": str(expected), "type": "JobError"})
        with pytest.raises(JobError) as caught:
            session.new_job("true", **options)
        assert str(caught.value) == str(expected)
        assert ids(api) == []

    @pytest.mark.parametrize("retry_on", [{}, {"retry_on": None}])
    def test_oom_growth_adds_oom_kills_to_a_retry_on_not_given(self, api, session, retry_on):
        job = create(api, command="true", retries=2, oom_growth=2, **retry_on)
        assert job["retry_on"] == ["failed", "oom-killed"]
        assert job["status"]["retry_on"] == ["failed", "oom-killed"]
        assert session.new_job("true", retries=2, oom_growth=2).status().retry_on == ("failed", "oom-killed")

    def test_a_rerun_given_oom_growth_retries_oom_kills(self, api):
        original = create(api, command="true", retries=2)
        job = create(api, rerun_of=original["id"], oom_growth=2)
        assert job["retry_on"] == ["failed", "oom-killed"]
        chosen = create(api, command="true", retries=2, retry_on=["timed-out"])
        reply = api("POST", "/v1/jobs", {"rerun_of": chosen["id"], "oom_growth": 2})
        assert reply.status == 400 and "retry_on timed-out does not retry OOM kills" in reply.json()["error"]

    def test_unknown_fields_are_refused_naming_the_known_ones(self, api):
        reply = api("POST", "/v1/jobs", {"command": "true", "colour": "blue"})
        assert reply.status == 400
        assert reply.json()["error"].startswith("unknown field(s) 'colour'; known fields: after, command, env, label, limits,")
        assert ids(api) == []

    def test_a_command_is_needed_unless_it_is_a_rerun(self, api):
        reply = api("POST", "/v1/jobs", {"label": "x"})
        assert (reply.status, reply.json()["error"].split(":")[0]) == (400, "missing field(s) command")

    def test_the_openapi_document_names_every_field(self):
        schemas = openapi_document("x")["components"]["schemas"]
        assert {"label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "rerun_of"} <= set(
            schemas["NewJob"]["properties"])
        assert {"label", "timeout", "retries", "rerun_of", "attempts"} <= set(schemas["Job"]["properties"])
        assert set(STATUS_FIELDS) <= set(schemas["JobStatus"]["properties"])
        assert set(JobStatus.__dataclass_fields__) <= set(schemas["JobStatus"]["properties"])


class TestRemoteOptions:
    def test_new_job_takes_every_option(self, session):
        job = session.new_job("true", label="train", timeout="30m", log_max="1M", retries=1,
                              retry_on=["timed-out", "oom-killed"], oom_growth=2)
        assert (job.label, job.rerun_of) == ("train", None)
        status = job.status()
        assert (status.timeout, status.attempt, status.log_dropped_bytes) == (1800.0, 1, 0)
        same = session.get_job(job.id)
        assert same.label == "train" and same == job

    @pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda option: f"{next(iter(option))}={option[next(iter(option))]!r}")
    def test_a_bad_option_raises_what_it_raises_locally(self, session, option):
        expected = local_error(**option)
        with pytest.raises(type(expected)) as caught:
            session.new_job("true", **option)
        assert str(caught.value) == str(expected)
        assert session.get_jobs() == []

    def test_the_status_fields_come_through(self, session, api):
        job = session.new_job("true", timeout=60)
        job.start()
        status = job.wait(30)
        raw = api("GET", f"/v1/jobs/{job.id}").json()["status"]
        assert {name: getattr(status, name) for name in STATUS_FIELDS} == {name: raw[name] for name in STATUS_FIELDS}
        assert (status.backend, status.attempt, status.timeout) == ("remote", 1, 60.0)


class TestLabels:
    def test_listing_filters_by_label_and_a_label_finds_the_newest(self, session, api):
        first = session.new_job("echo 1", label="sweep")
        session.new_job("echo other", label="other")
        newest = session.new_job("echo 2", label="sweep")
        assert session.get_jobs(label="sweep") == [first, newest]
        assert [job["id"] for job in api("GET", "/v1/jobs?label=sweep").json()["jobs"]] == [first.id, newest.id]
        assert session.find_job("sweep") == newest
        assert session.find_job(str(first.id)) == first
        assert session.get_jobs(label="nothing") == []

    def test_labels_page_with_the_listing(self, api):
        made = [create(api, command="true", label="paged" if n % 2 else "skip")["id"] for n in range(6)]
        first = api("GET", "/v1/jobs?label=paged&limit=2").json()
        rest = api("GET", f"/v1/jobs?label=paged&limit=2&after={first['next_after']}").json()
        assert [job["id"] for job in first["jobs"] + rest["jobs"]] == made[1::2]


class TestRerun:
    def test_raw_rerun_starts_unless_told_not_to(self, api):
        original = create(api, command="echo hi", label="raw")
        reply = api("POST", "/v1/jobs", {"rerun_of": original["id"]})
        assert reply.status == 201, reply.body
        job = reply.json()
        assert (job["rerun_of"], job["label"], job["command"]) == (original["id"], "raw", "echo hi")
        assert api("GET", f"/v1/jobs/{job['id']}?wait=30").json()["status"]["state"] == "exited"

    def test_bad_overrides_are_refused_before_anything_is_made(self, session, api):
        original = session.new_job("true")
        for overrides, error, match in [({"timeout": "soon"}, JobError, "not a duration"),
                                        ({"log_max": "lots"}, LimitError, "not a size"),
                                        ({"cwd": "/"}, JobError, "chosen by its operator"),
                                        ({"partition": "x"}, JobError, "partition cannot be changed"),
                                        ({"command": ""}, JobError, "non-empty")]:
            with pytest.raises(error, match=match):
                original.rerun(**overrides)
        reply = api("POST", "/v1/jobs", {"rerun_of": original.id, "retries": 500})
        assert (reply.status, reply.json()["error"]) == (400, str(local_error(retries=500)))
        assert [job.id for job in session.get_jobs()] == [original.id]

    def test_rerun_of_a_job_that_does_not_exist_is_not_found(self, api):
        reply = api("POST", "/v1/jobs", {"rerun_of": 999})
        assert (reply.status, reply.json()["type"]) == (404, "JobNotFound")
        assert ids(api) == []


class TestRemove:
    def test_a_running_job_is_not_removed(self, session, api, gate):
        job = session.new_job(f"while [ ! -e {gate} ]; do sleep 0.05; done")
        job.start()
        with pytest.raises(JobError, match="stop it first"):
            job.remove()
        reply = api("DELETE", f"/v1/jobs/{job.id}")
        assert (reply.status, reply.json()["type"]) == (409, "JobError")
        gate.touch()
        assert job.wait(30).state == "exited"
        job.remove()
        with pytest.raises(JobNotFound):
            session.get_job(job.id)


class TestPrune:
    def test_raw_prune(self, api):
        job = ended(api, "true")
        reply = api("POST", "/v1/jobs:prune", {"dry_run": True})
        assert (reply.status, reply.json()) == (200, {"removed": [job], "dry_run": True, "kept": []})
        reply = api("POST", "/v1/jobs:prune")
        assert (reply.status, reply.json()) == (200, {"removed": [job], "dry_run": False, "kept": []})
        assert ids(api) == []

    def test_raw_prune_by_label_and_ids_says_what_it_kept(self, api, gate):
        first, second = ended(api, "true"), create(api, command="true", label="mine")["id"]
        running = create(api, command=f"while [ ! -e {gate} ]; do sleep 0.05; done", label="mine", start=True)["id"]
        reply = api("POST", "/v1/jobs:prune", {"label": "mine", "dry_run": True})
        assert reply.status == 200 and reply.json()["removed"] == []
        assert [item["id"] for item in reply.json()["kept"]] == [second, running]
        assert reply.json()["kept"][1]["reason"] == "running"
        assert reply.json()["kept"][0]["reason"].startswith("never started, created ")
        reply = api("POST", "/v1/jobs:prune", {"ids": f"{first}-{running}", "older_than": 0.000001})
        assert reply.json()["removed"] == [first, second] and [k["id"] for k in reply.json()["kept"]] == [running]
        gate.touch()
        assert api("GET", f"/v1/jobs/{running}?wait=30").json()["status"]["state"] == "exited"
        assert ids(api) == [running]

    @pytest.mark.parametrize(("ids_field", "message"), [
        ("40-12", "ids: 40-12 runs backwards: write the lower id first, e.g. 12-40"),
        ("all", "ids: 'all' is not a job id or a range of them"),
        ([1, True], "ids: True is not a job id"),
        ({"from": 1}, "ids must be text such as"),
        (",".join(str(n) for n in range(1, 1000, 2)), "ids: more than 200 separate ids or ranges"),
    ])
    def test_a_malformed_selection_is_a_400(self, api, ids_field, message):
        job = ended(api, "true")
        reply = api("POST", "/v1/jobs:prune", {"ids": ids_field})
        assert (reply.status, reply.json()["type"]) == (400, "JobError")
        assert reply.json()["error"].startswith(message)
        reply = api("POST", "/v1/jobs:prune", {"label": "not a label!"})
        assert reply.status == 400 and "is not a label" in reply.json()["error"]
        assert ids(api) == [job]

    @pytest.mark.parametrize(("arguments", "message"), [
        ({"states": ["running"]}, "states ['running'] are not final states"),
        ({"states": "created"}, "states ['created'] are not final states"),
        ({"keep_last": -1}, "keep_last must be a whole number >= 0"),
        ({"older_than": "soon"}, "older_than: 'soon' is not a duration"),
    ])
    def test_bad_arguments_are_refused_like_locally(self, session, api, arguments, message):
        job = ended(api, "true")
        with pytest.raises(JobError, match=message.replace("[", r"\[").replace("]", r"\]")):
            session.prune(**arguments)
        reply = api("POST", "/v1/jobs:prune", arguments)
        assert (reply.status, reply.json()["type"]) == (400, "JobError")
        assert reply.json()["error"].startswith(message)
        assert ids(api) == [job]

    def test_unknown_fields_are_refused(self, api):
        reply = api("POST", "/v1/jobs:prune", {"everything": True})
        assert reply.status == 400 and "unknown field(s) 'everything'" in reply.json()["error"]


class TestAttempts:
    def test_a_job_without_retries_has_one_attempt(self, session, api):
        job = session.new_job("exit 4")
        job.start()
        status = job.wait(30)
        attempts = job.attempts
        assert attempts == [status] and job.attempt == 1
        assert (attempts[0].attempt, attempts[0].exit_code, attempts[0].backend) == (1, 4, "remote")
        raw = api("GET", f"/v1/jobs/{job.id}?attempts=1").json()
        assert raw["attempts"] == [raw["status"]]
        assert "attempts" not in api("GET", f"/v1/jobs/{job.id}").json()

    def test_a_retried_job_has_every_attempt(self, session, api):
        job = session.new_job("echo try; exit 3", retries=2)
        job.start()
        status = job.wait(60)
        assert (status.state, status.attempt, job.attempt) == ("failed", 3, 3)
        attempts = job.attempts
        assert [(a.attempt, a.state, a.exit_code, a.backend) for a in attempts] == [
            (1, "failed", 3, "remote"), (2, "failed", 3, "remote"), (3, "failed", 3, "remote")]
        assert attempts[-1] == status
        assert len(api("GET", f"/v1/jobs/{job.id}?attempts=1").json()["attempts"]) == 3


class TestTenancy:
    def test_another_tenant_cannot_see_rerun_remove_or_prune_your_jobs(self, api, other):
        mine = ended(api, "true", label="secret")
        made = create(api, command="true", label="secret")["id"]
        never = api("GET", "/v1/jobs/999999").json()["error"].replace("999999", "{}")
        for method, path, body in [("GET", f"/v1/jobs/{mine}?attempts=1", None),
                                   ("POST", "/v1/jobs", {"rerun_of": mine}),
                                   ("POST", "/v1/jobs", {"rerun_of": made, "command": "id"}),
                                   ("DELETE", f"/v1/jobs/{mine}", None),
                                   ("DELETE", f"/v1/jobs/{made}", None)]:
            reply = other(method, path, body)
            assert reply.status == 404, (method, path, reply.body)
            job_id = body["rerun_of"] if body else int(path.split("/")[3].split("?")[0])
            assert reply.json()["error"] == never.format(job_id), (method, path)
        assert other("GET", "/v1/jobs?label=secret").json() == {"jobs": []}
        assert other("POST", "/v1/jobs:prune", {}).json() == {"removed": [], "dry_run": False, "kept": []}
        assert ids(other) == []  # nothing was made for the other tenant either
        assert ids(api) == [mine, made]  # and nothing of ours was touched

    def test_a_prune_of_one_tenant_leaves_the_others(self, api, other):
        mine = ended(api, "true")
        theirs = ended(other, "true")
        assert other("POST", "/v1/jobs:prune", {}).json()["removed"] == [theirs]
        assert ids(api) == [mine]


CAPPED_ARGS = ["--max-jobs", "3"]
"""``capped`` (tests/conftest.py): a server that keeps at most 3 jobs per certificate."""


class TestKeptJobsQuota:
    def test_a_prune_frees_room_at_once(self, capped, pki):
        api = Api(capped.url, *pki.client("keeper"), pki.server_ca)
        made = [ended(api, "true") for _ in range(3)]
        full = api("POST", "/v1/jobs", {"command": "true", "start": False})
        assert (full.status, full.json()["quota"], full.json()["limit"]) == (429, "max_jobs", 3)
        assert "prune" in full.json()["error"]
        refused = api("POST", "/v1/jobs", {"rerun_of": made[0], "start": False})
        assert refused.status == 429  # a re-run is a job kept too
        assert api("POST", "/v1/jobs:prune", {"keep_last": 1}).json()["removed"] == made[:2]
        assert api("POST", "/v1/jobs", {"command": "true", "start": False}).status == 201
        assert api("POST", "/v1/jobs", {"rerun_of": made[2], "start": False}).status == 201
        assert api("POST", "/v1/jobs", {"command": "true", "start": False}).status == 429

    def test_a_remote_prune_frees_room_for_new_job(self, capped, pki):
        cert, key = pki.client("remote-keeper")
        with jobber.connect(capped.url, cert=str(cert), key=str(key), ca=str(pki.server_ca), timeout=10) as remote:
            for _ in range(3):
                job = remote.new_job("true")
                job.start()
                job.wait(30)
            with pytest.raises(JobError, match="max_jobs 3"):
                remote.new_job("true")
            assert len(remote.prune()) == 3
            assert remote.new_job("true").status().state == "created"
