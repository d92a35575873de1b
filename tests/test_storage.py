"""Job storage: private directories in a hostile /tmp, unique ids, per-identity listing."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobber import CertificateError, JobError, JobNotFound, Limits
from jobber._jobs.jobdir import ensure_private_dir
from jobber._jobs.store import JobStore, jobs_dir


def _owner(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class TestJobsDir:
    def test_default_and_override(self, monkeypatch, tmp_path):
        monkeypatch.delenv("JOBBER_JOBS_DIR")
        assert str(jobs_dir()) == "/tmp/jobber/jobs"
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
