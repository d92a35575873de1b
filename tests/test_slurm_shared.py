"""A Slurm function job needs its job directory on a filesystem the nodes share
(``jobber._backends.slurm.shared``); checked against a made-up cluster of several nodes
(a ``scontrol`` on PATH that lists them) and this host's real mounts."""

from __future__ import annotations

import os
import socket

import pytest

from jobber import JobError
from jobber._backends.slurm.shared import NETWORK_FILESYSTEMS, check_shared, filesystem_type
from jobber._jobs.pycall import pack_call


def add(a, b):
    return a + b


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Makes ``scontrol show nodes`` list the given node names."""

    def with_nodes(*names: str) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        lines = "\n".join(f"NodeName={n} Arch=x86_64 NodeHostName={n} State=IDLE" for n in names)
        script = bin_dir / "scontrol"
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    return with_nodes


def test_a_cluster_of_this_host_alone_shares_everything(cluster, tmp_path):
    cluster(socket.gethostname().split(".")[0])
    check_shared(tmp_path)


def test_other_nodes_and_a_local_filesystem_are_refused_saying_what_to_do(cluster, tmp_path):
    kind, mount = filesystem_type(tmp_path)
    if kind in NETWORK_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on a network filesystem ({kind}) here")
    cluster("node17", "node18")
    with pytest.raises(JobError) as err:
        check_shared(tmp_path / "not" / "made" / "yet")
    text = str(err.value)
    assert f"is on {mount} ({kind}), which node17, node18 cannot see" in text
    assert "JOBBER_JOBS_DIR" in text and "backend=\"local\"" in text


def test_new_function_job_on_slurm_checks_it_before_making_the_job(cluster, store):
    if filesystem_type(store.root)[0] in NETWORK_FILESYSTEMS:
        pytest.skip("the jobs directory is on a network filesystem here")
    cluster("node17")
    with pytest.raises(JobError, match="filesystem the nodes share"):
        store.new_function_job(pack_call(add, (1, 2)), backend="slurm")
    assert store.get_jobs() == []


def test_the_filesystem_of_a_path_is_its_mount(tmp_path):
    assert filesystem_type("/proc/self")[0] == "proc"
    assert filesystem_type(tmp_path / "missing" / "deeper") == filesystem_type(tmp_path)
