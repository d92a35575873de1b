"""The job spec: every ``spec.json`` jobber has written reads back, and writes back the same."""

from __future__ import annotations

import json

import pytest

from jobber import JobError, LimitError, Limits
from jobber._jobs.spec import LIFECYCLE_OPTIONS, JobSpec

_NO_LIMITS = ('{"cpu": null, "memory": null, "pids": null, "io_read_bps": null, "io_write_bps": null, '
              '"require_isolation": false}')
_TAG = "a" * 64
# CREATED[0:5] and STARTED[0] are what the code before the typed spec (commit 9edeb82) wrote,
# byte for byte (new_job, rerun, start; PATH shortened); the others follow that code's writes
# by hand: limits with GPUs, start(user=...) then an admission with GPUs, a server's sandbox,
# and the first job of a Slurm array.
CREATED = [
    '{"command": "echo hi", "limits": ' + _NO_LIMITS + ', "options": {"backend": "local"}, '
    '"created_at": 1796558751.821818}',
    '{"command": "sleep 1", "limits": {"cpu": 0.5, "memory": 67108864, "pids": 20, "io_read_bps": null, '
    '"io_write_bps": null, "require_isolation": false}, "options": {"backend": "local"}, "label": "train", '
    '"timeout": 90.0, "log_max": 1048576, "retries": 2, "retry_on": ["failed", "oom-killed"], "oom_growth": 1.5, '
    '"oom_growth_max": 1073741824, "queue": "gpu", "after": [[1, "ok"], [1, "any"]], "extra_env": {"A": "1"}, '
    '"cwd": "/tmp", "created_at": 1796558752.166449}',
    '{"command": "sleep 1", "limits": {"cpu": 0.5, "memory": 67108864, "pids": 20, "io_read_bps": null, '
    '"io_write_bps": null, "require_isolation": false}, "options": {"backend": "local"}, "label": "b", '
    '"timeout": 90.0, "log_max": 1048576, "retries": 2, "retry_on": ["failed", "oom-killed"], "oom_growth": 1.5, '
    '"oom_growth_max": 1073741824, "extra_env": {"A": "1"}, "cwd": "/tmp", "rerun_of": 2, '
    '"created_at": 1796558752.166952}',
    '{"command": "true", "limits": ' + _NO_LIMITS + ', "options": {"backend": "slurm", "partition": "debug"}, '
    '"label": "s", "timeout": 120.0, "created_at": 1796558752.2643113}',
    '{"command": "true", "limits": ' + _NO_LIMITS + ', "options": {"backend": "local"}, "log_max": 0, '
    '"oom_growth": 2.0, "created_at": 1796558752.264794}',
    '{"command": "x", "limits": {"cpu": null, "memory": null, "pids": null, "io_read_bps": null, '
    '"io_write_bps": null, "require_isolation": true, "gpus": 1}, "options": {"backend": "local"}, '
    '"created_at": 1796558752.5}',
]
STARTED = [
    '{"command": "echo hi", "limits": ' + _NO_LIMITS + ', "options": {"backend": "local"}, '
    '"created_at": 1796558751.821818, "env": {"PATH": "/usr/bin:/bin", "JOBBER_JOB_ID": "1", '
    '"JOBBER_JOB_TAG": "' + _TAG + '/1"}, "cwd": "/tmp/specgen", "log_max": 1073741824}',
    '{"command": "x", "limits": ' + _NO_LIMITS + ', "options": {"backend": "local"}, "queue": "q", '
    '"cwd": "/srv", "created_at": 1.5, "env": {"PATH": "/usr/bin", "HOME": "/home/u", "USER": "u", '
    '"LOGNAME": "u", "CUDA_VISIBLE_DEVICES": "0,1", "NVIDIA_VISIBLE_DEVICES": "0,1"}, '
    '"user": {"name": "u", "uid": 2000, "gid": 2000}, "log_max": 4096, "gpu_devices": [0, 1]}',
    '{"command": "x", "limits": ' + _NO_LIMITS + ', "options": {"backend": "local"}, "created_at": 1.5, '
    '"env": {"PATH": "/usr/bin", "HOME": "/", "USER": "j", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}, "cwd": "/", '
    '"sandbox": {"clear_env": true, "umask": "077", "no_new_privs": true, "rlimits": {"RLIMIT_NOFILE": [1024, 4096]}, '
    '"private_tmp": null, "hide_pids": true}, "log_max": 1073741824}',
    '{"command": "true", "limits": ' + _NO_LIMITS + ', "options": {"backend": "slurm"}, "after": [[3, "any"]], '
    '"created_at": 1.5, "env": {"PATH": "/bin"}, "cwd": "/tmp", "slurm_files": "/tmp/j/4", '
    '"slurm_name": "jobber-sweep-4", "slurm_array_jobs": [4, 5, 6]}',
]


class TestOnDisk:
    @pytest.mark.parametrize("text", CREATED)
    def test_a_created_spec_writes_back_byte_for_byte(self, text):
        assert json.dumps(JobSpec.from_json(json.loads(text)).to_json()) == text

    @pytest.mark.parametrize("text", CREATED + STARTED)
    def test_every_spec_written_so_far_writes_back_the_same(self, text):
        data = json.loads(text)
        again = JobSpec.from_json(data).to_json()
        assert again == data
        assert JobSpec.from_json(json.loads(json.dumps(again))) == JobSpec.from_json(data)

    def test_keys_of_a_newer_jobber_survive(self):
        data = {**json.loads(CREATED[1]), "python_function": {"module": "m", "name": "f"}, "extra": [1]}
        spec = JobSpec.from_json(data)
        assert spec.extra == {"python_function": {"module": "m", "name": "f"}, "extra": [1]}
        assert spec.replace(label="c").to_json() == {**data, "label": "c"}

    def test_fields_read_typed(self):
        spec = JobSpec.from_json(json.loads(CREATED[1]))
        assert spec.limits == Limits(cpu=0.5, memory="64M", pids=20)
        assert spec.retry_on == ("failed", "oom-killed")
        assert spec.after == ((1, "ok"), (1, "any"))
        assert (spec.oom_growth, spec.oom_growth_max) == (1.5, 1 << 30)
        assert spec.extra_env == {"A": "1"}
        assert spec.backend == "local"
        started = JobSpec.from_json(json.loads(STARTED[1]))
        assert started.gpu_devices == (0, 1)
        assert started.user == {"name": "u", "uid": 2000, "gid": 2000}

    def test_defaults_live_in_the_spec(self):
        spec = JobSpec.from_json(json.loads(CREATED[0]))
        assert (spec.retries, spec.retry_on, spec.after, spec.label, spec.timeout) == (0, ("failed",), (), None, None)
        assert spec.extra_env == {} and spec.gpu_devices == () and spec.env is None

    def test_a_missing_spec_reads_as_an_empty_job(self):
        spec = JobSpec.from_json({"command": "", "limits": {}, "options": {}})
        assert (spec.command, spec.limits, spec.options, spec.backend) == ("", Limits(), {}, None)

    def test_malformed_limits_are_refused(self):
        with pytest.raises(LimitError, match="'lots' is not a size"):
            JobSpec.from_json({"command": "x", "limits": {"memory": "lots"}, "options": {}})


class TestReplace:
    def test_replace_changes_only_what_it_names(self):
        spec = JobSpec.from_json(json.loads(CREATED[1]))
        again = spec.replace(label="c", retries=0)
        assert (again.label, again.retries, again.command) == ("c", 0, spec.command)
        assert spec.label == "train"  # frozen: the original is untouched
        assert "retries" not in again.to_json()

    def test_replace_refuses_an_unknown_field(self):
        with pytest.raises(TypeError):
            JobSpec("x").replace(colour="red")

    def test_the_spec_is_frozen(self):
        with pytest.raises(AttributeError):
            JobSpec("x").label = "y"  # type: ignore[misc]


class TestApi:
    def test_api_fields_read_back(self):
        spec = JobSpec.from_json(json.loads(CREATED[1]))
        wire = {"id": 2, "command": spec.command, "limits": spec.limits.to_dict(), **spec.api_fields()}
        wire = json.loads(json.dumps(wire))
        back = JobSpec.from_api(wire)
        assert back.api_fields() == spec.api_fields()
        assert (back.command, back.limits, back.options) == (spec.command, spec.limits, {})

    def test_api_fields_of_a_bare_job(self):
        fields = JobSpec("x").api_fields()
        assert fields == {"env": {}, "label": None, "rerun_of": None, "timeout": None, "log_max": None, "retries": 0,
                          "retry_on": ["failed"], "oom_growth": None, "oom_growth_max": None, "notify": False, "queue": None,
                          "after": [], "python": None, "result_max": None}
        assert set(LIFECYCLE_OPTIONS) <= set(fields)


def test_lifecycle_defaults():
    from jobber._jobs.spec import LIFECYCLE_DEFAULTS

    assert LIFECYCLE_DEFAULTS == {"label": None, "timeout": None, "log_max": None, "retries": 0,
                                  "retry_on": ("failed",), "oom_growth": None, "notify": False}


def _without_created_at(text: str) -> str:
    data = json.loads(text)
    del data["created_at"]
    return json.dumps(data)


class TestTheStoreWritesTheSameFiles:
    """new_job and rerun write spec.json exactly as the code before the typed spec did."""

    def test_new_job_and_rerun(self, store):
        first = store.new_job("echo hi")
        assert _without_created_at((first.path / "spec.json").read_text()) == _without_created_at(CREATED[0])
        job = store.new_job("sleep 1", Limits(cpu=0.5, memory="64M", pids=20), env={"A": "1"}, cwd="/tmp",
                            label="train", timeout="90s", log_max="1M", retries=2, retry_on=["failed", "oom-killed"],
                            oom_growth=(1.5, "1G"), queue="gpu", after=[first.id, (first.id, "any")])
        assert _without_created_at((job.path / "spec.json").read_text()) == _without_created_at(CREATED[1])
        again = job.rerun(label="b")  # job 2, as in CREATED[2]
        assert _without_created_at((again.path / "spec.json").read_text()) == _without_created_at(CREATED[2])

    def test_a_slurm_job_and_a_growth_without_cap(self, store):
        slurm = store.new_job("true", backend="slurm", partition="debug", timeout=120, label="s")
        assert _without_created_at((slurm.path / "spec.json").read_text()) == _without_created_at(CREATED[3])
        # CREATED[4], a growth without retries, is read as before but no longer made: since
        # issue 21 oom_growth needs retries, and adds oom-killed to a retry_on not given.
        with pytest.raises(JobError, match="^oom_growth needs retries"):
            store.new_job("true", log_max=0, oom_growth=2)
        local = store.new_job("true", log_max=0, retries=1, oom_growth=2)
        expected = json.loads(CREATED[4])
        expected = {**{k: v for k, v in expected.items() if k != "oom_growth"}, "retries": 1,
                    "retry_on": ["failed", "oom-killed"], "oom_growth": 2.0}
        written = json.loads((local.path / "spec.json").read_text())
        del written["created_at"], expected["created_at"]
        assert list(written.items()) == list(expected.items())


class TestConstruction:
    def test_lists_become_tuples(self):
        spec = JobSpec("x", retry_on=["failed", "timed-out"], after=[[3, "ok"]], gpu_devices=[1])
        assert (spec.retry_on, spec.after, spec.gpu_devices) == (("failed", "timed-out"), ((3, "ok"),), (1,))

    def test_a_null_reads_as_the_default(self):
        spec = JobSpec.from_json({"command": "x", "limits": {}, "options": {}, "retries": None, "after": None,
                                  "retry_on": None, "extra_env": None, "label": None})
        assert (spec.retries, spec.after, spec.retry_on, spec.extra_env, spec.label) == (0, (), ("failed",), {}, None)

    def test_slurm_refuses_what_it_cannot_do(self):
        from jobber._backends import check_lifecycle_for

        check_lifecycle_for(JobSpec("x", options={"backend": "slurm"}, timeout=60.0, label="a", log_max=0))
        check_lifecycle_for(JobSpec("x", options={"backend": "local"}, retries=2, queue="q"))
        for field, value in (("retries", 1), ("oom_growth", 1.5), ("log_max", 4096), ("queue", "q")):
            with pytest.raises(JobError, match=f"^{field} is not available for Slurm jobs"):
                check_lifecycle_for(JobSpec("x", options={"backend": "slurm"}, **{field: value}))


def test_the_supervisor_does_not_load_the_spec_at_every_job_end():
    """The finisher reads the spec only once an attempt failed (retrying.py imports it then):
    a job that exits 0 is recorded without dataclasses and the limits (~20 ms)."""
    import subprocess
    import sys
    from pathlib import Path

    package_parent = Path(__file__).resolve().parent.parent
    boot = ("import sys, types; jobber = types.ModuleType('jobber'); jobber.__path__ = [sys.argv[1] + '/jobber']; "
            "sys.modules['jobber'] = jobber; import jobber._backends.local.supervisor; "
            "print(sorted(m for m in ('dataclasses', 'jobber._jobs.spec', 'jobber._limits') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", boot, str(package_parent)], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_failed_job_without_retries_is_recorded_without_loading_the_spec(tmp_path):
    """Most failed jobs have no retries: their hand-over looks at spec.json's retries and
    returns, without dataclasses and the limits."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "spec.json").write_text(json.dumps({"command": "false", "limits": {}, "options": {}}))
    package_parent = Path(__file__).resolve().parent.parent
    boot = ("import sys, types; jobber = types.ModuleType('jobber'); jobber.__path__ = [sys.argv[1] + '/jobber']; "
            "sys.modules['jobber'] = jobber; from jobber._backends.local import retrying; "
            "print(retrying.hand_over(sys.argv[2], {'state': 'failed'}), "
            "sorted(m for m in ('dataclasses', 'jobber._jobs.spec', 'jobber._limits') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", boot, str(package_parent), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None []"


class TestWhatANewerJobberWrote:
    def test_a_limit_this_version_does_not_know_is_kept_and_the_rest_reads(self):
        raw = {"command": "x", "limits": {"memory": 1 << 30, "swap": 7}, "options": {"backend": "local"}, "label": "a"}
        spec = JobSpec.from_json(raw)
        assert spec.label == "a" and spec.limits.memory == 1 << 30
        assert spec.extra_limits == {"swap": 7}
        assert spec.to_json()["limits"]["swap"] == 7  # written back as it was

    def test_a_server_s_unknown_limit_does_not_break_the_remote_job(self):
        spec = JobSpec.from_api({"command": "x", "limits": {"cpu": 1, "swap": 7}, "label": "a"})
        assert spec.limits.cpu == 1 and spec.label == "a" and spec.extra_limits == {"swap": 7}

    def test_retry_on_written_as_one_string_is_one_state(self):
        assert JobSpec.from_json({"command": "x", "retry_on": "oom-killed", "retries": 1}).retry_on == ("oom-killed",)
