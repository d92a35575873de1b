"""The magics and the live widget in a real ipykernel, driven over jupyter_client.

What a browser would see is read off the iopub channel: widget state arrives as
``comm_msg`` "update" messages, and a click is a ``comm_msg`` sent back to the kernel.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from kernel_session import Kernel, Message, job_id_of, lines_read, value  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def kernel(identity):
    kernel = Kernel.start()
    reply, _ = kernel.execute("%load_ext jobber_magics")
    assert reply["status"] == "ok"
    yield kernel
    kernel.shutdown(now=True)


class TestLiveWidget:
    def test_lines_arrive_while_the_job_runs(self, kernel, identity):
        reply, messages = kernel.execute("%%jobber_run\nfor i in $(seq 1 15); do echo tick $i; sleep 0.2; done")
        assert reply["status"] == "ok"
        job = identity.get_job(job_id_of(messages))
        displayed = [m.content["data"]["text/plain"] for m in messages if m.type == "display_data"]
        assert displayed == [f"JobWidget(job={job.id})"]
        log = kernel.comm_of("HTMLModel", "jobber-log")
        ticks, ticks_while_running = kernel.follow_ticks(log, job, last=15, timeout=30)
        assert ticks == list(range(1, 16))
        assert len(ticks_while_running) >= 5, f"lines must reach the browser while the job runs: {ticks_while_running}"
        kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m))

    def test_a_flood_is_sent_as_few_bounded_updates(self, kernel, identity):
        started = time.monotonic()
        _, messages = kernel.execute(
            "%%jobber_run\nfor i in $(seq 0 19); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.1; done")
        job = identity.get_job(job_id_of(messages))
        log = kernel.comm_of("HTMLModel", "jobber-log")
        # The updater's last word: the status line says how the job ended.
        last = kernel.receive_until(lambda m: m.type == "comm_msg" and "exited (code 0)" in value(m))
        updates = kernel.updates(log)
        duration = last.at - started
        assert "200000</pre>" in value(updates[-1]) and job.status().elapsed >= 2
        assert len(updates) <= 5 * duration + 3, f"{len(updates)} updates in {duration:.1f} s"
        sizes = [len(json.dumps(m.content)) for m in updates]
        assert max(sizes) < 64 * 1024, "each update carries the last 1000 lines, not the whole history"

    def test_the_stop_button_stops_the_job(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run\necho started; sleep 300")
        job = identity.get_job(job_id_of(messages))
        log = kernel.comm_of("HTMLModel", "jobber-log")
        kernel.receive_until(lambda m: m.type == "comm_msg" and m.content["comm_id"] == log and "started" in value(m))
        # Exactly what the browser sends when the button is clicked.
        kernel.send_comm(kernel.comm_of("ButtonModel"), {"method": "custom", "content": {"event": "click"}})
        kernel.receive_until(lambda m: m.type == "comm_msg" and ">stopped<" in value(m))
        assert job.status().state == "stopped"

    def test_a_reopened_page_gets_the_current_state(self, kernel, identity):
        _, messages = kernel.execute("%%jobber_run\necho one; echo two")
        identity.get_job(job_id_of(messages)).wait(30)
        log = kernel.comm_of("HTMLModel", "jobber-log")
        kernel.receive_until(lambda m: m.type == "comm_msg" and m.content["comm_id"] == log and "two" in value(m))
        count = len(kernel.updates(log))
        # A new page asks every widget model for its state (what JupyterLab does on reload).
        kernel.send_comm(log, {"method": "request_state"})
        kernel.receive_until(lambda m: len(kernel.updates(log)) > count)
        assert "one\ntwo</pre>" in value(kernel.updates(log)[-1])


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
            assert f"{ending.id:>5}  {'failed (code 3)':<32} {'local':<8} sleep 1; echo finished; exit 3" in table
            assert f"{lasting.id:>5}  {'running':<32} {'local':<8} while true; do echo alive; sleep 0.2; done" in table

            second.execute(f"%jobber_tail {lasting.id} -f -n 3")
            log = second.comm_of("HTMLModel", "jobber-log")
            second.receive_until(lambda m: m.type == "comm_msg" and m.content["comm_id"] == log
                                 and value(m).count("alive") == 3)
            # The status line counts the lines the view has read: 3 at first, then new ones.
            second.receive_until(lambda m: m.type == "comm_msg" and lines_read(value(m)) >= 8)
            assert lasting.status().state == "running"
            reply, _ = second.execute(f"%jobber_stop {lasting.id}")
            assert reply["status"] == "ok" and lasting.status().state == "stopped"
        finally:
            second.shutdown(now=True)


def test_kernels_run_this_environment(kernel):
    _, messages = kernel.execute("import sys, jobber_magics; print(sys.executable, jobber_magics.__file__)")
    out = "".join(m.content["text"] for m in messages if m.type == "stream")
    assert out.split()[1].startswith(os.path.dirname(os.path.dirname(__file__)))
