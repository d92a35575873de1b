"""The joblib backend "jobber" (jobber.joblib): each task of joblib.Parallel as a real job.

Real jobs in real cgroups (the tests that need a limit enforced skip where no cgroup
confines jobs), real scikit-learn searches. The tasks are this module's functions, sent by
value: the jobs need not import this module (and pytest with it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import cloudpickle
import joblib
import pytest
from joblib import Parallel, delayed

import jobber
import jobber.joblib
from jobber import JobberError, JobError, Limits
from jobber._backends.local.isolation import choose
from jobber._jobs.job import spec_of

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")
MiB = 1 << 20
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setenv("JOBBER_RETRY_BACKOFF", "0.2")


def square(x):
    return x * x


def fails_on_three(x):
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def sleep_or_fail(seconds):
    if seconds == 0:
        raise ValueError("the first task fails")
    time.sleep(seconds)
    return seconds


def hog(mib):
    """Hold ``mib`` MiB, really written; return how many."""
    held = bytearray(mib * MiB)
    for i in range(0, len(held), 4096):
        held[i] = 1
    return mib


def nested(n):
    """What a Parallel call inside a job runs on: the backend, its n_jobs, the pids, OMP_NUM_THREADS."""
    backend, n_jobs = joblib.parallel.get_active_backend()
    pids = Parallel()(delayed(os.getpid)() for _ in range(n))
    return type(backend).__name__, n_jobs, os.getpid(), sorted(set(pids)), os.environ.get("OMP_NUM_THREADS")


def most_at_once(jobs) -> int:
    """The most of these (ended) jobs that ran at the same time, by their statuses."""
    events = []
    for job in jobs:
        status = job.status()
        events += [(status.started_at, 1), (status.ended_at, -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):  # an end before a start at one instant
        running += step
        most = max(most, running)
    return most


def by_label(cert, label):
    return sorted(cert.get_jobs(label=label), key=lambda job: job.id)


class TestRegistration:
    def test_import_registers_the_backend(self):
        assert joblib.parallel.BACKENDS["jobber"] is jobber.joblib.JobberBackend

    def test_import_jobber_does_not_import_joblib(self):
        code = "import sys, jobber; assert 'joblib' not in sys.modules and 'jobber._joblib' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_without_joblib_the_import_says_what_to_install(self):
        code = "import sys; sys.modules['joblib'] = None; import jobber.joblib"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 1
        assert "ImportError: jobber.joblib needs joblib: pip install 'jobber[joblib]'" in run.stderr

    def test_register_under_another_name(self, identity):
        jobber.joblib.register("jobber-too")
        try:
            with joblib.parallel_config(backend="jobber-too"):
                assert Parallel(n_jobs=2)(delayed(square)(x) for x in (2, 3)) == [4, 9]
        finally:
            del joblib.parallel.BACKENDS["jobber-too"]


class TestBadInput:
    def test_no_identity(self, monkeypatch):
        monkeypatch.delenv("JOBBER_CERT", raising=False)
        with pytest.raises(JobberError, match=r'needs an identity: parallel_config\(backend="jobber", session=cert\)'):
            joblib.parallel_config(backend="jobber")

    def test_server_without_key(self, identity, monkeypatch):
        monkeypatch.setenv("JOBBER_SERVER", "https://127.0.0.1:1")
        monkeypatch.delenv("JOBBER_KEY", raising=False)
        with pytest.raises(JobberError, match=r"\$JOBBER_KEY is not set"):
            joblib.parallel_config(backend="jobber")

    def test_session_of_the_wrong_type(self):
        with pytest.raises(JobberError, match="must be a jobber.Certificate or a jobber.connect.* not str"):
            joblib.parallel_config(backend="jobber", session="me.pem")

    def test_limits_of_the_wrong_type(self, identity):
        with pytest.raises(JobberError, match=r'must be a jobber.Limits, not dict: e.g. limits=jobber.Limits\(memory="2G"'):
            joblib.parallel_config(backend="jobber", limits={"memory": "2G"})

    def test_an_unpicklable_argument_is_named_and_leaves_no_job(self, identity):
        lock = threading.Lock()
        named = r"^square\(\): argument 'x': a lock held by the kernel cannot be sent to a job"
        with joblib.parallel_config(backend="jobber"), pytest.raises(JobError, match=named):
            Parallel(n_jobs=2)(delayed(square)(x) for x in (lock, lock))
        assert identity.get_jobs() == []

    def test_a_refused_job_option_reaches_the_caller(self, identity):
        with joblib.parallel_config(backend="jobber", timeout="soon"), pytest.raises(JobError, match="timeout"):
            Parallel(n_jobs=2)(delayed(square)(x) for x in (1, 2))


class TestTasksAsJobs:
    def test_each_task_is_a_job_with_the_limits(self, identity):
        limits = Limits(memory="256M", cpu=1)
        with joblib.parallel_config(backend="jobber", limits=limits):
            assert Parallel(n_jobs=3)(delayed(square)(x) for x in range(5)) == [0, 1, 4, 9, 16]
        jobs = by_label(identity, "joblib:square")
        assert len(jobs) == 5
        assert all(job.limits == limits for job in jobs)
        assert [job.status().state for job in jobs] == ["exited"] * 5
        if BACKEND.NAME != "none":
            assert {job.status().isolation for job in jobs} == {BACKEND.NAME}

    def test_n_jobs_bounds_the_jobs_running_at_once(self, identity):
        with joblib.parallel_config(backend="jobber"):
            assert Parallel(n_jobs=2)(delayed(time.sleep)(0.3) for _ in range(5)) == [None] * 5
        jobs = by_label(identity, "joblib:sleep")
        assert len(jobs) == 5 and most_at_once(jobs) <= 2

    def test_n_jobs_1_still_runs_each_task_in_a_job(self, identity):
        with joblib.parallel_config(backend="jobber", n_jobs=1):
            assert Parallel()(delayed(os.getpid)() for _ in range(3)) != [os.getpid()] * 3
        jobs = by_label(identity, "joblib:getpid")
        assert len(jobs) == 3 and most_at_once(jobs) == 1

    def test_batch_size_puts_tasks_in_one_job(self, identity):
        with joblib.parallel_config(backend="jobber"):
            assert Parallel(n_jobs=2, batch_size=3)(delayed(square)(x) for x in range(6)) == [0, 1, 4, 9, 16, 25]
        assert 2 <= len(by_label(identity, "joblib:square")) < 6  # (joblib splits the last batches finer)

    def test_job_options_apply_a_queue_and_a_label(self, identity):
        identity.set_queue("joblib-one", parallel=1)
        with joblib.parallel_config(backend="jobber", queue="joblib-one", label="squares"):
            assert Parallel(n_jobs=3)(delayed(square)(x) for x in range(3)) == [0, 1, 4]
        jobs = by_label(identity, "squares")
        assert [spec_of(job).queue for job in jobs] == ["joblib-one"] * 3
        assert most_at_once(jobs) == 1  # the queue admits one at a time, though n_jobs is 3

    def test_a_session_given_explicitly(self, identity, monkeypatch):
        monkeypatch.delenv("JOBBER_CERT")
        with joblib.parallel_config(backend="jobber", session=identity):
            assert Parallel(n_jobs=2)(delayed(square)(x) for x in (5, 6)) == [25, 36]
        assert 2 <= len(by_label(identity, "joblib:square")) < 6  # (joblib splits the last batches finer)


class TestErrors:
    def test_the_tasks_exception_is_raised_as_itself(self, identity):
        with joblib.parallel_config(backend="jobber"), pytest.raises(KeyError, match="no 3") as raised:
            Parallel(n_jobs=2)(delayed(fails_on_three)(x) for x in range(5))
        attached = getattr(raised.value, "__notes__", None) or [str(raised.value.__cause__)]  # (3.10: __cause__)
        assert any("Traceback in job" in text and "fails_on_three" in text for text in attached)

    def test_after_an_error_the_other_jobs_are_stopped(self, identity):
        with joblib.parallel_config(backend="jobber"), pytest.raises(ValueError, match="the first task fails"):
            Parallel(n_jobs=2)(delayed(sleep_or_fail)(s) for s in (0, 60, 60, 60, 60, 60))
        jobs = by_label(identity, "joblib:sleep_or_fail")
        states = [job.status().state for job in jobs]
        assert states[0] == "failed" and len(jobs) < 6, states
        assert set(states[1:]) <= {"stopped"}, states  # none left running, none waiting to start

    @needs_cgroup
    def test_an_oom_killed_task_is_reported(self, identity):
        with joblib.parallel_config(backend="jobber", limits=Limits(memory="64M")), \
                pytest.raises(JobError, match="OOM-killed: its memory limit was too small"):
            Parallel(n_jobs=2)(delayed(hog)(mib) for mib in (1, 200))
        states = [job.status().state for job in by_label(identity, "joblib:hog")]
        assert "oom-killed" in states, states

    @needs_cgroup
    def test_an_oom_killed_task_retried_with_growth_returns(self, identity):
        with joblib.parallel_config(backend="jobber", limits=Limits(memory="64M"), retries=3, oom_growth=2):
            assert Parallel(n_jobs=2)(delayed(hog)(mib) for mib in (1, 100)) == [1, 100]
        grown = by_label(identity, "joblib:hog")[1]
        attempts = grown.attempts  # the job's own interpreter and imports come on top of the 100 MiB
        assert len(attempts) >= 2 and [a.state for a in attempts] == ["oom-killed"] * (len(attempts) - 1) + ["exited"]
        assert [a.limits.memory // MiB for a in attempts] == [64, 128, 256, 512][:len(attempts)]


class TestNested:
    def test_a_parallel_call_inside_a_job_uses_its_threads(self, identity):
        with joblib.parallel_config(backend="jobber", limits=Limits(cpu=2)):
            outcomes = Parallel(n_jobs=2)(delayed(nested)(4) for _ in range(2))
        for backend, n_jobs, pid, pids, omp in outcomes:
            assert (backend, n_jobs, pids, omp) == ("ThreadingBackend", 2, [pid], "2")
        assert len(identity.get_jobs()) == 2  # no job started another

    def test_inner_max_num_threads_sizes_the_pools(self, identity):
        with joblib.parallel_config(backend="jobber", inner_max_num_threads=1, env={"OMP_NUM_THREADS": "3"}):
            [(_, n_jobs, _, _, omp)] = Parallel(n_jobs=2)(delayed(nested)(1) for _ in range(1))
        assert (n_jobs, omp) == (1, "3")  # env= given by the caller wins over the default


class TestScikitLearn:
    def test_grid_search_fits_each_candidate_in_a_limited_job(self, identity):
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV

        X, y = make_classification(n_samples=60, n_features=4, random_state=0)
        grid = {"C": [0.01, 10.0]}
        here = GridSearchCV(LogisticRegression(), grid, cv=2, n_jobs=1).fit(X, y)
        limits = Limits(memory="512M", cpu=1)
        with joblib.parallel_config(backend="jobber", limits=limits):
            search = GridSearchCV(LogisticRegression(), grid, cv=2, n_jobs=4).fit(X, y)
        assert search.best_params_ == here.best_params_
        assert list(search.cv_results_["mean_test_score"]) == list(here.cv_results_["mean_test_score"])
        fits = by_label(identity, "joblib:_fit_and_score")
        assert len(fits) == 4  # 2 candidates x 2 folds, one job each
        assert all(job.limits == limits and job.status().state == "exited" for job in fits)
        if BACKEND.NAME != "none":
            assert all(0 < job.status().peak_memory_bytes <= 512 * MiB for job in fits)

    @needs_cgroup
    def test_a_fit_killed_by_its_memory_limit_is_reported(self, identity):
        from sklearn.base import BaseEstimator, ClassifierMixin
        from sklearn.model_selection import GridSearchCV

        class Hog(ClassifierMixin, BaseEstimator):  # defined here: it travels by value
            """Holds ``mib`` MiB while it fits."""

            def __init__(self, mib=1):
                self.mib = mib

            def fit(self, X, y):
                hog(self.mib)
                self.classes_ = sorted(set(y))
                return self

            def predict(self, X):
                return [self.classes_[0]] * len(X)

        with joblib.parallel_config(backend="jobber", limits=Limits(memory="150M")), \
                pytest.raises(JobError, match="OOM-killed"):
            GridSearchCV(Hog(), {"mib": [1, 400]}, cv=2, n_jobs=4, error_score=0.0).fit([[0], [1]] * 4, [0, 1] * 4)
        states = {job.status().state for job in by_label(identity, "joblib:_fit_and_score")}
        assert "oom-killed" in states and "running" not in states, states

