"""The live log widget and what it renders: log lines, charts, HTML displays, following.

Widgets are driven in-process on real jobs (ipywidgets without a kernel sends nothing);
the same widget inside a real kernel, seen through its comm messages, is in test_kernel.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from jobber import JobStatus, Limits
from jobber._backends.local.isolation import choose
from jobber_magics._charts import ResourceHistory, resource_chart_html
from jobber_magics._display import JobList, format_elapsed, job_html, log_html, status_html
from jobber_magics._loglines import LogLines
from jobber_magics._widget import JobWidget
from polling import wait_for

BACKEND, UNCONFINED_REASON = choose()
needs_cgroup = pytest.mark.skipif(
    BACKEND.NAME == "none", reason=f"jobs are not isolated on this host: {UNCONFINED_REASON}"
)


class TestLogLines:
    def test_keeps_only_the_last_lines_of_a_huge_log(self):
        lines = LogLines(max_lines=1000)
        for start in range(0, 200_000, 7_000):  # chunks both larger and smaller than the ring
            lines.feed(b"".join(b"line %d\n" % i for i in range(start, min(start + 7_000, 200_000))))
        text = lines.text()
        assert len(lines) == 1000 and lines.total_lines == 200_000
        assert text.splitlines()[0] == "line 199000" and text.endswith("line 199999")

    def test_a_gigantic_line_without_newline_is_cut(self):
        lines = LogLines(max_lines=10, max_line_chars=100)
        for _ in range(1000):
            lines.feed(b"x" * 50_000)  # 50 MB, never a newline
        assert lines.text() == "x" * 100 + "…"
        lines.feed(b"\nnext\n")
        assert lines.text() == "x" * 100 + "…\nnext"

    @pytest.mark.parametrize("text", ["é", "€", "😀", "naïve café ✓ 🚀"])
    def test_multibyte_characters_survive_any_split(self, text):
        data = text.encode() + b"\n"
        for cut in range(len(data) + 1):
            lines = LogLines()
            lines.feed(data[:cut])
            lines.feed(data[cut:])
            assert lines.text() == text, f"split at byte {cut}"

    def test_invalid_utf8_shows_replacement_characters(self):
        lines = LogLines()
        lines.feed(b"ok \xff\xfe bytes\n")
        lines.feed(b"cut \xe2\x82")  # a truncated euro sign at the very end of the log
        lines.finish()
        assert lines.text() == "ok \ufffd\ufffd bytes\ncut \ufffd"

    def test_carriage_return_progress_shows_its_last_state(self):
        lines = LogLines()
        lines.feed(b"download\n 10%|#   |\r")
        assert lines.text() == "download\n 10%|#   |"  # until the next redraw has text
        lines.feed(b" 50%|##  |\r 10")
        assert lines.text() == "download\n 10"
        lines.feed(b"0%|####|\r\ndone\r\n")
        assert lines.text() == "download\n 100%|####|\ndone"

    def test_ansi_colours_are_dropped(self):
        lines = LogLines()
        lines.feed(b"\x1b[31mred\x1b[0m and \x1b[1;32mgreen\x1b[0m\x1b[K\n")
        assert lines.text() == "red and green"

    def test_skipping_ahead_in_a_big_chunk_matches_line_by_line(self):
        data = "".join(f"{i} é\r{i} ü\n" for i in range(5000)).encode() + b"partial \xc3"
        whole, piecewise = LogLines(max_lines=100), LogLines(max_lines=100)
        whole.feed(data)
        for i in range(0, len(data), 3):
            piecewise.feed(data[i : i + 3])
        whole.finish(), piecewise.finish()
        assert whole.text() == piecewise.text()
        assert whole.total_lines == piecewise.total_lines == 5000
        assert whole.text().endswith("4999 ü\npartial \ufffd")

    def test_text_can_be_limited_to_the_newest_characters(self):
        lines = LogLines()
        lines.feed(b"".join(b"%04d\n" % i for i in range(100)))
        assert lines.text(max_chars=12) == "0098\n0099"


class TestCharts:
    @staticmethod
    def status(memory, cpu, *, state="running"):
        return JobStatus(state=state, memory_bytes=memory, cpu_seconds=cpu, peak_memory_bytes=memory)

    def test_history_thins_itself_to_its_capacity(self):
        history = ResourceHistory(interval=0.5, capacity=20)
        for i in range(1000):
            history.add(i * 0.5, self.status(i, i * 0.25))
        assert len(history.samples) <= 20
        assert history.samples[0].t == 0 and history.samples[-1].t >= 400, "the whole run stays in view"

    def test_memory_chart_draws_the_limit_and_says_how_close(self):
        history = ResourceHistory(interval=0)
        for i in range(10):
            history.add(i, self.status(i * 5 << 20, i * 0.5))
        html = resource_chart_html(history, Limits(memory="50M", cpu=0.5), running=True)
        assert html.count('class="limit"') == 2  # memory and CPU limit lines
        assert "memory: now 45 MiB, peak 45 MiB, limit 50 MiB" in html
        assert "CPU: 0.50 cores now, limit 0.5" in html

    def test_nothing_measured_without_a_cgroup(self):
        history = ResourceHistory()
        assert not history.add(0, self.status(None, None))
        assert "waiting" in resource_chart_html(history, Limits(), running=True)
        assert resource_chart_html(history, Limits(), running=False) == ""


class TestDisplays:
    def test_log_and_command_are_escaped(self, store):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in log_html("<script>alert(1)</script>")
        job = store.new_job("echo '<b>not bold</b>'")
        assert "<b>not bold</b>" not in job_html(job) and "&lt;b&gt;not bold" in job_html(job)

    def test_status_line_says_outcome_and_isolation(self):
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        status = JobStatus(state="oom-killed", oom_killed=True, started_at=start,
                           ended_at=start + timedelta(seconds=1.25), limits=Limits(memory="50M"),
                           isolation="none", isolation_note="not isolated: no writable cgroup: read-only file system")
        line = status_html(7, status)
        assert "job 7" in line and "killed: out of memory at 50 MiB" in line and "1.2 s" in line
        assert ">not isolated<" in line and "not isolated: no writable cgroup: read-only file system" in line

    @pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.42, "0.4 s"), (75, "1 min 15 s"), (7322, "2 h 02 min")])
    def test_elapsed_reads_naturally(self, seconds, text):
        assert format_elapsed(seconds) == text

    def test_job_list_renders_both_ways(self, store):
        first, second = store.new_job("echo one"), store.new_job("echo two\necho more")
        first.start()
        first.wait(30)
        jobs = JobList([first, second])
        assert repr(jobs).splitlines()[1:] == [
            f"{first.id:>5}  {'exited (code 0)':<32} {'local':<8} echo one",
            f"{second.id:>5}  {'created':<32} {'local':<8} echo two …",
        ]
        assert "<table>" in jobs._repr_html_() and "exited (code 0)" in jobs._repr_html_()
        assert "No jobs yet" in repr(JobList()) and "No jobs yet" in JobList()._repr_html_()


class TestJobWidget:
    def test_shows_the_output_and_the_final_status(self, store):
        job = store.new_job("for i in 1 2 3; do echo \"line $i <&>\"; sleep 0.1; done; exit 3")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        assert "line 1 &lt;&amp;&gt;\nline 2 &lt;&amp;&gt;\nline 3 &lt;&amp;&gt;</pre>" in widget._log_view.value
        assert "failed (code 3)" in widget._status_view.value and "3 lines" in widget._status_view.value
        assert widget._stop_button.disabled and widget._stop_button.layout.display == "none"

    def test_text_repr_is_deterministic(self, store):
        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        assert repr(widget) == f"JobWidget(job={job.id})"
        assert widget._repr_mimebundle_()["text/plain"] == f"JobWidget(job={job.id})"

    def test_one_updater_thread_which_ends_with_the_job(self, store):
        job = store.new_job("sleep 0.5; echo bye")
        job.start()
        before = set(threading.enumerate())
        widget = JobWidget(job)
        assert set(threading.enumerate()) - before == {widget._thread}
        assert widget._thread.name == f"jobber-widget-job-{job.id}"
        assert widget.wait(30)
        assert widget._thread not in threading.enumerate() and "bye" in widget._log_view.value

    def test_closing_stops_the_updater_promptly_although_the_job_is_silent(self, store):
        job = store.new_job("sleep 300")
        job.start()
        widget = JobWidget(job)
        time.sleep(0.5)
        started = time.monotonic()
        widget.close()
        assert widget.wait(2), "the updater must notice the close while the job says nothing"
        assert time.monotonic() - started < 1
        assert job.status().state == "running", "closing the view does not stop the job"

    def test_the_stop_button_stops_the_job(self, store):
        job = store.new_job("echo started; sleep 300")
        job.start()
        widget = JobWidget(job)
        wait_for(lambda: "started" in widget._log_view.value, what="first line")
        widget._stop_button.click()  # what a click in the browser triggers
        assert job.status().state == "stopped"
        assert widget.wait(5)
        assert ">stopped<" in widget._status_view.value

    def test_a_stop_that_fails_is_shown_not_raised(self, store):
        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        widget.wait(30)
        job.stop = lambda grace=5.0: (_ for _ in ()).throw(__import__("jobber").JobError("cgroup vanished"))
        widget._on_stop_click(widget._stop_button)
        assert "could not stop job" in widget._status_view.value and "cgroup vanished" in widget._status_view.value

    @needs_cgroup
    def test_an_oom_kill_is_named_and_the_memory_limit_drawn(self, store):
        job = store.new_job(
            "python3 -c 'import time\nx = []\nfor i in range(40):\n    x.append(b\"1\" * (5 << 20)); time.sleep(0.05)'",
            Limits(memory="50M"),
        )
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        assert "killed: out of memory at 50 MiB" in widget._status_view.value
        assert 'class="limit"' in widget._chart_view.value and "limit 50 MiB" in widget._chart_view.value

    def test_a_flood_of_output_is_coalesced_into_few_bounded_updates(self, store):
        # 200k lines in bursts over about two seconds.
        job = store.new_job("for i in $(seq 0 19); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.1; done")
        updates = []
        job.start()
        widget = JobWidget(job)
        widget._log_view.observe(lambda change: updates.append(len(change["new"])), "value")
        started = time.monotonic()
        assert widget.wait(60)
        duration = time.monotonic() - started
        assert "200000</pre>" in widget._log_view.value
        assert "200,000 lines, last 1,000 shown" in widget._status_view.value
        assert len(updates) <= 5 * duration + 3, f"{len(updates)} updates in {duration:.1f} s"
        assert max(updates) < 20_000, "each update carries the last 1000 lines, not the history"

    def test_the_updater_never_prints(self, store, capfd):
        job = store.new_job("echo hello; exit 1")
        job.start()
        JobWidget(job).wait(30)
        assert capfd.readouterr() == ("", "")

    def test_following_from_the_last_lines(self, store):
        job = store.new_job("seq 1 5000")
        job.start()
        job.wait(30)
        widget = JobWidget(job, lines=3, offset=-100)
        assert widget.wait(30)
        assert widget._log_view.value.count("\n") == 2 and "4998\n4999\n5000</pre>" in widget._log_view.value
