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
from jobber_magics._display import JobList, job_html, log_html, static_job_text, status_html
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
    def status(memory, cpu, *, state="running", peak=None, **more):
        return JobStatus(state=state, memory_bytes=memory, cpu_seconds=cpu,
                         peak_memory_bytes=memory if peak is None else peak, **more)

    def test_history_thins_itself_to_its_capacity(self):
        history = ResourceHistory(interval=0.5, capacity=20)
        for i in range(1000):
            history.add(i * 0.5, self.status(i, i * 0.25))
        assert len(history.samples) <= 20
        assert history.samples[0].t == 0 and history.samples[-1].t >= 400, "the whole run stays in view"

    def test_charts_are_scaled_to_the_limits_with_axes_and_values(self):
        history = ResourceHistory(interval=0)
        for i in range(10):
            history.add(i, self.status(i * 5 << 20, i * 0.5))
        html = resource_chart_html(history, Limits(memory="50M", cpu=0.5), running=True)
        assert html.count('class="limit"') == 2  # memory and CPU limit lines, labelled
        assert ">limit 50 MiB</text>" in html and ">limit 0.5</text>" in html
        assert "memory: now 45 MiB, peak 45 MiB, limit 50 MiB" in html
        assert "CPU: now 0.50 cores, average 0.50 cores (4.50 CPU-s), limit 0.5" in html
        memory, cpu = html.split('jobber-figure-cpu', 1)
        assert f'data-y-max="{50 << 20:g}"' in memory and ">50 MiB</text>" in memory, "memory on 0..limit"
        assert 'data-y-max="0.5"' in cpu and ">0.5 cores</text>" in cpu, "CPU in cores on 0..limit"
        assert ">0 s</text>" in html and ">9.0 s</text>" in html, "a time axis with the span"

    def test_without_limits_memory_goes_to_its_peak_and_cpu_to_the_hosts_cores(self):
        history = ResourceHistory(interval=0)
        for i in range(5):
            history.add(i, self.status(i << 20, i * 0.002))  # 0.002 cores: no wild autoscale
        html = resource_chart_html(history, Limits(), running=True, host_cpus=8)
        assert f'data-y-max="{4 << 20:g}"' in html and 'data-y-max="8"' in html and ">8 cores</text>" in html
        assert "no limit" in html and 'class="limit"' not in html

    def test_an_oom_killed_job_reaches_its_limit(self):
        history = ResourceHistory(interval=0)
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        for i in range(4):  # the last reading before the kill is far below the limit
            history.add(i * 0.5, self.status(87 << 20 if i == 3 else i << 20, i * 0.1))
        final = JobStatus(state="oom-killed", oom_killed=True, started_at=start, ended_at=start + timedelta(seconds=2),
                          peak_memory_bytes=200 << 20, cpu_seconds=0.4, limits=Limits(memory="200M"))
        history.finish(final)
        html = resource_chart_html(history, final.limits, running=False)
        points = html.split('points="', 1)[1].split('"', 1)[0].split()
        top = float(html.split('class="limit" ', 1)[1].split('y1="', 1)[1].split('"', 1)[0])
        assert float(points[-1].split(",")[1]) == top, "the memory line ends on the limit line"
        assert "memory: peak 200 MiB, limit 200 MiB" in html

    def test_a_short_job_shows_its_final_numbers(self):
        history = ResourceHistory()
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        history.add(0.1, self.status(3 << 20, 0.05))
        final = JobStatus(state="exited", exit_code=0, started_at=start, ended_at=start + timedelta(seconds=0.1),
                          peak_memory_bytes=3 << 20, cpu_seconds=0.05, limits=Limits(memory="64M"))
        history.finish(final)
        html = resource_chart_html(history, final.limits, running=False)
        assert "<svg" not in html, "no empty boxes"
        assert "memory: peak 3 MiB, limit 64 MiB" in html and "CPU: average 0.50 cores (0.05 CPU-s), no limit" in html

    def test_a_pids_limit_gets_a_process_chart(self):
        history = ResourceHistory(interval=0)
        for i in range(5):
            history.add(i, self.status(1 << 20, i * 0.1), processes=3 + i)
        html = resource_chart_html(history, Limits(pids=20), running=True)
        # The view's own readings: a burst between two of them is missed, and it says so.
        assert "jobber-chart-pids" in html and "processes: now 7, peak 7 (sampled), limit 20" in html
        history.peak_processes, history.peak_processes_measured = 18, True  # the kernel's pids.peak
        assert "processes: now 7, peak 18, limit 20" in resource_chart_html(history, Limits(pids=20), running=True)
        assert "jobber-chart-pids" not in resource_chart_html(history, Limits(), running=True)

    def test_colours_follow_the_jupyterlab_theme(self):
        history = ResourceHistory(interval=0)
        for i in range(3):
            history.add(i, self.status(i << 20, i * 0.1))
        html = resource_chart_html(history, Limits(memory="8M"), running=True)
        assert "fill:currentColor" in html and "var(--jp-brand-color1" in html
        assert "#" not in html.replace("#1f77b4", "").replace("#d62728", ""), "every colour has a theme variable"

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
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ended = None if seconds is None else start + timedelta(seconds=seconds)
        status = JobStatus(state="exited", started_at=None if seconds is None else start, ended_at=ended)
        assert status.elapsed_text == text

    def test_job_list_renders_both_ways(self, store):
        first, second = store.new_job("echo one"), store.new_job("echo two\necho more")
        first.start()
        first.wait(30)
        jobs = JobList([first, second])
        header, *rows = repr(jobs).splitlines()
        assert header.split() == ["ID", "STARTED", "DURATION", "RESULT", "BACKEND", "LABEL", "COMMAND"]
        started = first.status().started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        assert rows[0].split("  ")[0].strip() == str(first.id) and started in rows[0]
        assert "exited (code 0)" in rows[0] and rows[0].endswith("echo one")
        assert "created" in rows[1] and rows[1].endswith("echo two …")
        assert len({line.index("COMMAND" if i == 0 else "echo") for i, line in enumerate([header, *rows])}) == 1, "aligned"
        html = jobs._repr_html_()
        assert "<table" in html and "exited (code 0)" in html and ">started<" in html and ">duration<" in html
        assert html.count('<td style="padding:2px 8px;text-align:left;vertical-align:top;white-space:nowrap">') == 6 * 2
        assert html.count("<th ") == 8 and ">isolation<" in html and ">backend<" not in html, "said once"
        assert "every job: backend local</p>" in html, "the one backend of every job"
        assert html.count("width:100%;max-width:0") == 2, "the command takes the width left"
        assert 'title="echo two\necho more"' in html and "(+1 line)" in html, "the whole command on hover"
        assert "No jobs yet" in repr(JobList()) and "No jobs yet" in JobList()._repr_html_()

    def test_a_static_card_of_a_running_job_says_as_of_when(self, store):
        job = store.new_job("sleep 30")
        job.start()
        card = job_html(job)
        assert "running" in card and "as of " in card and f"%jobber_tail -f {job.id}" in card
        job.stop(grace=0)
        assert "as of" not in job_html(job) and "stopped" in job_html(job)


class Recorder:
    """The log messages a widget sends to the browser."""

    def __init__(self, widget):
        self.messages = []
        send = widget.send
        widget.send = lambda content, buffers=None: (self.messages.append(content), send(content, buffers))[1]

    def shown(self) -> list[str]:
        """The lines a browser applying the messages would have, as _jobview.js applies them."""
        lines = []
        for message in self.messages:
            lines = list(message["lines"]) if message["reset"] else lines + message["lines"]
        return lines


class TestJobWidget:
    def test_shows_the_output_and_the_final_status(self, store):
        job = store.new_job("for i in 1 2 3; do echo \"line $i <&>\"; sleep 0.1; done; exit 3")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        assert widget.log_text() == "line 1 <&>\nline 2 <&>\nline 3 <&>"
        assert "failed (code 3)" in widget.status_html and "3 lines" in widget.status_html
        assert widget.ended and widget.state == "failed" and not widget.stopping

    def test_one_line_is_one_line(self, store):
        job = store.new_job("echo once")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30) and "· 1 line" in widget.status_html and "1 lines" not in widget.status_html

    def test_the_log_is_sent_as_appended_lines(self, store):
        job = store.new_job("for i in $(seq 1 12); do echo tick $i; sleep 0.1; done; printf 'no newline'")
        widget = JobWidget(job)
        recorder = Recorder(widget)  # listening before the first line can be sent
        job.start()
        assert widget.wait(30)
        appends = [m for m in recorder.messages if not m["reset"]]
        assert len(appends) >= 3, "lines arrive in several frames while the job runs"
        assert all(len(m["lines"]) <= 12 for m in recorder.messages)
        assert sum(len(m["lines"]) for m in recorder.messages) <= 12, "no line is sent twice"
        assert recorder.shown() == [f"tick {i}" for i in range(1, 13)]
        assert recorder.messages[-1]["partial"] == "no newline"
        assert [m["frame"] for m in recorder.messages] == sorted({m["frame"] for m in recorder.messages})

    def test_a_new_page_gets_a_snapshot_and_only_later_frames(self, store):
        job = store.new_job("seq 1 5; sleep 0.5; seq 6 8")
        job.start()
        widget = JobWidget(job, lines=100)
        recorder = Recorder(widget)
        time_limit = time.monotonic() + 10
        while "5" not in widget.log_text() and time.monotonic() < time_limit:
            time.sleep(0.05)
        state = widget.get_state()  # what a reopened notebook asks for
        assert state["log_snapshot"].splitlines()[:5] == ["1", "2", "3", "4", "5"]
        assert widget.wait(30)
        later = [m for m in recorder.messages if m["frame"] > state["log_frame"]]
        assert state["log_snapshot"].splitlines() + [line for m in later for line in m["lines"]] == [str(i) for i in range(1, 9)]

    def test_the_mimebundle_is_the_widget_with_a_truthful_static_fallback(self, store):
        job = store.new_job("sleep 30")
        job.start()
        widget = JobWidget(job)
        data, _ = widget._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data
        assert data["text/plain"].startswith(f"job {job.id} · running · ") and " · as of " in data["text/plain"]
        assert "as of" in data["text/html"] and f"%jobber_tail -f {job.id}" in data["text/html"]
        widget.stop(grace=0)
        assert widget.wait(5)
        data, _ = widget._repr_mimebundle_()
        assert data["text/plain"] == static_job_text(job.id, job.status()) and "as of" not in data["text/plain"]

    def test_text_repr_is_deterministic(self, store):
        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        assert repr(widget) == f"JobWidget(job={job.id})"

    def test_one_updater_thread_which_ends_with_the_job(self, store):
        job = store.new_job("sleep 0.5; echo bye")
        job.start()
        before = set(threading.enumerate())
        widget = JobWidget(job)
        assert set(threading.enumerate()) - before == {widget._thread}
        assert widget._thread.name == f"jobber-widget-job-{job.id}"
        assert widget.wait(30)
        assert widget._thread not in threading.enumerate() and "bye" in widget.log_text()

    def test_closing_stops_the_updater_promptly_although_the_job_is_silent(self, store):
        job = store.new_job("sleep 300")
        job.start()
        widget = JobWidget(job)
        time.sleep(0.5)
        widget.close()
        # The job prints nothing for 300 s: only the close (seen at a heartbeat) can end the
        # updater before the job does. The 60 s only guards a hang.
        assert widget.wait(60), "the updater must notice the close while the job says nothing"
        assert job.status().state == "running", "closing the view does not stop the job"

    def test_a_silent_running_job_still_gets_a_status_update_every_frame(self, store):
        # The browser takes a running job's view for dead after 5 s without a word.
        job = store.new_job("sleep 300")
        job.start()
        widget = JobWidget(job)
        changes = []
        widget.observe(lambda change: changes.append(time.monotonic()), "status_html")
        # Redrawn again and again although the job prints nothing (the deadline guards a hang).
        wait_for(lambda: len(changes) >= 3, timeout=60, what="three redraws of a silent job")
        widget.close()

    def test_the_stop_button_stops_the_job(self, store):
        job = store.new_job("echo started; sleep 300")
        job.start()
        widget = JobWidget(job)
        wait_for(lambda: "started" in widget.log_text(), what="first line")
        widget._on_message(widget, {"event": "stop"}, [])  # what a click in the browser sends
        assert job.status().state == "stopped"
        assert widget.wait(5)
        assert ">stopped<" in widget.status_html and widget.ended

    def test_the_notice_button_stops_the_earlier_job(self, store):
        earlier, job = store.new_job("sleep 300"), store.new_job("sleep 300")
        earlier.start(), job.start()
        widget = JobWidget(job, notice=f"job {earlier.id} is still running from this cell", previous=earlier)
        assert widget.previous_job == earlier.id and "still running" in widget.notice_html
        widget._on_message(widget, {"event": "stop-previous"}, [])
        assert earlier.status().state == "stopped" and widget.previous_job == 0 and "stopped" in widget.notice_html
        assert job.status().state == "running"
        widget.close()

    def test_a_stop_that_fails_is_shown_not_raised(self, store):
        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        widget.wait(30)
        job.stop = lambda grace=5.0: (_ for _ in ()).throw(__import__("jobber").JobError("cgroup vanished"))
        widget._on_message(widget, {"event": "stop"}, [])
        assert "could not stop job" in widget.problem and "cgroup vanished" in widget.problem

    @needs_cgroup
    def test_an_oom_kill_is_named_and_the_memory_limit_reached(self, store):
        job = store.new_job(
            "python3 -c 'import time\nx = []\nfor i in range(40):\n    x.append(b\"1\" * (5 << 20)); time.sleep(0.05)'",
            Limits(memory="50M"),
        )
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        assert "killed: out of memory at 50 MiB" in widget.status_html
        assert 'class="limit"' in widget.charts_html and "limit 50 MiB" in widget.charts_html
        memory = widget.charts_html.split("jobber-figure-cpu")[0]
        if "<polyline" in memory:
            top = memory.split('class="limit" ', 1)[1].split('y1="', 1)[1].split('"', 1)[0]
            assert memory.split('points="', 1)[1].split('"', 1)[0].split()[-1].endswith("," + top)

    @needs_cgroup
    def test_a_pids_limit_shows_the_process_count(self, store):
        job = store.new_job("for i in 1 2 3 4 5; do sleep 3 & done; sleep 2", Limits(pids=20))
        job.start()
        widget = JobWidget(job)
        wait_for(lambda: "processes: now" in widget.charts_html, timeout=10, what="a process count")
        assert "limit 20" in widget.charts_html.split("processes:")[1]
        widget.stop(grace=0)

    def test_a_flood_of_output_is_coalesced_into_few_bounded_messages(self, store):
        # 200k lines in bursts over about two seconds.
        job = store.new_job("for i in $(seq 0 19); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.1; done")
        job.start()
        widget = JobWidget(job)
        recorder = Recorder(widget)
        started = time.monotonic()
        assert widget.wait(60)
        duration = time.monotonic() - started
        assert recorder.shown()[-1] == "200000" and len(recorder.shown()) == 1000
        assert "200,000 lines, last 1,000 shown" in widget.status_html
        assert len(recorder.messages) <= 5 * duration + 3, f"{len(recorder.messages)} messages in {duration:.1f} s"
        assert max(sum(len(line) + 1 for line in m["lines"]) for m in recorder.messages) < 20_000

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
        assert widget.log_text() == "4998\n4999\n5000"


class TestRemovedJob:
    """A job removed under its view: the view says so over its last state, and stops asking."""

    def test_a_job_removed_while_followed_says_so_over_its_last_state(self, store):
        job = store.new_job("echo never started")  # followed while it waits for a start
        widget = JobWidget(job, refresh=0.05)
        status_line = widget.status_html
        store.get_job(job.id).remove()  # as %jobber_rm does, through another handle
        assert widget.wait(10), "the updater ends once the removal is seen"
        assert widget.removed == f"job {job.id} was removed" and not widget.following
        assert widget.problem == "", "no traceback, no error: the job is gone, that is all"
        assert widget.status_html == status_line and widget.state == "created", "its last real state"

    def test_an_ended_jobs_view_learns_of_its_removal(self, store):
        job = store.new_job("echo one; echo two")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30) and widget.ended
        charts, status_line = widget.charts_html, widget.status_html
        job.remove()
        wait_for(lambda: widget.removed, timeout=15, what="the removal of an ended job's job")
        assert widget.removed == f"job {job.id} was removed" and widget.problem == ""
        assert widget.log_text() == "one\ntwo" and widget.charts_html == charts and widget.status_html == status_line

    def test_a_closed_view_is_not_watched(self, store):
        from jobber_magics._removals import REMOVALS as _REMOVALS

        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        widget.close()
        job.remove()
        wait_for(lambda: widget not in _REMOVALS._due, timeout=15, what="the closed view dropped")
        assert widget.removed == ""

    def test_a_removal_by_the_magics_is_seen_at_once_however_long_the_pause(self, store):
        from jobber_magics._removals import REMOVALS as _REMOVALS
        from jobber_magics._removals import check_removals_soon

        job = store.new_job("true")
        job.start()
        widget = JobWidget(job)
        assert widget.wait(30)
        wait_for(lambda: widget in _REMOVALS._due, timeout=5, what="the view watched")
        with _REMOVALS._lock:
            _REMOVALS._due[widget] = (time.monotonic() + 3600, 3600)  # as after hours of asking
        job.remove()
        check_removals_soon()  # what %jobber_rm and %jobber_prune do
        wait_for(lambda: widget.removed, timeout=10, what="the removal seen")


@needs_cgroup
class TestReattachedView:
    """A view made after the job started draws its charts from the job's start: the
    supervisor's usage history (``job.usage()``), not only its own readings."""

    def test_a_view_made_later_charts_from_the_start(self, store):
        job = store.new_job("python3 -c 'import time; b = bytearray(30 << 20); time.sleep(60)'", Limits(memory="200M"))
        job.start()
        try:
            wait_for(lambda: len(job.usage()) >= 6 and job.usage()[-1].t >= 3.0, timeout=30,
                     what="three seconds of usage history")
            widget = JobWidget(job)  # as %jobber_tail -f, a restarted kernel or another notebook does
            try:
                samples = widget._history.samples
                assert samples[0].t < 1.5, [s.t for s in samples]  # from the start, not from now
                assert samples[-1].t >= 3.0
                wait_for(lambda: "jobber-chart-memory" in widget.charts_html, timeout=10, what="a memory chart")
            finally:
                widget.close()
        finally:
            job.stop(grace=0)

    def test_a_view_of_an_ended_job_charts_its_whole_run(self, store):
        job = store.new_job("python3 -c 'import time; b = bytearray(30 << 20); time.sleep(2.5)'", Limits(memory="200M"))
        job.start()
        job.wait(30)
        assert len(job.usage()) >= 3
        widget = JobWidget(job)
        assert widget.wait(30)
        assert "<polyline" in widget.charts_html.split("jobber-figure-cpu")[0]  # a memory line, not just numbers


class TestNotices:
    def test_information_is_not_styled_as_a_warning(self, store):
        job = store.new_job("true")
        widget = JobWidget(job, info="last run of `x` (job 3) peaked at 50 MiB")
        assert widget.notice_kind == "info" and 'class="jobber-info"' in widget.notice_html
        assert "job 3" in widget.notice_html
        widget.close()
        both = JobWidget(job, notice="warning: --cpu 64 is more than ...", info="last run of `x` (job 3) peaked")
        assert both.notice_kind == "warning" and both.notice_html.startswith("warning: ")
        both.close()
