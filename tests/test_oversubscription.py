"""Jobs that ask together for more CPUs or memory than the host has
(``jobber._jobs.oversubscription``): what is counted, and the fix it names."""

from __future__ import annotations

import pytest

from jobber import Limits, oversubscription

GIB = 1 << 30


def made(store, n: int, limits: Limits, **options):
    return [store.new_job("sleep 60", limits, **options) for _ in range(n)]


class TestCounting:
    def test_four_one_cpu_jobs_on_two_cores(self, store):
        crowded = oversubscription(store, made(store, 4, Limits(cpu=1)), host_cpu_count=2, host_memory_bytes=8 * GIB)
        assert (crowded.cpus, crowded.host_cpus, crowded.new, crowded.jobs, crowded.parallel) == (4, 2, 4, 4, 2)
        assert crowded.describe() == (
            "these 4 jobs ask for 4 CPUs (this host has 2) at once: they slow each other down. To run 2 at a "
            "time, use a queue: `%jobber_queue NAME --parallel 2` once, then `--queue NAME` on each run or sweep")
        assert "`jobber queue NAME --parallel 2`" in crowded.describe("cli")
        assert "`cert.set_queue(NAME, parallel=2)`" in crowded.describe("api")

    def test_what_fits_says_nothing(self, store):
        assert oversubscription(store, made(store, 2, Limits(cpu=1)), host_cpu_count=2) is None
        assert oversubscription(store, made(store, 4, Limits()), host_cpu_count=2) is None  # asks for nothing

    def test_memory(self, store):
        crowded = oversubscription(store, made(store, 3, Limits(memory="3G")), host_cpu_count=2,
                                   host_memory_bytes=8 * GIB)
        assert crowded.memory == 9 * GIB and crowded.parallel == 2
        assert "9 GiB of memory (this host has 8 GiB)" in crowded.describe()
        assert "or run the host out of memory" in crowded.describe()

    def test_jobs_already_running_count(self, store):
        running = made(store, 2, Limits(cpu=1))
        for job in running:
            job.start()
        try:
            crowded = oversubscription(store, made(store, 1, Limits(cpu=1)), host_cpu_count=2)
            assert (crowded.new, crowded.jobs, crowded.cpus) == (1, 3, 3)
            assert crowded.describe().startswith("this job and the 2 already running or waiting ask for 3 CPUs")
        finally:
            for job in running:
                job.stop(grace=0)
        # Once they ended, the same new job fits.
        assert oversubscription(store, made(store, 1, Limits(cpu=1)), host_cpu_count=2) is None

    def test_a_queue_counts_what_it_admits_at_once(self, store):
        store.set_queue("two", parallel=2)
        assert oversubscription(store, made(store, 4, Limits(cpu=1), queue="two"), host_cpu_count=2) is None
        store.set_queue("budget", cpus=1)
        assert oversubscription(store, made(store, 4, Limits(cpu=1), queue="budget"), host_cpu_count=2) is None
        store.set_queue("wide", parallel=3)
        assert oversubscription(store, made(store, 4, Limits(cpu=1), queue="wide"), host_cpu_count=2).cpus == 3

    def test_a_job_that_waits_for_another_is_not_counted(self, store):
        first = store.new_job("sleep 60", Limits(cpu=2))
        second = store.new_job("sleep 60", Limits(cpu=2), after=[first.id])
        assert oversubscription(store, [first, second], host_cpu_count=2) is None


@pytest.mark.parametrize("cpu", [0.5, 1.5])
def test_the_fix_runs_as_many_as_fit(store, cpu):
    crowded = oversubscription(store, made(store, 8, Limits(cpu=cpu)), host_cpu_count=2)
    assert crowded.parallel == int(2 // cpu)
