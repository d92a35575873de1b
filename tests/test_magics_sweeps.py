"""Queues, dependencies and sweeps from a notebook: the magics and the sweep's grid in a real
ipykernel, driven over jupyter_client as a browser would (see kernel_session.py).

The grid's rows arrive as widget state ("rows" in comm_open and update messages); a click
on "Stop all" or on a row is the comm message the browser sends.
"""

from __future__ import annotations

import re

import pytest

from jobber._backends.local import gpus
from kernel_session import Kernel, job_id_of, outputs

pytestmark = pytest.mark.timeout(180)

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel(identity):
    kernel = Kernel.start()
    reply, _ = kernel.execute("%load_ext jobber_magics")
    assert reply["status"] == "ok"
    yield kernel
    kernel.shutdown(now=True)


def grid_of(kernel: Kernel) -> str:
    """The comm id of the last sweep grid opened."""
    for message in reversed(kernel.messages):
        if message.type == "comm_open" and "columns" in message.content["data"]["state"]:
            return message.content["comm_id"]
    raise AssertionError("no sweep grid was opened")


def row_states(kernel: Kernel, grid: str) -> list[list[dict]]:
    """Every "rows" the grid was sent, in order (its opening state first)."""
    seen = []
    for message in kernel.messages:
        if message.content.get("comm_id") != grid:
            continue
        state = message.content["data"].get("state", {})
        if "rows" in state:
            seen.append(state["rows"])
    return seen


def rows_until(kernel: Kernel, grid: str, predicate, timeout: float = 60) -> list[dict]:
    """Receive until the grid's latest rows satisfy ``predicate``; return them."""
    kernel.receive_until(lambda _m: bool(row_states(kernel, grid)) and predicate(row_states(kernel, grid)[-1]),
                         timeout=timeout)
    return row_states(kernel, grid)[-1]


def error_of(kernel: Kernel, source: str) -> str:
    reply, messages = kernel.execute(source)
    assert reply["status"] == "error" and reply["ename"] == "UsageError", reply
    shown = "".join("\n".join(m.content["traceback"]) for m in messages if m.type == "error")
    assert "Traceback" not in shown
    return reply["evalue"]


class TestSweep:
    def test_six_jobs_through_a_queue_of_two_end_in_one_grid(self, kernel, identity):
        kernel.execute("%jobber_queue pair --parallel 2")
        reply, messages = kernel.execute("%%jobber_sweep --queue pair --label grid lr=0.1,0.01 bs=32,64,128\n"
                                         "echo start {lr} {bs}; sleep 0.5; echo lr=$SWEEP_LR bs=$SWEEP_BS")
        assert reply["status"] == "ok"
        shown = outputs(messages)
        assert [m.type for m in shown] == ["execute_result"], "one output: the grid"
        data = shown[0].content["data"]
        assert WIDGET in data and data["text/plain"].startswith("sweep of 6 jobs: ")
        grid = grid_of(kernel)
        opening = row_states(kernel, grid)[0]
        assert [row["params"] for row in opening] == [["0.1", "32"], ["0.1", "64"], ["0.1", "128"],
                                                     ["0.01", "32"], ["0.01", "64"], ["0.01", "128"]]
        assert any(row["state"] == "pending" and "queue `pair`" in row["note"] for row in opening)
        final = rows_until(kernel, grid, lambda rows: all(row["ended"] for row in rows))
        assert [row["result"] for row in final] == ["exited (code 0)"] * 6
        assert [row["last"] for row in final] == [f"lr={lr} bs={bs}" for lr in ("0.1", "0.01")
                                                  for bs in ("32", "64", "128")]
        assert max(sum(row["state"] == "running" for row in rows) for rows in row_states(kernel, grid)) <= 2
        jobs = [identity.get_job(row["job"]) for row in final]
        assert [job.label for job in jobs] == [f"grid-{n}" for n in range(1, 7)]
        # The sweep is the cell's value: its params keep the numbers as numbers.
        reply, messages = kernel.execute("print(_.params[2], [r['state'] for r in _.table()] if "
                                         "isinstance(_.table(), list) else list(_.table()['state']))")
        text = "".join(m.content.get("text", "") for m in messages if m.type == "stream")
        assert text.startswith("{'lr': 0.1, 'bs': 128} ['exited', ")

    def test_stop_all_stops_the_running_and_the_waiting_jobs(self, kernel, identity):
        kernel.execute("%jobber_queue one --parallel 1")
        kernel.execute("%%jobber_sweep --queue one n=1,2,3,4\necho job {n}; sleep 300")
        grid = grid_of(kernel)
        rows_until(kernel, grid, lambda rows: rows[0]["state"] == "running" and rows[0]["last"] == "job 1")
        kernel.send_comm(grid, {"method": "custom", "content": {"event": "stop-all"}})
        final = rows_until(kernel, grid, lambda rows: all(row["ended"] for row in rows))
        assert [row["state"] for row in final] == ["stopped"] * 4
        jobs = [identity.get_job(row["job"]) for row in final]
        assert jobs[0].status().started_at is not None
        assert [job.status().started_at for job in jobs[1:]] == [None] * 3, "the waiting jobs never ran"

    def test_a_row_opens_its_jobs_live_view_below_the_grid(self, kernel, identity):
        kernel.execute("%%jobber_sweep word=alpha,beta\necho {word}")
        grid = grid_of(kernel)
        final = rows_until(kernel, grid, lambda rows: all(row["ended"] for row in rows))
        second = final[1]["job"]
        kernel.send_comm(grid, {"method": "custom", "content": {"event": "open", "job": second}})
        kernel.receive_until(lambda m: m.type == "comm_open" and m.content["data"]["state"].get("job_id") == second)
        view = kernel.view_of(second)
        kernel.receive_until(lambda m: "exited (code 0)" in kernel.status_line(view) or
                             "exited (code 0)" in m.content.get("data", {}).get("state", {}).get("status_html", ""))
        kernel.receive_until(lambda m: m.content.get("comm_id") == grid and
                             m.content["data"].get("state", {}).get("opened") == second)

    def test_mistakes_are_one_line_usage_errors(self, kernel):
        assert "needs parameters on its first line" in error_of(kernel, "%%jobber_sweep --queue q\necho hi")
        assert "NAME=V1,V2" in error_of(kernel, "%%jobber_sweep lr 0.1\necho {lr}")
        assert "is given twice" in error_of(kernel, "%%jobber_sweep a=1 a=2\necho {a}")
        assert "names an option of the jobs" in error_of(kernel, "%%jobber_sweep queue=1,2\necho {queue}")
        assert "the template does not use {b}" in error_of(kernel, "%%jobber_sweep a=1 b=2\necho {a}")
        assert "did you mean --memory?" in error_of(kernel, "%%jobber_sweep --memroy 1G a=1\necho {a}")


class TestRunAfterAndQueue:
    def test_after_chains_jobs_in_order_and_the_view_says_why_it_waits(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run --label first --no-follow\nsleep 1.5; echo one")
        first = identity.get_job(job_id_of(messages))
        _, messages = kernel.execute("%%jobber_run --after first\necho two")
        second = identity.get_job(job_id_of(messages))
        _, messages = kernel.execute(f"%%jobber_run --after {second.id}:any\necho three")
        third = identity.get_job(job_id_of(messages))
        view = kernel.view_of(second.id)
        kernel.receive_until(lambda m: "pending" in kernel.status_line(view) and f"after job {first.id}" in
                             kernel.status_line(view), timeout=10)
        kernel.receive_until(lambda m: "exited (code 0)" in kernel.status_line(kernel.view_of(third.id)), timeout=30)
        assert kernel.shown_lines(view) == ["two"], "the view followed the job once it ran"
        assert "exited (code 0)" in kernel.status_line(view)
        a, b, c = (job.status() for job in (first, second, third))
        assert a.ended_at <= b.started_at and b.ended_at <= c.started_at

    def test_a_failed_dependency_fails_the_job_with_a_note(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run --no-follow\nexit 3")
        first = job_id_of(messages)
        _, messages = kernel.execute(f"%%jobber_run --after {first}\necho never")
        view = kernel.view_of(job_id_of(messages))
        kernel.receive_until(lambda m: ">failed" in kernel.status_line(view), timeout=30)
        assert str(first) in re.sub("<[^>]+>", "", kernel.status_line(view))

    def test_jobber_queue_sets_and_shows(self, kernel, identity):
        reply, messages = kernel.execute("%jobber_queue train --parallel 3 --memory 1G")
        assert reply["status"] == "ok"
        text = outputs(messages)[0].content["data"]["text/plain"]
        assert re.search(r"^train\s+3\s+1 GiB\s+-\s+-\s+0\s+0$", text, re.M), text
        assert identity.queues()["train"]["parallel"] == 3
        kernel.execute("%jobber_queue other --cpus 2")
        _, messages = kernel.execute("%jobber_queue")
        text = outputs(messages)[0].content["data"]["text/plain"]
        assert text.splitlines()[0].split() == ["QUEUE", "PARALLEL", "MEMORY", "CPUS", "GPUS", "RUNNING", "WAITING"]
        assert [line.split()[0] for line in text.splitlines()[1:]] == ["other", "train"]
        assert "say which queue" in error_of(kernel, "%jobber_queue --parallel 2")

    def test_gpus_on_a_host_without_any_are_refused_in_one_sentence(self, kernel, identity):
        if gpus.discover():
            pytest.skip("this host has GPUs: the refusal is for a host without any")
        _, messages = kernel.execute("%%jobber_run --gpus 1 --no-follow --label g\necho gpu")
        said = "".join(str(m) for m in messages)
        assert "this host has no GPUs" in said
        assert "Traceback" not in said
        assert identity.get_jobs() == []



class TestOversubscription:
    """Jobs started together that ask for more CPUs than the host has: a warning with the fix."""

    def test_a_sweep_of_four_one_cpu_jobs_on_two_cores_warns_with_the_fix(self, kernel, identity):
        if (jobber_host_cpus := len(__import__("os").sched_getaffinity(0))) >= 4:
            pytest.skip(f"this host has {jobber_host_cpus} CPUs: four --cpu 1 jobs fit")
        reply, messages = kernel.execute("%%jobber_sweep --cpu 1 --name crowd n=1,2,3,4\nsleep 60 # {n}")
        try:
            assert reply["status"] == "ok", reply
            text = "".join(m.content.get("text", "") for m in outputs(messages) if m.type == "stream")
            assert re.search(r"warning: these 4 jobs ask for 4 CPUs \(this host has \d+\) at once: they slow each "
                             r"other down\. To run \d+ at a time, use a queue: `%jobber_queue NAME --parallel \d+` "
                             r"once, then `--queue NAME` on each run or sweep", text), text
        finally:
            kernel.execute("crowd.stop(grace=0)")

    def test_through_a_queue_that_fits_nothing_is_said(self, kernel, identity):
        reply, _ = kernel.execute("%jobber_queue fits --parallel 1")
        assert reply["status"] == "ok"
        reply, messages = kernel.execute("%%jobber_sweep --cpu 1 --queue fits --name calm n=1,2,3,4\nsleep 60 # {n}")
        try:
            assert reply["status"] == "ok", reply
            assert not [m for m in outputs(messages) if m.type == "stream" and "warning" in m.content.get("text", "")]
        finally:
            kernel.execute("calm.stop(grace=0)")
