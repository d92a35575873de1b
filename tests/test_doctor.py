"""Why a job would run unconfined, as a reason code (``isolation.choose``), and the fix
``jobber doctor`` picks by that code, never by the words of the reason.

The whole report, end to end: tests/test_cli.py::TestDoctor.
"""

from __future__ import annotations

import os

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


class TestGpuFence:
    """Whether a job that asked for no GPU is kept from the host's GPUs (two character
    devices stand in for GPUs: only their numbers matter to the fence)."""

    @pytest.fixture(autouse=True)
    def two_gpus(self, monkeypatch):
        monkeypatch.setenv("JOBBER_GPUS", "/dev/null,/dev/zero")
        monkeypatch.delenv("JOBBER_GPU_FENCE", raising=False)

    def gpu_check(self):
        from jobber._doctor import diagnose

        return [check for check in diagnose().checks if check.name == "gpu fence"]

    @pytest.mark.skipif(os.geteuid() != 0, reason="an unconfined job of an ordinary user is fenced by a namespace")
    def test_unconfined_root_says_so_and_names_the_opt_out(self, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        [check] = self.gpu_check()
        assert not check.ok and "can open the 2 GPU nodes of this host" in check.found
        assert "keeps its capabilities" in check.found and "JOBBER_GPU_FENCE=off" in check.fix

    def test_the_opt_out_silences_it(self, monkeypatch):
        monkeypatch.setenv("JOBBER_ISOLATION", "none")
        monkeypatch.setenv("JOBBER_GPU_FENCE", "off")
        assert self.gpu_check() == []

    @pytest.mark.skipif(os.geteuid() != 0, reason="a device cgroup needs root here")
    def test_a_cgroup_fences_them(self, monkeypatch):
        monkeypatch.delenv("JOBBER_ISOLATION", raising=False)
        [check] = self.gpu_check()
        if "none" in check.found and not check.ok:
            pytest.skip(f"no cgroup for jobs here: {check.found}")
        assert check.ok and "cannot open the 2 GPU nodes of this host (by " in check.found, check
