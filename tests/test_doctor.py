"""Why a job would run unconfined, as a reason code (``isolation.choose``), and the fix
``jobber doctor`` picks by that code, never by the words of the reason.

The whole report, end to end: tests/test_cli.py::TestDoctor.
"""

from __future__ import annotations

import pytest

from jobber._backends.local import cgroup_v2, isolation, unconfined
from jobber._backends.local.isolation import NO_HIERARCHY, NOT_WRITABLE, SWITCHED_OFF, Unconfined
from jobber._doctor import _confinement


class TestWhyUnconfined:
    def test_switched_off(self, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        driver, why = isolation.choose()
        assert driver is unconfined
        assert (why.code, str(why)) == (SWITCHED_OFF, "JOBBER_ISOLATION=none")

    def test_no_hierarchy(self, monkeypatch):
        monkeypatch.delenv("JOBBER_ISOLATION", raising=False)
        monkeypatch.setattr(isolation, "detect", lambda: "none")  # a host without cgroupfs
        driver, why = isolation.choose()
        assert driver is unconfined
        assert (why.code, str(why)) == (NO_HIERARCHY, "no cgroup hierarchy is mounted on this host")

    def test_not_writable(self, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "cgroup-v2")
        monkeypatch.setattr(cgroup_v2, "unavailable", lambda: "read-only file system")
        driver, why = isolation.choose()
        assert driver is unconfined
        assert (why.code, str(why)) == (NOT_WRITABLE, "no writable cgroup: read-only file system")
        assert f"not isolated: {why}" == "not isolated: no writable cgroup: read-only file system"

    def test_the_job_note_keeps_the_words(self, monkeypatch, tmp_path):
        from jobber import Limits

        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        record = isolation.prepare("owner", 1, Limits(), str(tmp_path))
        assert record["notes"][0] == "not isolated: JOBBER_ISOLATION=none"


class TestDoctorFix:
    def test_switched_off_is_fixed_by_unsetting_it(self, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        name, confined, checks = _confinement()
        assert (name, confined) == ("none", False)
        assert (checks[0].name, checks[0].ok, checks[0].found, checks[0].fix) == (
            "isolation", False, "none: JOBBER_ISOLATION=none", "unset JOBBER_ISOLATION")
        assert [(c.name, c.fix) for c in checks[1:]] == [
            (f"{limit} limit", "unset JOBBER_ISOLATION") for limit in ("cpu", "memory", "pids", "io")]

    @pytest.mark.parametrize("code", [NO_HIERARCHY, NOT_WRITABLE])
    def test_the_fix_follows_the_code_not_the_words(self, monkeypatch, code):
        why = Unconfined(code, "no writable cgroup: a JOBBER_ISOLATION-shaped path is read-only")
        monkeypatch.setattr(isolation, "choose", lambda: (unconfined, why))
        _, _, checks = _confinement()
        assert checks[0].found == f"none: {why.text}"
        assert "unset JOBBER_ISOLATION" not in checks[0].fix
        assert "root" in checks[0].fix or "systemd" in checks[0].fix
