"""Queues, dependencies and admission: real jobs in real cgroups, no daemon.

What runs is checked from the kernel (a job's cgroup has processes), not from jobber's
own bookkeeping; what ran, and how often, from marker files the jobs write.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jobber import JobError, Limits
from jobber._backends.local.isolation import choose
from jobber._jobs.queues import check_after
from polling import wait_for

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}")


pytestmark = pytest.mark.usefixtures("launcher")  # both supervisors (conftest.py)


def in_cgroup(job) -> bool:
    """Has the job's cgroup a process now (what the kernel says runs)?"""
    try:
        record = json.loads((job.path / "confinement.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    for path in set(record.get("dirs", {}).values()):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                if f.read().strip():
                    return True
        except OSError:
            continue
    return False


def most_at_once(jobs, until_done: float = 120) -> int:
    """Sample the jobs' cgroups until every job ended: the most that ran at once."""
    most, deadline = 0, time.monotonic() + until_done
    while time.monotonic() < deadline:
        most = max(most, sum(1 for job in jobs if in_cgroup(job)))
        if all(job.status().ended for job in jobs):
            return most
        time.sleep(0.005)
    raise AssertionError("the jobs did not all end")


def runs_of(marks, job_id: int) -> int:
    try:
        return marks.joinpath(str(job_id)).read_text().count("ran\n")
    except FileNotFoundError:
        return 0


class TestQueue:
    @needs_cgroup
    def test_parallel_2_never_runs_3_at_once_over_20_jobs(self, store):
        store.set_queue("q", parallel=2)
        jobs = [store.new_job("sleep 0.2", queue="q") for _ in range(20)]
        for job in jobs:
            job.start()
        assert most_at_once(jobs) == 2
        assert all(job.status().state == "exited" for job in jobs)

    def test_jobs_start_in_the_order_they_were_made(self, store):
        store.set_queue("one", parallel=1)
        blocker = store.new_job("sleep 30", queue="one")
        blocker.start()
        jobs = [store.new_job("sleep 0.05", queue="one") for _ in range(6)]
        for job in reversed(jobs):  # started in reverse: the order is the jobs' own
            job.start()
        blocker.stop(grace=0)
        for job in jobs:
            job.wait(60)
        starts = [job.status().started_at for job in jobs]
        assert starts == sorted(starts)

    def test_follow_waits_for_a_waiting_job_with_heartbeats_then_reads_it_all(self, store):
        store.set_queue("q", parallel=1)
        blocker = store.new_job("sleep 1", queue="q")
        job = store.new_job("echo one; sleep 0.2; echo two", queue="q")
        blocker.start()
        job.start()
        chunks = list(job.follow(heartbeat=0.1))
        assert b"".join(chunks) == b"one\ntwo\n"
        assert b"" in chunks[: chunks.index(next(c for c in chunks if c))]  # beats while it waited
        assert job.status().state == "exited"

    def test_a_memory_budget_admits_by_the_sum_of_limits(self, store):
        store.set_queue("mem", memory="300M")
        big = [store.new_job("sleep 30", Limits(memory="200M"), queue="mem") for _ in range(2)]
        small = store.new_job("sleep 30", Limits(memory="100M"), queue="mem")
        for job in (*big, small):
            job.start()
        states = [j.status().state for j in (*big, small)]
        # FIFO: the second 200M job does not fit (400M > 300M) and holds the small one back.
        assert states == ["running", "pending", "pending"]
        assert "memory 200 MiB of 300 MiB in use, this job needs 200 MiB" in big[1].status().note
        big[0].stop(grace=0)
        wait_for(lambda: big[1].status().state == "running" and small.status().state == "running", 30,
                 "both to fit once the first left")
        for job in (big[1], small):
            job.stop(grace=0)

    def test_stopping_a_waiting_job_takes_it_out_of_line_unrun(self, store, tmp_path):
        store.set_queue("q", parallel=1)
        blocker = store.new_job("sleep 30", queue="q")
        waiting = store.new_job(f"touch {tmp_path}/ran", queue="q")
        blocker.start()
        waiting.start()
        status = waiting.stop(grace=1)
        assert (status.state, status.note) == ("stopped", "stopped while it waited: it never ran")
        blocker.stop(grace=0)
        time.sleep(0.5)
        assert not (tmp_path / "ran").exists()
        assert waiting.status().state == "stopped"
        assert not [p for p in (store.path / "waiting").rglob("*") if p.name.isdigit()]

    def test_waiting_jobs_start_with_no_starter_alive(self, store, tmp_path):
        # Submitted by a process that exits at once: the supervisors of the ending jobs admit
        # the rest.
        store.set_queue("q", parallel=2)
        jobs = [store.new_job(f"echo ran >> {tmp_path}/$JOBBER_JOB_ID; sleep 0.1", queue="q") for _ in range(8)]
        code = ("import sys; from jobber._jobs.store import JobStore; s = JobStore(sys.argv[1]); "
                "[s.get_job(int(i)).start() for i in sys.argv[2:]]")
        subprocess.run([sys.executable, "-c", code, store.owner, *(str(j.id) for j in jobs)], check=True,
                       env={**os.environ, "JOBBER_JOBS_DIR": str(store.root)})
        # Only the files, never status(): a look at a waiting job would admit it itself.
        wait_for(lambda: all(runs_of(tmp_path, j.id) for j in jobs), 60, "every job to run, admitted by finishers")
        assert [runs_of(tmp_path, j.id) for j in jobs] == [1] * 8

    def test_a_killed_submitter_neither_starts_a_job_twice_nor_strands_one(self, store, tmp_path):
        store.set_queue("q", parallel=2)
        jobs = [store.new_job(f"echo ran >> {tmp_path}/$JOBBER_JOB_ID; sleep 0.05", queue="q") for _ in range(12)]
        code = ("import sys; from jobber._jobs.store import JobStore; s = JobStore(sys.argv[1]); "
                "print('ready', flush=True); [s.get_job(int(i)).start() for i in sys.argv[2:]]")
        rng = random.Random(7)
        todo, window = list(jobs), 0.25
        while todo:  # kill -9 the submitter at random points, start what it did not claim
            proc = subprocess.Popen([sys.executable, "-c", code, store.owner, *(str(j.id) for j in todo)],
                                    env={**os.environ, "JOBBER_JOBS_DIR": str(store.root)},
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            proc.stdout.readline()  # its imports done: the kill lands among its starts, not in Python's start-up
            time.sleep(rng.uniform(0, window))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            # A look at each job releases a claim its killed starter left behind.
            left = [j for j in todo if j.status().state == "created" and not (j.path / "started").exists()]
            if len(left) == len(todo):
                window *= 2  # a slow machine: a submitter that got nowhere gets longer, so the loop ends
            todo = left
        for job in jobs:
            status = job.wait(90)
            assert status.state == "exited", (status.state, status.note, status.exit_code)
        assert [runs_of(tmp_path, j.id) for j in jobs] == [1] * 12

    def test_an_admitter_killed_between_the_status_and_its_record_strands_no_job(self, store, tmp_path):
        # The pass dies (kill -9) right after it wrote "pending, starting" and before the
        # job's entry in admitted/: the next pass puts the job back in line, it runs once.
        store.set_queue("q", parallel=1)
        job = store.new_job(f"echo ran >> {tmp_path}/$JOBBER_JOB_ID", queue="q")
        code = ("import os, sys; from jobber._backends.local import admission; "
                "from jobber._jobs.store import JobStore; real = admission.write_atomic\n"
                "def dying(path, data):\n"
                "    if os.path.basename(os.path.dirname(path)) == admission.ADMITTED: os.kill(os.getpid(), 9)\n"
                "    real(path, data)\n"
                "admission.write_atomic = dying; JobStore(sys.argv[1]).get_job(int(sys.argv[2])).start()")
        killed = subprocess.run([sys.executable, "-c", code, store.owner, str(job.id)], stderr=subprocess.PIPE,
                                env={**os.environ, "JOBBER_JOBS_DIR": str(store.root)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        raw = json.loads((job.path / "status.json").read_bytes())
        assert raw["note"] == "starting" and raw["admitted_by"], raw
        status = job.wait(60)
        assert status.state == "exited", (status.state, status.note)
        assert runs_of(tmp_path, job.id) == 1


class TestAfter:
    def test_a_chain_runs_in_order(self, store, tmp_path):
        log = tmp_path / "order"
        first = store.new_job(f"sleep 0.3; echo 1 >> {log}")
        second = store.new_job(f"echo 2 >> {log}", after=first)
        third = store.new_job(f"echo 3 >> {log}", after=[second.id])
        for job in (third, second, first):
            job.start()
        assert second.status().note == f"after job {first.id}"
        assert third.wait(60).state == "exited"
        assert log.read_text() == "1\n2\n3\n"

    def test_a_failed_dependency_fails_its_dependents_unrun(self, store, tmp_path):
        bad = store.new_job("exit 4")
        child = store.new_job(f"touch {tmp_path}/child", after=bad)
        grandchild = store.new_job(f"touch {tmp_path}/grandchild", after=child)
        anyway = store.new_job(f"touch {tmp_path}/anyway", after=[(bad.id, "any")])
        for job in (bad, child, grandchild, anyway):
            job.start()
        status = child.wait(30)
        assert status.state == "failed"
        assert status.note == f"its dependency job {bad.id} did not succeed (failed (code 4)): not started"
        assert grandchild.wait(30).state == "failed"
        assert anyway.wait(30).state == "exited"
        assert not (tmp_path / "child").exists() and not (tmp_path / "grandchild").exists()

    def test_after_a_job_never_started_waits_for_it(self, store):
        dep = store.new_job("true")
        job = store.new_job("true", after=dep)
        job.start()
        assert job.status().state == "pending"
        dep.start()
        assert job.wait(30).state == "exited"

    @pytest.mark.parametrize(("after", "message"), [
        (999, "after: there is no job 999"),
        ("x", "is not a job id"),
        ([(1, "maybe")], "write a job id, or"),
        (True, "is not a job id"),
    ])
    def test_bad_dependencies_are_refused_when_made(self, store, after, message):
        store.new_job("true")
        with pytest.raises(JobError, match=message):
            store.new_job("true", after=after)

    def test_after_takes_ids_jobs_and_modes(self, store):
        job = store.new_job("true")
        assert check_after(job) == [[job.id, "ok"]]
        assert check_after([3, (4, "any"), "5"]) == [[3, "ok"], [4, "any"], [5, "ok"]]


class TestQueueSettings:
    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"parallel": -1}, "parallel must be a whole number"),
        ({"memory": "lots"}, "not a size"),
        ({"cpus": "x"}, "cpus must be a number"),
        ({"gpus": 1.5}, "gpus must be a whole number"),
    ])
    def test_bad_settings_are_refused(self, store, kwargs, message):
        with pytest.raises(JobError, match=message):
            store.set_queue("q", **kwargs)

    @pytest.mark.parametrize("name", ["", "../x", "a b", "x" * 65, "q\n"])
    def test_queue_names_are_checked(self, store, name):
        with pytest.raises(JobError, match="is not a queue name"):
            store.new_job("true", queue=name)

    def test_zero_removes_a_limit(self, store):
        store.set_queue("q", parallel=2, memory="1G")
        assert store.set_queue("q", parallel=0) == {"parallel": None, "memory": 1 << 30, "cpus": None, "gpus": None}


class TestSweep:
    def test_one_job_per_combination_through_a_queue(self, store):
        store.set_queue("s", parallel=2)
        sweep = store_sweep(store, "echo lr={lr} bs={bs} ${HOME:+braces-kept}", lr=[0.1, 0.01], bs=[32, 64, 128],
                            queue="s")
        assert len(sweep) == 6
        assert sweep.params[1] == {"lr": 0.1, "bs": 64}
        statuses = sweep.wait(60)
        assert [s.state for s in statuses] == ["exited"] * 6
        rows = sweep.table()
        rows = rows.reset_index().to_dict("records") if hasattr(rows, "reset_index") else rows
        assert [r["last_line"] for r in rows][:2] == ["lr=0.1 bs=32 braces-kept", "lr=0.1 bs=64 braces-kept"]
        assert {r["state"] for r in rows} == {"exited"}

    def test_values_are_quoted_for_the_shell(self, store, tmp_path):
        sweep = store_sweep(store, "echo {x}", x=["a b", "$(touch " + str(tmp_path / "pwned") + ")"])
        sweep.wait(30)
        assert [job.path.joinpath("log").read_text() for job in sweep] == ["a b\n", f"$(touch {tmp_path}/pwned)\n"]
        assert not (tmp_path / "pwned").exists()

    @pytest.mark.parametrize(("params", "message"), [
        ({}, "a sweep needs parameters"),
        ({"lr": 0.1}, "give a list of values"),
        ({"lr": []}, "has no values"),
        ({"lr": [1], "bs": [2]}, r"the template does not use \{bs\}"),
    ])
    def test_bad_sweeps_make_no_job(self, store, params, message):
        with pytest.raises(JobError, match=message):
            store_sweep(store, "echo {lr}", **params)
        assert store.get_jobs() == []


def store_sweep(store, template, **kwargs):
    from jobber._jobs.sweeps import sweep

    return sweep(store, template, **kwargs)
