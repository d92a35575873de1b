"""The one reader of jobber's JSON files and its one policy (``jobber._files.read_json``)."""

from __future__ import annotations

import json

import pytest

from jobber import JobError
from jobber._backends.local import lanes, retrying
from jobber._files import read_json, write_atomic


class TestReadJson:
    def test_an_object(self, tmp_path):
        write_atomic(tmp_path / "status.json", json.dumps({"state": "running"}).encode())
        assert read_json(tmp_path / "status.json", "status.json") == {"state": "running"}

    def test_missing_is_none(self, tmp_path):
        assert read_json(tmp_path / "status.json", "status.json") is None

    @pytest.mark.parametrize(("content", "why"), [
        (b'{"state": "runn', "Unterminated string"),  # torn
        (b"", "Expecting value"),
        (b"\xff\xfe garbage", "invalid|Expecting"),
        (b'["state", "running"]', "not a JSON object"),
        (b"null", "not a JSON object"),
    ])
    def test_damaged_is_an_error_that_names_the_file(self, tmp_path, content, why):
        path = tmp_path / "status.json"
        path.write_bytes(content)
        with pytest.raises(JobError, match=rf"^unreadable status\.json {path}: .*({why})"):
            read_json(path, "status.json")

    def test_unreadable_is_an_error_that_names_the_file(self, tmp_path):
        (tmp_path / "spec.json").mkdir()  # no regular file: refused before any read
        with pytest.raises(JobError, match=r"unreadable spec .*spec\.json: not a regular file"):
            read_json(tmp_path / "spec.json", "spec")


class TestCallersThatGoOnWithoutTheFile:
    def test_a_damaged_admission_entry_reads_as_gone(self, tmp_path):
        (tmp_path / "7").write_bytes(b'{"queue": ')
        assert lanes.read_entry(tmp_path / "7") is None
        (tmp_path / "8").write_bytes(b"[]")
        assert lanes.read_entry(tmp_path / "8") is None

    @pytest.mark.parametrize("damaged", ["spec.json", retrying.ATTEMPT])
    def test_a_damaged_spec_or_attempt_means_no_retry(self, tmp_path, damaged):
        spec = {"command": "false", "limits": {}, "options": {}, "retries": 2, "retry_on": ["failed"]}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        (tmp_path / damaged).write_bytes(b"{torn")
        final = {"state": "failed", "exit_code": 1, "signal": None}
        assert retrying.hand_over(str(tmp_path), final) is None  # returned: a retry would exec run_next_attempt.py
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"spec.json", damaged})
