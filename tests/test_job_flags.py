"""`jobber.JobFlags`: the flags of a new job, declared once for the command line and the magics."""

from __future__ import annotations

import argparse

import pytest

from jobber import JobberError, JobFlags, JobNotFound, LimitError, Limits
from jobber.cli import build_parser
from jobber_magics._lifecycle import JobberLifecycleMagics
from jobber_magics._magics import JobberMagics
from jobber_magics._sweep import JobberSweepMagics

SLURM_REFUSED = "--partition, --time, --account and --gres are Slurm options: add --backend slurm"


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[name]


def options(parser: argparse.ArgumentParser, *, leaving_out: set[str]) -> dict[str, tuple]:
    """Each option of ``parser`` but those left out, with what a user meets of it."""
    return {", ".join(action.option_strings): (action.dest, action.help, action.metavar, action.choices,
                                                action.type, action.default, action.nargs, type(action).__name__)
            for action in parser._actions
            if action.option_strings and not set(action.option_strings) & leaving_out}


def parsed(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    JobFlags.add_to(parser)
    return parser.parse_args(words)


class TestOneDeclaration:
    def test_jobber_run_and_the_run_magic_take_the_same_job_flags(self):
        cli = options(subcommand("run"), leaving_out={"-h", "--follow"})
        magic = options(JobberMagics.jobber_run.parser, leaving_out={"--name", "--no-follow", "--replace"})
        assert cli == magic
        assert list(cli) == [", ".join(names) for names, _ in JobFlags.JOB], "in the declared order"

    def test_jobber_sweep_and_the_sweep_magic_take_the_same_job_flags(self):
        cli = options(subcommand("sweep"), leaving_out={"-h", "--param"})
        magic = options(JobberSweepMagics.jobber_sweep.parser, leaving_out={"--name", "--py", "--in", "--out"})
        assert cli == magic == options(subcommand("run"), leaving_out={"-h", "--follow"})

    def test_jobber_rerun_and_the_rerun_magic_take_the_same_lifecycle_flags(self):
        lifecycle = {", ".join(names) for names, _ in JobFlags.LIFECYCLE}
        others = {o for a in subcommand("rerun")._actions for o in a.option_strings} - lifecycle
        magic_others = {o for a in JobberLifecycleMagics.jobber_rerun.parser._actions for o in a.option_strings}
        cli = options(subcommand("rerun"), leaving_out=others)
        assert set(cli) == lifecycle
        assert cli == options(JobberLifecycleMagics.jobber_rerun.parser, leaving_out=magic_others - lifecycle)

    def test_the_keywords_are_those_new_job_arguments_fills(self):
        _, given = JobFlags.new_job_arguments(parsed(
            "--env", "A=1", "--cwd", "/tmp", "--label", "train", "--timeout", "1h", "--log-max", "1M", "--retries", "2",
            "--retry-on", "failed", "--oom-growth", "2", "--queue", "q", "--after", "3", "--backend", "slurm",
            "--partition", "p", "--time", "1:00", "--account", "a", "--gres", "gpu:1", "--notify"))
        assert set(given) == JobFlags.KEYWORDS

    def test_each_lifecycle_option_of_the_spec_has_its_flag_in_order(self):
        from jobber._job_flags import LIFECYCLE_FLAGS, _dest
        from jobber._jobs.spec import LIFECYCLE_OPTIONS

        assert tuple(_dest(flag) for flag in LIFECYCLE_FLAGS) == LIFECYCLE_OPTIONS


class TestNewJobArguments:
    def test_nothing_given_is_no_limits_and_no_keywords(self):
        assert JobFlags.new_job_arguments(parsed()) == (Limits(), {})

    def test_limits_and_keywords(self):
        limits, given = JobFlags.new_job_arguments(parsed(
            "--cpu", "0.5", "--memory", "64M", "--pids", "20", "--io-read", "1M", "--io-write", "2M", "--require-isolation",
            "--env", "SEED=1", "--env", "TAG=a=b", "--label", "train", "--retry-on", " failed, oom-killed ,", "--after",
            "3,4:any"))
        assert limits == Limits(cpu=0.5, memory=64 << 20, pids=20, io_read_bps=1 << 20, io_write_bps=2 << 20,
                                require_isolation=True)
        assert given == {"env": {"SEED": "1", "TAG": "a=b"}, "label": "train", "retry_on": ("failed", "oom-killed"),
                         "after": [(3, "ok"), (4, "any")]}

    def test_a_malformed_limit_is_a_limit_error(self):
        with pytest.raises(LimitError, match="'12Q' is not a size"):
            JobFlags.new_job_arguments(parsed("--memory", "12Q"))

    def test_an_env_without_a_value_is_refused(self):
        with pytest.raises(JobberError, match=r"^--env 'SEED': write NAME=VALUE, e.g. --env SEED=1$"):
            JobFlags.new_job_arguments(parsed("--env", "SEED"))

    @pytest.mark.parametrize("flag", ["--partition", "--time", "--account", "--gres"])
    def test_a_slurm_flag_needs_the_slurm_backend(self, flag, monkeypatch):
        monkeypatch.delenv("JOBBER_BACKEND", raising=False)
        for words in ((flag, "x"), (flag, "x", "--backend", "local")):
            with pytest.raises(JobberError) as refused:
                JobFlags.new_job_arguments(parsed(*words))
            assert str(refused.value) == SLURM_REFUSED
        assert JobFlags.new_job_arguments(parsed(flag, "x", "--backend", "slurm"))[1]["backend"] == "slurm"
        monkeypatch.setenv("JOBBER_BACKEND", "slurm")
        assert "backend" not in JobFlags.new_job_arguments(parsed(flag, "x"))[1], "the environment's backend"

    @pytest.mark.parametrize("given", ["1x", "1:maybe", "", "1,,2", "prep"])
    def test_after_takes_ids_only_without_a_way_to_find_labels(self, given):
        with pytest.raises(JobberError, match=f"^--after {given!r}: write job ids separated by commas"):
            JobFlags.new_job_arguments(parsed("--after", given))

    def test_after_takes_labels_with_a_way_to_find_them(self):
        class Found:
            id = 7

        def find_job(ref: str) -> Found:
            if ref != "prep:x":
                raise JobNotFound(-1, f"no job is labelled {ref!r}")
            return Found()

        _, given = JobFlags.new_job_arguments(parsed("--after", "3, prep:x:any,prep:x:ok"), find_job)
        assert given["after"] == [(3, "ok"), (7, "any"), (7, "ok")]
        with pytest.raises(JobNotFound, match="no job is labelled 'train'"):
            JobFlags.new_job_arguments(parsed("--after", "train"), find_job)
        with pytest.raises(JobberError, match="^--after '3,': write job numbers or labels"):
            JobFlags.new_job_arguments(parsed("--after", "3,"), find_job)


class TestUnknown:
    def test_names_the_words_and_the_closest_option_of_each(self):
        parser = subcommand("run")
        assert JobFlags.unknown(parser, ["--memroy=1G", "--retires", "--zzz", "x"]) == (
            "unrecognized arguments: --memroy=1G --retires --zzz x; --memroy: did you mean --memory?; "
            "--retires: did you mean --retries?")
