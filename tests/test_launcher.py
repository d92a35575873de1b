"""The compiled launcher: built on first use into the cache, reused, and a quiet fallback.

Real compiles with the system C compiler into a fresh ``$XDG_CACHE_HOME`` per test, and
real jobs. Which supervisor ran a job is read by the job itself: its parent process is the
resident half of its supervisor (the launcher binary, or ``supervisor.py --launch``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jobber._backends.local import launcher_build as _launcher

# The job prints a marker, then its parent's argv (NUL-separated), with no help from $PATH.
WHO_SUPERVISES = "echo hi; /bin/cat /proc/$PPID/cmdline"
HAS_COMPILER = bool(shutil.which("cc") or shutil.which("gcc"))
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler (cc, gcc) on this host")


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """A new empty cache, no launcher chosen yet, nothing forced by the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JOBBER_LAUNCHER", raising=False)
    monkeypatch.delenv("CC", raising=False)
    _launcher.reset()
    yield tmp_path / "cache" / "jobber"
    _launcher.reset()


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """$CC names a missing program and $PATH holds no cc or gcc."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("PATH", str(empty))


def supervisor_of(store, command: str = WHO_SUPERVISES) -> list[str]:
    """Run a job to the end; the argv of the process that supervised it."""
    job = store.new_job(command)
    job.start()
    status = job.wait(60)
    buf = bytearray(65536)
    out = bytes(buf[: job.tail(buf)])
    assert (status.state, status.exit_code) == ("exited", 0), (status, out)
    marker, _, argv = out.partition(b"\n")
    assert marker == b"hi", out
    return [part.decode() for part in argv.split(b"\0") if part]


def is_python_supervisor(argv: list[str]) -> bool:
    return argv[0] == sys.executable and argv[1:3] == ["-I", "-S"] and argv[3] == _launcher._SUPERVISOR \
        and argv[4] == "--launch"


def stderr_lines(capfd) -> list[str]:
    return capfd.readouterr().err.splitlines()


class TestWithoutACompiler:
    def test_one_line_says_so_and_the_job_runs_under_the_python_supervisor(self, store, no_compiler, capfd, fresh):
        argv = supervisor_of(store)
        assert is_python_supervisor(argv), argv
        lines = stderr_lines(capfd)
        assert len(lines) == 1, lines
        assert lines[0].startswith("jobber: no C compiler found (tried $CC=")
        assert "cc, gcc" in lines[0] and "Python supervisor" in lines[0] and "install gcc" in lines[0]
        assert not fresh.exists() or not list(fresh.glob("launcher-*"))

    def test_the_line_is_printed_once_per_process(self, store, no_compiler, capfd):
        for _ in range(3):
            assert is_python_supervisor(supervisor_of(store))
        assert len(stderr_lines(capfd)) == 1

    def test_the_cli_prints_the_jobs_output_and_one_line(self, demo, jobs_dir, no_compiler, tmp_path):
        env = {**os.environ, "JOBBER_ROOT": str(demo["root"]), "JOBBER_CERT": str(demo["client"]),
               "JOBBER_JOBS_DIR": str(jobs_dir)}
        result = subprocess.run([sys.executable, "-m", "jobber", "run", "--follow", "--", "echo hi"],
                                capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path, check=False)
        assert (result.returncode, result.stdout) == (0, "hi\n"), result
        # Beside the CLI's own "job N started" and outcome lines, exactly one about the launcher.
        lines = [line for line in result.stderr.splitlines()
                 if not re.fullmatch(r"job \d+ started.*|jobber: job \d+ .*", line)]
        assert len(lines) == 1 and lines[0].startswith("jobber: no C compiler found"), result.stderr

    @needs_compiler
    def test_a_cc_naming_a_missing_program_falls_through_to_cc(self, store, monkeypatch, tmp_path, capfd, fresh):
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
        argv = supervisor_of(store)
        assert argv[0].startswith(str(fresh / "launcher-")), argv
        assert stderr_lines(capfd) == []


class TestBrokenBuilds:
    def test_a_missing_source_falls_back_with_one_line(self, store, monkeypatch, tmp_path, capfd, fresh):
        missing = tmp_path / "site-packages" / "launcher.c"
        monkeypatch.setattr(_launcher, "_SOURCE", missing)
        assert is_python_supervisor(supervisor_of(store))
        lines = stderr_lines(capfd)
        assert len(lines) == 1, lines
        assert str(missing) in lines[0] and "reinstall jobber" in lines[0] and "Python supervisor" in lines[0]
        assert not fresh.exists()

    def test_a_failing_compiler_falls_back_with_one_line_and_keeps_its_output(
            self, store, monkeypatch, tmp_path, capfd, fresh):
        cc = tmp_path / "broken-cc"
        cc.write_text("#!/bin/sh\necho 'launcher.c:1:1: error: this compiler is broken' >&2\nexit 1\n")
        cc.chmod(0o755)
        monkeypatch.setenv("CC", str(cc))
        assert is_python_supervisor(supervisor_of(store))
        lines = stderr_lines(capfd)
        assert len(lines) == 1, lines
        assert "could not build the launcher" in lines[0] and "this compiler is broken" in lines[0]
        logs = list(fresh.glob("launcher-*.log"))
        assert len(logs) == 1 and "this compiler is broken" in logs[0].read_text()
        assert str(logs[0]) in lines[0]
        assert not [p for p in fresh.iterdir() if not p.name.endswith(".log")]  # no binary, no temp file

    def test_a_compiler_whose_output_cannot_run_falls_back(self, store, monkeypatch, tmp_path, capfd, fresh):
        cc = tmp_path / "bad-output-cc"  # "compiles" a program that does not behave like the launcher
        cc.write_text('#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\nprintf "#!/bin/sh\\nexit 0\\n" > "$2"\n')
        cc.chmod(0o755)
        monkeypatch.setenv("CC", str(cc))
        assert is_python_supervisor(supervisor_of(store))
        lines = stderr_lines(capfd)
        assert len(lines) == 1 and "does not run" in lines[0], lines
        assert not list(fresh.glob("launcher-*"))

    @needs_compiler
    def test_a_cache_that_is_a_file_falls_back_with_one_line(self, store, capfd, fresh):
        fresh.parent.mkdir(parents=True)
        fresh.write_text("not a directory")
        assert is_python_supervisor(supervisor_of(store))
        lines = stderr_lines(capfd)
        assert len(lines) == 1 and str(fresh) in lines[0] and "XDG_CACHE_HOME" in lines[0], lines

    def test_an_unexpected_error_still_falls_back_with_one_line(self, store, monkeypatch, capfd):
        def broken():
            raise RuntimeError("something unforeseen")

        monkeypatch.setattr(_launcher, "_build", broken)
        assert is_python_supervisor(supervisor_of(store))
        lines = stderr_lines(capfd)
        assert len(lines) == 1 and "RuntimeError: something unforeseen" in lines[0], lines

    def test_choosing_python_is_silent(self, store, monkeypatch, capfd, fresh):
        monkeypatch.setenv("JOBBER_LAUNCHER", "python")
        assert is_python_supervisor(supervisor_of(store))
        assert stderr_lines(capfd) == []
        assert not fresh.exists()


@needs_compiler
class TestTheCompiledLauncher:
    def test_the_first_job_builds_it_into_the_cache_and_runs_under_it(self, store, capfd, fresh):
        argv = supervisor_of(store)
        binaries = list(fresh.glob("launcher-*"))
        assert len(binaries) == 1, binaries
        binary = binaries[0]
        assert binary.name == f"launcher-{_source_digest()}-{os.uname().machine}"
        assert argv[0] == str(binary) and argv[2:4] == [sys.executable, _launcher._SUPERVISOR], argv
        mode = binary.stat().st_mode
        assert stat.S_IMODE(mode) == 0o700 and stat.S_IMODE(fresh.stat().st_mode) == 0o700
        assert stderr_lines(capfd) == []

    def test_it_is_reused_without_a_compiler(self, store, monkeypatch, tmp_path, capfd, fresh):
        supervisor_of(store)
        (binary,) = fresh.glob("launcher-*")
        before = os.stat(binary)
        _launcher.reset()
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))  # a rebuild could not happen
        monkeypatch.setenv("PATH", str(empty))
        argv = supervisor_of(store)
        assert argv[0] == str(binary)
        after = os.stat(binary)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert stderr_lines(capfd) == []

    def test_a_changed_source_builds_a_new_binary(self, store, monkeypatch, tmp_path, fresh):
        supervisor_of(store)
        (old,) = fresh.glob("launcher-*")
        upgraded = tmp_path / "upgraded" / "launcher.c"
        upgraded.parent.mkdir()
        upgraded.write_bytes(_launcher._SOURCE.read_bytes() + b"\n/* the next release */\n")
        monkeypatch.setattr(_launcher, "_SOURCE", upgraded)
        _launcher.reset()
        argv = supervisor_of(store)
        assert argv[0] != str(old) and Path(argv[0]).parent == fresh
        assert sorted(fresh.glob("launcher-*")) == sorted([old, Path(argv[0])])

    def test_a_binary_others_could_write_is_rebuilt(self, store, fresh):
        supervisor_of(store)
        (binary,) = fresh.glob("launcher-*")
        binary.chmod(0o777)
        before = os.stat(binary).st_ino
        _launcher.reset()
        assert supervisor_of(store)[0] == str(binary)
        assert stat.S_IMODE(binary.stat().st_mode) == 0o700 and os.stat(binary).st_ino != before

    def test_cc_may_carry_options(self, store, monkeypatch, fresh):
        monkeypatch.setenv("CC", f"{shutil.which('cc') or shutil.which('gcc')} -DJOBBER_TEST=1 -O1")
        assert supervisor_of(store)[0].startswith(str(fresh / "launcher-"))


def test_the_source_ships_next_to_the_module():
    """What a wheel must hold: launcher.c beside launcher_build.py and the Python supervisor."""
    here = Path(_launcher.__file__).parent
    assert _launcher._SOURCE == here / "launcher.c" and _launcher._SOURCE.is_file()
    assert Path(_launcher._SUPERVISOR) == here / "supervisor.py" and Path(_launcher._SUPERVISOR).is_file()
    assert (Path(_launcher.__file__).parents[2] / "py.typed").is_file()


def _source_digest() -> str:
    import hashlib

    return hashlib.sha256(_launcher._SOURCE.read_bytes()).hexdigest()[:16]
