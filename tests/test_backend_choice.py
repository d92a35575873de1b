"""The backend of a job that names none, chosen in one place (``jobber._backends.default_backend``)."""

from __future__ import annotations

import pytest

from jobber import JobError
from jobber._backends import check_options, default_backend
from jobber._jobs.sweeps import _check_parallel


@pytest.mark.parametrize(("env", "backend"), [(None, "local"), ("", "local"), ("slurm", "slurm"), ("local", "local")])
def test_jobber_backend_or_local(monkeypatch, env, backend):
    if env is None:
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
    else:
        monkeypatch.setenv("JOBBER_BACKEND", env)
    assert default_backend() == backend
    assert check_options({})["backend"] == backend


def test_a_named_backend_wins(monkeypatch):
    monkeypatch.setenv("JOBBER_BACKEND", "slurm")
    assert check_options({"backend": "local"}) == {"backend": "local"}


def test_an_unknown_default_is_refused_where_options_are_checked(monkeypatch):
    monkeypatch.setenv("JOBBER_BACKEND", "kubernetes")
    assert default_backend() == "kubernetes"
    with pytest.raises(JobError, match=r"unknown backend 'kubernetes': use one of local, slurm \(or set JOBBER_BACKEND\)"):
        check_options({})


def test_a_sweep_s_parallel_asks_the_same(monkeypatch):
    monkeypatch.setenv("JOBBER_BACKEND", "slurm")
    with pytest.raises(JobError, match="needs start=True"):  # past the backend check: a Slurm sweep
        _check_parallel(2, {}, start=False)
    monkeypatch.setenv("JOBBER_BACKEND", "")
    with pytest.raises(JobError, match="not 'local' ones"):
        _check_parallel(2, {}, start=True)
