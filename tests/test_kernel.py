"""The magics and the live widget in a real ipykernel, driven over jupyter_client.

What a browser would see is read off the iopub channel: widget state arrives as
``comm_msg`` "update" messages, and a click is a ``comm_msg`` sent back to the kernel.
"""

from __future__ import annotations

import html
import json
import os
import time

import pytest

import jobber
from kernel_session import Kernel, Message, job_id_of, lines_read, outputs, value  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def kernel(identity):
    kernel = Kernel.start()
    reply, _ = kernel.execute("%load_ext jobber_magics")
    assert reply["status"] == "ok"
    yield kernel
    kernel.shutdown(now=True)


WIDGET = "application/vnd.jupyter.widget-view+json"


class TestLiveWidget:
    def test_one_output_the_live_view_and_lines_arrive_while_the_job_runs(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_run\nfor i in $(seq 1 15); do echo tick $i; sleep 0.2; done")
        assert reply["status"] == "ok"
        job = identity.get_job(job_id_of(messages))
        shown = outputs(messages)
        assert [m.type for m in shown] == ["execute_result"], "one output per job"
        data = shown[0].content["data"]
        assert WIDGET in data and data["text/plain"].startswith(f"job {job.id} · running · ")
        assert " · as of " in data["text/plain"] and "as of" in data["text/html"], "its static form says when"
        view = kernel.view_of(job.id)
        assert data[WIDGET]["model_id"] == view
        ticks, ticks_while_running = kernel.follow_ticks(view, job, last=15, timeout=30)
        assert ticks == list(range(1, 16))
        assert len(ticks_while_running) >= 5, f"lines must reach the browser while the job runs: {ticks_while_running}"
        kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m))
        assert sum(len(m.content["data"]["content"]["lines"]) for m in kernel.frames(view)) == 15, "appended, not resent"

    def test_no_follow_is_one_line(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run --no-follow\nsleep 300")
        job_id = job_id_of(messages)
        assert [(m.type, m.content.get("text")) for m in outputs(messages)] == [
            ("stream", f"job {job_id} started: `%jobber_tail -f {job_id}` to watch\n")]
        kernel.execute(f"%jobber_stop {job_id}")

    def test_a_flood_is_sent_as_few_bounded_frames(self, kernel, identity):
        started = time.monotonic()
        _, messages = kernel.execute(
            "%%jobber_run\nfor i in $(seq 0 19); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.1; done")
        job = identity.get_job(job_id_of(messages))
        view = kernel.view_of(job.id)
        # The updater's last word: the status line says how the job ended.
        last = kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m))
        frames = kernel.frames(view)
        duration = last.at - started
        assert kernel.shown_lines(view)[-1] == "200000" and job.status().elapsed >= 2
        assert len(frames) <= 5 * duration + 3, f"{len(frames)} frames in {duration:.1f} s"
        sizes = [len(json.dumps(m.content)) for m in frames + kernel.updates(view)]
        assert max(sizes) < 64 * 1024, "each message carries at most the last 1000 lines, not the whole history"

    def test_the_stop_button_stops_the_job(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run\necho started; sleep 300")
        job = identity.get_job(job_id_of(messages))
        view = kernel.view_of(job.id)
        kernel.receive_until(lambda m: "started" in kernel.shown_lines(view))
        # Exactly what the browser sends when the button is clicked.
        kernel.send_comm(view, {"method": "custom", "content": {"event": "stop"}})
        kernel.receive_until(lambda m: m.type == "comm_msg" and ">stopped<" in value(m))
        assert job.status().state == "stopped"

    def test_rerunning_a_running_cell_says_so_in_its_one_output(self, kernel, identity):
        source = "%%jobber_run\nsleep 300"
        _, messages = kernel.execute(source)
        first = job_id_of(messages)
        _, messages = kernel.execute(source)
        second = job_id_of(messages)
        assert second != first and len(outputs(messages)) == 1
        state = next(m for m in kernel.messages if m.type == "comm_open"
                     and m.content["data"]["state"].get("job_id") == second).content["data"]["state"]
        assert f"job {first} is still running from this cell" in state["notice_html"] and state["previous_job"] == first
        kernel.send_comm(kernel.view_of(second), {"method": "custom", "content": {"event": "stop-previous"}})
        kernel.receive_until(lambda m: m.type == "comm_msg" and "stopped" in
                             m.content["data"].get("state", {}).get("notice_html", ""))
        assert identity.get_job(first).status().state == "stopped"
        assert identity.get_job(second).status().state == "running"

    def test_a_reopened_page_gets_the_current_log(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run\necho one; echo two")
        job = identity.get_job(job_id_of(messages))
        job.wait(30)
        view = kernel.view_of(job.id)
        kernel.receive_until(lambda m: m.type == "comm_msg" and "exited" in value(m))
        count = len(kernel.updates(view))
        # A new page asks every widget model for its state (what JupyterLab does on reload).
        kernel.send_comm(view, {"method": "request_state"})
        kernel.receive_until(lambda m: len(kernel.updates(view)) > count)
        state = kernel.updates(view)[-1].content["data"]["state"]
        assert state["log_snapshot"] == "one\ntwo" and state["ended"] and "exited (code 0)" in state["status_html"]


class TestPythonNamesHint:
    HINT = ("`{n}` reaches the script as written, not as the value of n: add `--env N={n}` to the %%jobber_run "
            "line (IPython fills it in there) and write `$N` in the script")

    def test_a_notebook_variable_in_braces_gets_one_hint_and_the_job_runs_as_written(self, kernel, identity):
        kernel.execute("n = 5000")
        _, messages = kernel.execute("%%jobber_run\necho {n}")
        job = identity.get_job(job_id_of(messages))
        assert [m.type for m in outputs(messages)] == ["execute_result"], "the hint is in the view, not an output"
        state = next(m for m in messages if m.type == "comm_open"
                     and m.content["data"]["state"].get("job_id") == job.id).content["data"]["state"]
        assert state["notice_html"] == html.escape(self.HINT)
        assert sum(json.dumps(m.content).count("reaches the script as written") for m in messages) == 1
        assert job.wait(30).state == "exited" and jobber.last_lines(job, 5) == b"{n}\n"

        _, messages = kernel.execute("%%jobber_run --no-follow\necho {n}")
        job_id = job_id_of(messages)
        assert [(m.type, m.content.get("name"), m.content.get("text")) for m in outputs(messages)] == [
            ("stream", "stdout", f"{self.HINT}\njob {job_id} started: `%jobber_tail -f {job_id}` to watch\n")]
        assert identity.get_job(job_id).wait(30).state == "exited"

    def test_no_hint_for_the_shells_braces_or_unknown_names_and_the_fix_works(self, kernel, identity):
        kernel.execute("n = 5000")
        _, messages = kernel.execute("%%jobber_run --no-follow --env N={n}\necho $N ${HOME} {1..3} {undefined}")
        job = identity.get_job(job_id_of(messages))
        assert [(m.type, m.content.get("text")) for m in outputs(messages)] == [
            ("stream", f"job {job.id} started: `%jobber_tail -f {job.id}` to watch\n")]
        assert job.wait(30).state == "exited"
        assert jobber.last_lines(job, 5).decode() == f"5000 {os.environ['HOME']} {{1..3}} {{undefined}}\n"


class TestErrors:
    def test_a_jobber_error_is_one_line_without_traceback(self, kernel):
        reply, messages = kernel.execute("%jobber_tail 999")
        assert reply["status"] == "error" and reply["ename"] == "UsageError"
        text = "".join(m.content.get("text", "") for m in messages if m.type == "stream")
        errors = [m for m in messages if m.type == "error"]
        shown = text + "".join("\n".join(m.content["traceback"]) for m in errors)
        assert "Traceback" not in shown and "_magics.py" not in shown
        assert "no job 999 for this certificate" in shown


class TestKernelRestart:
    def test_jobs_outlive_a_killed_kernel_and_a_new_one_finds_them(self, identity):
        first = Kernel.start()
        try:
            first.execute("%load_ext jobber_magics")
            _, messages = first.execute("%%jobber_run --no-follow\nsleep 1; echo finished; exit 3")
            ending = identity.get_job(job_id_of(messages))
            _, messages = first.execute("%%jobber_run --no-follow\nwhile true; do echo alive; sleep 0.2; done")
            lasting = identity.get_job(job_id_of(messages))
        finally:
            first.shutdown(now=True)  # SIGKILL: nothing of the kernel is left to clean up
        assert ending.wait(30).describe() == "failed (code 3)"

        # The new kernel loads the extension from its configuration, as a site would set it.
        second = Kernel.start("--InteractiveShellApp.extensions=jobber_magics")
        try:
            reply, messages = second.execute("%jobber_jobs")
            assert reply["status"] == "ok"
            table = next(m for m in messages if m.type == "execute_result").content["data"]["text/plain"]
            rows = {line.split()[0]: line for line in table.splitlines()[1:]}
            assert "failed (code 3)" in rows[str(ending.id)] and rows[str(ending.id)].endswith(
                "local    -      sleep 1; echo finished; exit 3")
            assert " running " in rows[str(lasting.id)]

            second.execute(f"%jobber_tail {lasting.id} -f -n 3")
            view = second.view_of(lasting.id)
            second.receive_until(lambda m: second.shown_lines(view, start=snapshot(second, view)).count("alive") >= 3)
            # The status line counts the lines the view has read: 3 at first, then new ones.
            second.receive_until(lambda m: m.type == "comm_msg" and lines_read(value(m)) >= 8)
            assert lasting.status().state == "running"
            reply, _ = second.execute(f"%jobber_stop {lasting.id}")
            assert reply["status"] == "ok" and lasting.status().state == "stopped"
        finally:
            second.shutdown(now=True)


def snapshot(kernel, view: str) -> list[str]:
    """The log lines of a view as it was opened."""
    opened = next(m for m in kernel.messages if m.type == "comm_open" and m.content["comm_id"] == view)
    text = opened.content["data"]["state"]["log_snapshot"]
    return text.split("\n") if text else []


def test_kernels_run_this_environment(kernel):
    _, messages = kernel.execute("import sys, jobber_magics; print(sys.executable, jobber_magics.__file__)")
    out = "".join(m.content["text"] for m in messages if m.type == "stream")
    assert out.split()[1].startswith(os.path.dirname(os.path.dirname(__file__)))


class TestRemovedJob:
    def test_removing_a_viewed_job_tells_its_view(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run\necho hello")
        job = identity.get_job(job_id_of(messages))
        view = kernel.view_of(job.id)
        kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m))
        reply, messages = kernel.execute(f"%jobber_rm {job.id}")
        assert reply["status"] == "ok"
        kernel.receive_until(lambda m: any(u.content["data"]["state"].get("removed") for u in kernel.updates(view)))
        state = {}
        for update in kernel.updates(view):
            state.update(update.content["data"]["state"])
        assert state["removed"] == f"job {job.id} was removed" and state["following"] is False
        assert not state.get("problem") and "exited (code 0)" in state["status_html"]
        assert not any("Traceback" in json.dumps(m.content) for m in kernel.messages)


class TestFindAndCleanUp:
    def test_jobs_and_prune_by_label(self, kernel, identity):
        done = [identity.new_job(f"echo {label}", label=label) for label in ("x", "y", "x")]
        for job in done:
            job.start()
            assert job.wait(30).state == "exited"
        running = identity.new_job("python3 - <<'PY'\nimport time\ntime.sleep(300)\nPY", label="x")
        running.start()
        x_ids = [done[0].id, done[2].id, running.id]

        reply, messages = kernel.execute("%jobber_jobs --label x")
        assert reply["status"] == "ok"
        data = next(m for m in messages if m.type == "execute_result").content["data"]
        header, *rows = data["text/plain"].splitlines()
        assert "LABEL" in header and [int(row.split()[0]) for row in rows] == x_ids
        assert {row[header.index("LABEL"):].split()[0] for row in rows} == {"x"}, "a label column"
        assert rows[-1].endswith("python3 - <<'PY' …"), "the first line of the command"
        assert 'title="python3 - &lt;&lt;&#x27;PY&#x27;\nimport time' in data["text/html"], "all of it on hover"
        assert "(+3 lines)" in data["text/html"]
        _, messages = kernel.execute("%jobber_jobs --state running -n 1")
        rows = next(m for m in messages if m.type == "execute_result").content["data"]["text/plain"].splitlines()[1:]
        assert [int(row.split()[0]) for row in rows] == [running.id]

        _, messages = kernel.execute("%jobber_prune --label x --dry-run")
        said = "".join(m.content["text"] for m in messages if m.type == "stream")
        assert said == f"would remove 2 jobs: {done[0].id}, {done[2].id}; kept {running.id} (running)\n"
        reply, messages = kernel.execute("%jobber_prune --label x")
        assert reply["status"] == "ok"
        assert [job.id for job in identity.get_jobs()] == [done[1].id, running.id], "never a running job"
        reply, messages = kernel.execute(f"%jobber_rm {running.id}-{running.id + 5}")
        assert reply["status"] == "error" and f"job {running.id} kept: job {running.id} is running" in reply["evalue"]
        running.stop(grace=0)
