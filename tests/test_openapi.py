"""The OpenAPI document's job schemas are the job spec's fields (``jobber._server.job_schema``).

A field added to ``JobSpec`` must be either shown in a job's JSON (``JobSpec.api_fields``,
and then the ``Job`` and ``NewJob`` schemas and the fields ``POST /v1/jobs`` accepts list
it) or named here as one that stays on the server: these tests fail until one is done.
"""

from __future__ import annotations

import dataclasses
import json

import jsonschema

from jobber import JobStatus, Limits
from jobber._jobs.spec import LIFECYCLE_OPTIONS, JobSpec
from jobber._server.job_schema import JOB_FIELDS
from jobber._server.lifecycle_fields import NEW_JOB_FIELDS
from jobber._server.openapi import openapi_document

# The lifecycle options as new_job, the CLI, the magics and the server name them: written out
# on purpose, the one place besides the spec module, to hold the derivation to them.
LIFECYCLE = ("label", "timeout", "log_max", "retries", "retry_on", "oom_growth", "notify")
# What a job's spec holds that its JSON on a server never shows: the backend's options and
# the run context stay on the server, and extra (extra_limits) is what a newer jobber wrote.
SERVER_SIDE = {"options", "cwd", "created_at", "env", "user", "sandbox", "gpu_devices", "slurm_files", "slurm_name",
               "slurm_array_jobs", "extra", "extra_limits"}
WIRE_NAMES = {"extra_env": "env"}  # a spec field whose name in a job's JSON differs
# Known to the server only as part of oom_growth ([factor, cap]): shown, never given alone.
SHOWN_ONLY = {"oom_growth_max"}
A_SPEC = {"command": "sleep 1", "limits": {"cpu": 0.5, "memory": 67108864, "pids": 20, "io_read_bps": None,
                                            "io_write_bps": None, "require_isolation": False, "gpus": 1},
          "options": {"backend": "local"}, "label": "train", "timeout": 90.0, "log_max": 1048576, "retries": 2,
          "retry_on": ["failed", "oom-killed"], "oom_growth": 1.5, "oom_growth_max": 1073741824, "queue": "gpu",
          "after": [[1, "ok"], [1, "any"]], "extra_env": {"A": "1"}, "cwd": "/tmp", "rerun_of": 1,
          "created_at": 1796558752.166449}


def schemas() -> dict:
    return openapi_document("x")["components"]["schemas"]


def wire_fields() -> set[str]:
    """The spec's fields in a job's JSON on a server."""
    return {"command", "limits", *JobSpec("x").api_fields()}


class TestJobSchemaIsTheSpec:
    def test_every_spec_field_is_in_a_jobs_json_or_stays_on_the_server(self):
        names = {field.name for field in dataclasses.fields(JobSpec)}
        assert {WIRE_NAMES.get(name, name) for name in names - SERVER_SIDE} == wire_fields()
        assert set(JOB_FIELDS) == wire_fields()

    def test_the_job_schema_lists_the_spec_fields(self):
        job = schemas()["Job"]
        assert set(job["properties"]) == wire_fields() | {"id", "status", "attempts"}
        assert set(job["required"]) == set(job["properties"]) - {"attempts"} - SHOWN_ONLY

    def test_a_new_job_takes_the_spec_fields_and_start(self):
        new_job = set(schemas()["NewJob"]["properties"])
        assert new_job == (wire_fields() - SHOWN_ONLY) | {"start"}
        assert NEW_JOB_FIELDS == new_job  # what the server accepts is what the document says

    def test_the_lifecycle_options_are_in_both(self):
        assert LIFECYCLE_OPTIONS == LIFECYCLE
        assert set(LIFECYCLE) <= set(schemas()["NewJob"]["properties"]) & set(schemas()["Job"]["properties"])

    def test_limits_requested_are_the_limits_fields(self):
        names = {field.name for field in dataclasses.fields(Limits)}
        assert set(schemas()["LimitsRequest"]["properties"]) == names
        assert set(schemas()["Limits"]["properties"]) == names

    def test_a_jobs_json_is_valid_against_its_schema(self):
        spec = JobSpec.from_json(A_SPEC)
        for shown in (spec, JobSpec("true")):
            data = {"id": 2, "command": shown.command, "limits": shown.limits.to_dict(), **shown.api_fields(),
                    "status": JobStatus(state="created", limits=shown.limits).to_dict()}
            document = openapi_document("x")
            jsonschema.Draft202012Validator({**document, "$ref": "#/components/schemas/Job"}).validate(
                json.loads(json.dumps(data)))

    def test_a_schema_refuses_a_job_json_that_breaks_it(self):
        data = {"id": 2, "command": "x", "limits": Limits().to_dict(), **JobSpec("x").api_fields(),
                "status": {"state": "created"}}
        data["retry_on"] = "failed"  # a job's JSON always has a list
        validator = jsonschema.Draft202012Validator({**openapi_document("x"), "$ref": "#/components/schemas/Job"})
        assert [error.path[0] for error in validator.iter_errors(data)] == ["retry_on"]
