"""Job files that jobber did not write (a FIFO, a link to a device, a spec of the wrong types),
met by the `jobber` command line as a user runs it: it answers with a sentence, never hangs
and never prints a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from jobber import JobError
from jobber._jobs.spec import JobSpec

# Each case must also fail without the fix: a FIFO or /dev/zero held the reader forever.
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "jobber", "certs", "init-demo", str(root)],
                   capture_output=True, text=True, check=True)
    return root


@pytest.fixture
def jobber(demo, jobs_dir):
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "JOBBER_ROOT": str(demo), "JOBBER_CERT": str(demo / "client.pem"),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        # The timeout is the guard: a reader held by a FIFO fails the test rather than hang it.
        return subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    return run


@pytest.fixture
def planted(jobber, jobs_dir):
    """A directory for job 7 beside a real job's (job 1), for the test to fill."""
    made = jobber("run", "--", "true")
    assert made.returncode == 0, made.stderr
    [owner] = [path for path in jobs_dir.iterdir() if (path / "1").is_dir()]
    (owner / "7").mkdir()
    yield owner / "7"
    shutil.rmtree(owner / "7")  # before the jobs directory's clean-up, which would read it


def _spec(**fields) -> str:
    return json.dumps({"command": "true", "limits": {}, "options": {"backend": "local"}, **fields})


@pytest.mark.parametrize("name", ["spec.json", "status.json"])
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "directory"])
def test_a_file_that_is_no_file_is_named_and_nothing_hangs(jobber, planted, name, kind):
    if name == "status.json":
        (planted / "spec.json").write_text(_spec())
    path = planted / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    status = jobber("status", "7")
    assert status.returncode != 0 and "Traceback" not in status.stderr, status.stderr
    assert f"unreadable {name} {path}: " in status.stderr, status.stderr
    assert ("symbolic link" if kind.startswith("link") else "not a regular file") in status.stderr
    listed = jobber("ls")  # job 1 listed; job 7 skipped, and said why
    assert "Traceback" not in listed.stderr and f"unreadable {name} {path}: " in listed.stderr, listed.stderr
    assert listed.returncode == 1 and listed.stdout.splitlines()[1].split()[0] == "1", listed.stdout


BAD_SPECS = [
    ({"limits": 5}, "'limits' is 5, not an object"),
    ({"command": 7}, "'command' is 7, not text"),
    ({"label": [1]}, r"'label' is \[1\], not text"),
    ({"options": "local"}, "'options' is 'local', not an object"),
    ({"env": "x"}, "'env' is 'x', not an object"),
    ({"after": [1]}, "'after' is .*, not a list of"),
    ({"retry_on": [5]}, "'retry_on' is .*, not a list of endings"),
    ({"timeout": "90"}, "'timeout' is '90', not a number"),
    ({"notify": "yes"}, "'notify' is 'yes', not true or false"),
    ({"gpu_devices": "0"}, "'gpu_devices' is '0', not a list"),
]


@pytest.mark.parametrize(("fields", "why"), BAD_SPECS)
def test_a_spec_of_the_wrong_types_is_a_job_error_naming_the_field(fields, why):
    with pytest.raises(JobError, match=f"its field {why}"):
        JobSpec.from_json(json.loads(_spec(**fields)))


def test_a_spec_of_nulls_and_the_right_types_still_reads():
    spec = JobSpec.from_json(json.loads(_spec(label=None, timeout=90, notify=True, after=[[1, "ok"]],
                                              retry_on="failed", gpu_devices=[0])))
    assert spec.after == ((1, "ok"),) and spec.retry_on == ("failed",) and spec.timeout == 90


@pytest.mark.parametrize(("fields", "why"), BAD_SPECS[:3])
def test_jobber_status_says_which_file_and_field(jobber, planted, fields, why):
    (planted / "spec.json").write_text(_spec(**fields))
    status = jobber("status", "7")
    assert status.returncode != 0 and "Traceback" not in status.stderr, status.stderr
    assert f"unreadable spec.json {planted / 'spec.json'}: its field " in status.stderr, status.stderr
    listed = jobber("ls")
    assert "Traceback" not in listed.stderr and "its field " in listed.stderr, listed.stderr
