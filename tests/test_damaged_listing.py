"""One damaged job directory among healthy ones: every listing (`jobber ls`, the library's,
a jobber server's ``GET /v1/jobs``) shows the healthy jobs and names the damaged one with why,
instead of stopping at the first job it cannot read.

The jobs are real: made and run through the library, then damaged on disk as a crash, a
full disk or a stray tool could (a spec.json that is not JSON, fields of the wrong types, a
FIFO where a file should be, a status.json of garbage, a directory replaced by a file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobber import JobError
from jobber._select_flags import DEFAULT_LAST, listing
from jobber.cli import main

pytestmark = pytest.mark.timeout(180)


def _spec_not_json(path: Path) -> None:
    (path / "spec.json").write_text("{not json")


def _spec_of_wrong_types(path: Path) -> None:
    spec = json.loads((path / "spec.json").read_text())
    (path / "spec.json").write_text(json.dumps({**spec, "command": 7}))


def _spec_a_fifo(path: Path) -> None:
    os.unlink(path / "spec.json")
    os.mkfifo(path / "spec.json")


def _status_garbage(path: Path) -> None:
    (path / "status.json").write_text("\x00garbage")


def _status_of_wrong_types(path: Path) -> None:
    status = json.loads((path / "status.json").read_text())
    (path / "status.json").write_text(json.dumps({**status, "exit_code": "zero", "started_at": "noon"}))


def _status_without_state(path: Path) -> None:
    status = json.loads((path / "status.json").read_text())
    (path / "status.json").write_text(json.dumps({k: v for k, v in status.items() if k != "state"}))


def _directory_a_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a job's directory")


# Each damage, and what the reason must say (the file, and what is wrong with it).
DAMAGES = [
    (_spec_not_json, r"unreadable spec\.json .*/spec\.json: Expecting property name"),
    (_spec_of_wrong_types, r"unreadable spec\.json .*: its field 'command' is 7, not text"),
    (_spec_a_fifo, r"unreadable spec\.json .*: not a regular file"),
    (_status_garbage, r"unreadable status\.json .*/status\.json: "),
    (_status_of_wrong_types, r"unreadable status\.json .*: its field '(exit_code|started_at)' is '(zero|noon)', not a"),
    (_status_without_state, r"unreadable status\.json .*: its field 'state' is missing, not one of created, "),
    (_directory_a_file, r"unreadable s(pec|tatus)\.json .*: Not a directory"),
]


def _made_and_damaged(session, directory: Path | None = None, damages=DAMAGES) -> tuple[list[int], dict[int, str]]:
    """Real jobs, run to their end, then all but the first and the last damaged: (the
    healthy ids, damaged id -> the reason's pattern). ``directory``: where the session's
    jobs live (a jobber server's), when its jobs do not say."""
    jobs = [session.new_job(f"echo {n}", label="kept") for n in range(len(damages) + 2)]
    for job in jobs:
        job.start()
    for job in jobs:
        assert job.wait(60).state == "exited"
    reasons = {}
    for job, (damage, reason) in zip(jobs[1:], damages):
        damage(job.path if directory is None else directory / str(job.id))
        reasons[job.id] = reason
    return [jobs[0].id, jobs[-1].id], reasons


def _cleaned(directory: Path, damaged: dict[int, str]) -> None:
    """Remove the damaged jobs (ended before they were damaged): the clean-up reads every job."""
    for job_id in damaged:
        path = directory / str(job_id)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@pytest.fixture
def damaged(identity):
    healthy, reasons = _made_and_damaged(identity)
    yield identity, healthy, reasons
    _cleaned(identity.get_jobs()[0].path.parent, reasons)


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"label": None, "state": None, "last": DEFAULT_LAST, "all": False, **given})


class TestLibraryListing:
    def test_get_jobs_lists_every_job_and_status_says_why_for_a_damaged_one(self, damaged):
        cert, healthy, reasons = damaged
        jobs = cert.get_jobs()
        assert [job.id for job in jobs] == sorted([*healthy, *reasons])
        for job in jobs:
            if job.id in healthy:
                assert job.status().state == "exited"
                continue
            with pytest.raises(JobError, match=reasons[job.id]) as caught:  # never a KeyError or TypeError
                job.status()
            assert caught.value.job_id == job.id

    def test_get_jobs_by_label_leaves_a_damaged_spec_out(self, damaged):
        cert, healthy, reasons = damaged
        spec_read = [job_id for job_id, reason in reasons.items() if reason.startswith(r"unreadable status")]
        # The healthy jobs, and the damaged ones whose spec still reads (their status is damaged).
        assert [job.id for job in cert.get_jobs(label="kept")] == sorted([*healthy, *spec_read])
        assert cert.find_job("kept").id == healthy[-1]

    def test_queues_count_past_a_damaged_job(self, damaged):
        cert, _healthy, _reasons = damaged
        cert.set_queue("solo", parallel=1)
        solo = cert.queues()["solo"]
        assert (solo["parallel"], solo["running"], solo["waiting"]) == (1, 0, 0)

    def test_listing_shows_the_healthy_jobs_and_names_each_damaged_one(self, damaged):
        cert, healthy, reasons = damaged
        for state in (None, ("exited",)):
            rows, hidden = listing(cert, _args(state=state))
            assert [job.id for job, _ in rows] == healthy and hidden == 0
            assert list(rows.skipped) == sorted(reasons)
            for job_id, why in rows.skipped.items():
                assert not why.startswith(f"job {job_id}:"), why  # `jobber ls` names the job itself
                assert re.search(reasons[job_id], why), why


def _jobber(*args: str) -> subprocess.CompletedProcess:
    # The timeout is the guard: a reader held by the FIFO fails the test rather than hang it.
    return subprocess.run([sys.executable, "-m", "jobber", *args], capture_output=True, text=True, timeout=60)


class TestCli:
    def test_ls_lists_the_healthy_jobs_reports_each_skipped_one_and_exits_1(self, damaged):
        _cert, healthy, reasons = damaged
        listed = _jobber("ls")
        assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
        shown = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
        assert shown == [str(job_id) for job_id in healthy], listed.stdout
        lines = listed.stderr.splitlines()
        assert len(lines) == len(reasons), listed.stderr
        for line, (job_id, reason) in zip(lines, sorted(reasons.items())):
            assert line.startswith(f"jobber: job {job_id} skipped: unreadable "), line
            assert re.search(reason, line), line

    def test_the_skipped_lines_come_after_the_table_on_one_terminal(self, damaged):
        _cert, healthy, reasons = damaged
        listed = subprocess.run([sys.executable, "-m", "jobber", "ls"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=60)
        lines = listed.stdout.splitlines()
        assert lines[0].startswith("ID ") and [line.split()[0] for line in lines[1:len(healthy) + 1]] == \
            [str(job_id) for job_id in healthy], listed.stdout
        assert all(" skipped: " in line for line in lines[len(healthy) + 1:]) and len(lines) == 1 + len(healthy) + len(reasons)

    def test_ls_json_is_the_healthy_jobs_and_the_reasons_go_to_stderr(self, damaged):
        _cert, healthy, reasons = damaged
        listed = _jobber("ls", "--json")
        assert listed.returncode == 1, listed.stderr
        assert [row["id"] for row in json.loads(listed.stdout)] == healthy
        assert [line.split()[2] for line in listed.stderr.splitlines()] == [str(i) for i in sorted(reasons)]

    def test_ls_with_every_job_damaged_says_so_and_not_no_jobs_yet(self, damaged):
        cert, healthy, reasons = damaged
        for job_id in healthy:
            _spec_not_json(cert.get_job(job_id).path)
            reasons[job_id] = ""  # removed at the end with the others
        listed = _jobber("ls", "--state", "exited")
        assert listed.returncode == 1 and listed.stdout == "", listed.stdout
        assert "no jobs" not in listed.stderr and listed.stderr.count(" skipped: ") == len(DAMAGES) + 2

    def test_ls_of_healthy_jobs_still_exits_0(self, identity):
        identity.new_job("true").start()
        listed = _jobber("ls")
        assert listed.returncode == 0 and listed.stderr == "", listed.stderr


class TestServerListing:
    @pytest.fixture
    def served(self, server, session):
        # A job directory replaced by a file is no job to the server (GET /v1/jobs/{id}: 404).
        directory = Path(server.jobs_dir) / session.hash()
        healthy, reasons = _made_and_damaged(session, directory, [d for d in DAMAGES if d[0] is not _directory_a_file])
        yield healthy, reasons
        _cleaned(directory, reasons)

    def test_get_v1_jobs_lists_the_healthy_jobs_and_names_the_skipped_ones(self, served, api):
        healthy, reasons = served
        page = api("GET", "/v1/jobs")
        assert page.status == 200, page.body
        body = json.loads(page.body)
        assert [job["id"] for job in body["jobs"]] == healthy
        assert [entry["id"] for entry in body["skipped"]] == sorted(reasons)
        for entry in body["skipped"]:
            assert "unreadable " in entry["error"] and "/tmp" not in entry["error"], entry  # no server paths
        small = json.loads(api("GET", "/v1/jobs?limit=1").body)  # pages still count healthy jobs
        assert [job["id"] for job in small["jobs"]] == healthy[:1] and small["next_after"] == healthy[0]

    def test_get_one_damaged_job_is_a_409_saying_why(self, served, api):
        _healthy, reasons = served
        for job_id in reasons:
            reply = api("GET", f"/v1/jobs/{job_id}")
            assert reply.status == 409, (job_id, reply.status, reply.body)
            body = json.loads(reply.body)
            assert body["type"] == "JobError" and body["job_id"] == job_id and "unreadable " in body["error"]

    def test_jobber_ls_on_the_server_reports_the_skipped_jobs(self, served, server, pki, tenant, capsys):
        healthy, reasons = served
        cert, key = tenant
        code = main(["--cert", str(cert), "--key", str(key), "--ca", str(pki.server_ca), "--server", server.url, "ls"])
        out, err = capsys.readouterr()
        assert code == 1, err
        assert [line.split()[0] for line in out.splitlines()[1:]] == [str(i) for i in healthy], out
        assert [line.split()[2] for line in err.splitlines()] == [str(i) for i in sorted(reasons)], err
        assert all("skipped: unreadable " in line for line in err.splitlines()), err
