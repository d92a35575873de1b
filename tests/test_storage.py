"""Job storage: private directories in a hostile /tmp, unique ids, per-identity listing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobber import CertificateError, JobError, JobNotFound, Limits
from jobber._jobs.jobdir import ensure_private_dir
from jobber._jobs.store import JobStore, default_jobs_dir, jobs_dir


def _owner(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class TestJobsDir:
    def test_default_and_override(self, monkeypatch, tmp_path):
        monkeypatch.delenv("JOBBER_JOBS_DIR")
        assert jobs_dir() == default_jobs_dir()  # tests/test_jobs_dir_default.py: which one
        monkeypatch.setenv("JOBBER_JOBS_DIR", str(tmp_path / "x"))
        assert jobs_dir() == tmp_path / "x"

    def test_directories_are_made_private(self, tmp_path):
        path = ensure_private_dir(tmp_path / "a" / "b")
        for p in (path, path.parent):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o700

    def test_a_symlink_planted_first_is_refused(self, tmp_path):
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        (tmp_path / "jobber").symlink_to(target)
        with pytest.raises(JobError, match="symlink"):
            ensure_private_dir(tmp_path / "jobber" / "jobs")
        with pytest.raises(JobError, match="symlink"):
            ensure_private_dir(tmp_path / "jobber")

    def test_a_refused_path_has_nothing_made_through_it(self, tmp_path):
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        (tmp_path / "jobber").symlink_to(target)
        with pytest.raises(JobError, match="symlink"):
            ensure_private_dir(tmp_path / "jobber" / "jobs" / "deeper")
        assert list(target.iterdir()) == []

    def test_nothing_is_made_inside_another_users_directory(self, tmp_path):
        hostile = tmp_path / "jobber"
        hostile.mkdir(mode=0o777)
        os.chown(hostile, 65534, 65534)
        with pytest.raises(JobError, match="owned by uid 65534"):
            ensure_private_dir(hostile / "jobs" / "deeper")
        assert list(hostile.iterdir()) == []

    def test_a_directory_owned_by_another_user_is_refused(self, tmp_path):
        hostile = tmp_path / "jobber"
        hostile.mkdir(mode=0o700)
        os.chown(hostile, 65534, 65534)
        with pytest.raises(JobError, match="owned by uid 65534"):
            ensure_private_dir(hostile / "jobs")

    def test_a_directory_writable_by_others_is_refused(self, tmp_path):
        loose = tmp_path / "jobber"
        loose.mkdir()
        loose.chmod(0o777)
        with pytest.raises(JobError, match="writable by"):
            ensure_private_dir(loose)

    def test_a_file_in_the_way_is_refused(self, tmp_path):
        (tmp_path / "jobber").write_text("")
        with pytest.raises(JobError, match="not a directory"):
            ensure_private_dir(tmp_path / "jobber")


class TestJobIds:
    def test_ids_count_up_from_one(self, store):
        assert [store.generate_job_id() for _ in range(3)] == [1, 2, 3]

    def test_two_hundred_concurrent_threads_and_processes_get_distinct_ids(self, jobs_dir):
        owner = _owner("concurrent")
        code = (
            "import sys, threading; from jobber._jobs.store import JobStore\n"
            f"store = JobStore({owner!r}); ids = []\n"
            "ts = [threading.Thread(target=lambda: ids.append(store.generate_job_id())) for _ in range(25)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]; print(*ids)"
        )
        processes = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            from_threads = list(pool.map(lambda _: JobStore(owner).generate_job_id(), range(100)))
        from_processes = [int(i) for process in processes for i in process.communicate(timeout=60)[0].split()]
        ids = from_threads + from_processes
        assert len(ids) == 200 and len(set(ids)) == 200
        assert sorted(int(n) for n in os.listdir(jobs_dir / owner) if n.isdigit()) == sorted(ids)

    def test_a_lost_counter_never_reuses_an_id(self, store):
        first = store.generate_job_id()
        (store.path / ".next-id").unlink()
        assert store.generate_job_id() == first + 1


class TestJobStore:
    def test_new_job_keeps_command_and_limits(self, store):
        job = store.new_job("echo 'hi' $HOME", Limits(cpu=0.5, memory="1G"))
        again = store.get_job(job.id)
        assert again.command == "echo 'hi' $HOME"
        assert again.limits == Limits(cpu=0.5, memory=1 << 30)
        assert again.status().state == "created"

    def test_get_jobs_is_sorted_by_id(self, store):
        for _ in range(12):
            store.new_job("true")
        assert [job.id for job in store.get_jobs()] == list(range(1, 13))

    def test_no_jobs_yet_is_an_empty_list(self, store):
        assert store.get_jobs() == []

    @pytest.mark.parametrize("bad", [99, 0, -1, "../x", "1/../2", "01", True, None, 1.5])
    def test_unknown_or_hostile_ids_are_not_found(self, store, bad):
        store.new_job("true")
        with pytest.raises(JobNotFound):
            store.get_job(bad)

    def test_job_not_found_is_a_lookup_error_with_the_id(self, store):
        with pytest.raises(LookupError) as info:
            store.get_job(42)
        assert isinstance(info.value, CertificateError)
        assert info.value.job_id == 42
        assert "no job 42" in str(info.value)

    def test_identities_never_see_each_others_jobs(self, jobs_dir):
        alice, bob = JobStore(_owner("alice")), JobStore(_owner("bob"))
        job = alice.new_job("true")
        assert bob.get_jobs() == []
        with pytest.raises(JobNotFound):
            bob.get_job(job.id)

    def test_stray_directory_entries_are_not_jobs(self, store):
        store.new_job("true")
        (store.path / "notes").mkdir()
        (store.path / "007").mkdir()
        assert [job.id for job in store.get_jobs()] == [1]

    @pytest.mark.parametrize("command", ["", "   ", "a\0b"])
    def test_empty_or_unrunnable_commands_are_refused(self, store, command):
        with pytest.raises(JobError):
            store.new_job(command)

    def test_a_malformed_owner_hash_is_refused(self):
        with pytest.raises(CertificateError, match="not a certificate hash"):
            JobStore("../../etc")

    def test_job_directories_are_private(self, store):
        job = store.new_job("true")
        assert stat.S_IMODE(os.stat(job.path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o700


class TestListingSpeed:
    def test_ten_thousand_jobs_list_without_reading_them(self, store):
        store.path.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_001):
            os.mkdir(store.path / str(i))
        jobs = store.get_jobs()
        assert len(jobs) == 10_000 and jobs[-1].id == 10_000


class TestLabelsAndReruns:
    def test_a_label_names_the_job_and_filters_listings(self, store):
        first = store.new_job("true", label="train")
        store.new_job("true", label="eval")
        second = store.new_job("true", label="train")
        assert first.label == "train" and store.new_job("true").label is None
        assert [job.id for job in store.get_jobs(label="train")] == [first.id, second.id]
        assert store.find("train") == second  # the newest with that label
        assert store.find(str(first.id)) == first and store.find(first.id) == first

    @pytest.mark.parametrize("label", ["", "12", "a b", "x" * 65, "tab\t", 7, "-lead"])
    def test_bad_labels_are_refused_before_anything_is_made(self, store, label):
        with pytest.raises(JobError, match="is not a label"):
            store.new_job("true", label=label)
        assert store.get_jobs() == []

    def test_an_unknown_label_is_not_found_and_says_so(self, store):
        with pytest.raises(JobNotFound, match="no job is labelled 'nope'"):
            store.find("nope")

    def test_rerun_copies_the_job_changes_only_what_it_is_told(self, store, tmp_path):
        job = store.new_job("echo $SEED", Limits(memory="64M"), env={"SEED": "1"}, cwd=tmp_path, label="train",
                            timeout="2h", retries=2, retry_on=["failed", "oom-killed"], oom_growth=1.5)
        again = job.rerun(limits=Limits(memory="128M"), env={"SEED": "2"})
        assert again.id != job.id and again.rerun_of == job.id and job.rerun_of is None
        assert (again.command, again.label) == (job.command, "train")
        assert again.limits == Limits(memory="128M") and job.limits == Limits(memory="64M")
        spec = json.loads((again.path / "spec.json").read_bytes())
        assert spec["extra_env"] == {"SEED": "2"} and spec["cwd"] == str(tmp_path)
        assert (spec["timeout"], spec["retries"], spec["retry_on"], spec["oom_growth"]) == (
            7200.0, 2, ["failed", "oom-killed"], 1.5)
        again.start()
        assert again.wait(30).state == "exited"
        assert again.log_path.read_text() == "2\n"
        assert job.status().state == "created"  # the original is untouched

    def test_rerun_refuses_what_it_cannot_change(self, store):
        with pytest.raises(JobError, match="cannot be changed"):
            store.new_job("true").rerun(colour="red")


class TestLifecycleOptions:
    @pytest.mark.parametrize("timeout, seconds", [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
                                                  ("1d", 86400.0), ("1.5h", 5400.0)])
    def test_timeouts_are_seconds_or_durations(self, store, timeout, seconds):
        job = store.new_job("true", timeout=timeout)
        assert json.loads((job.path / "spec.json").read_bytes())["timeout"] == seconds

    @pytest.mark.parametrize("kwargs, match", [
        ({"timeout": "soon"}, "not a duration"), ({"timeout": 0}, "positive"), ({"timeout": True}, "not a duration"),
        ({"log_max": "12Q"}, "not a size"), ({"log_max": "1K"}, "below 4 KiB"),
        ({"retries": -1}, "whole number"), ({"retries": 1.5}, "whole number"),
        ({"retries": 1, "retry_on": ["exited"]}, "choose among"), ({"oom_growth": 0.5}, "factor above 1"),
    ])
    def test_malformed_options_are_refused_before_anything_is_made(self, store, kwargs, match):
        with pytest.raises(JobError, match=match):
            store.new_job("true", **kwargs)
        assert store.get_jobs() == []


class TestRemoveAndPrune:
    def test_remove_takes_an_ended_jobs_directory_and_never_a_running_one(self, store):
        ended = store.new_job("echo bye")
        ended.start()
        ended.wait(30)
        running = store.new_job("sleep 30")
        running.start()
        with pytest.raises(JobError, match="running: stop it first"):
            running.remove()
        assert running.status().state == "running"
        ended.remove()
        assert not ended.path.exists()
        with pytest.raises(JobNotFound):
            store.get_job(ended.id)
        running.stop(grace=0)
        running.remove()
        assert [p.name for p in store.path.iterdir() if not p.name.startswith(".")] == []

    def test_remove_follows_no_link_planted_in_the_job(self, store, tmp_path):
        precious = tmp_path / "precious"
        precious.mkdir()
        (precious / "data").write_text("keep me")
        job = store.new_job("true")
        job.start()
        job.wait(30)
        os.symlink(precious, job.path / "link")
        job.remove()
        assert (precious / "data").read_text() == "keep me"

    def test_prune_removes_exactly_what_it_says(self, store):
        jobs = []
        for command in ("true", "false", "true", "sleep 30"):
            job = store.new_job(command)
            job.start()
            jobs.append(job)
        for job in jobs[:3]:
            job.wait(30)
        waiting = store.new_job("true")  # never started: not an ended job
        assert store.prune(states=["failed"], dry_run=True) == [jobs[1].id]
        assert store.prune(keep_last=1) == [jobs[0].id, jobs[1].id]
        assert [job.id for job in store.get_jobs()] == [jobs[2].id, jobs[3].id, waiting.id]
        assert store.prune(older_than="1d") == []
        jobs[3].stop(grace=0)

    def test_prune_under_concurrent_new_jobs_never_removes_a_new_one(self, store):
        import threading

        for _ in range(5):
            job = store.new_job("true")
            job.start()
            job.wait(30)
        made = []
        stop = threading.Event()

        def keep_making():
            while not stop.is_set():
                made.append(store.new_job("true").id)

        maker = threading.Thread(target=keep_making)
        maker.start()
        try:
            removed = store.prune()
        finally:
            stop.set()
            maker.join()
        assert sorted(removed) == [1, 2, 3, 4, 5]
        assert all(store.get_job(job_id) for job_id in made)

    def test_prune_refuses_states_that_are_not_final(self, store):
        with pytest.raises(JobError, match="not final states"):
            store.prune(states=["running"])
