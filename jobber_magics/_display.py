"""Rich displays of jobber objects: pure functions from objects to HTML or text strings.

The core never imports IPython (docs/architecture.md), so ``Job`` and ``Certificate`` get their
HTML here, registered as IPython formatters when the extension loads (tqdm keeps its
notebook rendering apart from ``tqdm.std`` the same way). Job lists and the identity
view are small classes with ``_repr_html_`` and a plain-text ``__repr__``.

Everything a job wrote, and every name, is escaped: a log line like ``<script>`` is text.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from jobber import Certificate, JobberError, JobStatus, Session, format_elapsed
from jobber_magics._charts import format_size

__all__ = [
    "DoctorReport",
    "IdentityView",
    "JobList",
    "certificate_html",
    "job_html",
    "log_html",
    "local_time",
    "static_job_html",
    "static_job_text",
    "status_html",
]

_MONO = "font-family:var(--jp-code-font-family,monospace);font-size:var(--jp-code-font-size,12px)"
# JupyterLab's theme colours where there is one (readable in the dark theme too).
_GREY = "var(--jp-ui-font-color2,#777)"
_RED = "var(--jp-error-color1,#d62728)"
_AMBER = "var(--jp-warn-color1,#b58900)"
STATE_COLOURS = {
    "created": _GREY,
    "pending": _AMBER,
    "running": "var(--jp-brand-color1,#1f77b4)",
    "exited": "var(--jp-success-color1,#2ca02c)",
    "stopped": _GREY,
    "failed": _RED,
    "oom-killed": _RED,
    "timed-out": _RED,
}
_CELL = "padding:2px 8px;text-align:left;vertical-align:top"
_NOWRAP = _CELL + ";white-space:nowrap"


def html_text(value: object) -> str:
    return html.escape(str(value), quote=True)


def local_time(when: datetime | None, *, seconds: bool = True) -> str:
    """An aware datetime in this host's time zone, for people: "2025-01-31 14:02:03"."""
    if when is None:
        return "-"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def now_text() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S")


def _first_line(command: str, width: int = 80) -> str:
    lines = command.strip().splitlines() or [""]
    line = lines[0]
    more = len(lines) > 1 or len(line) > width
    return (line[:width] + " …") if more else line


def _state_html(status: JobStatus) -> str:
    colour = STATE_COLOURS.get(status.state, _GREY)
    return f'<span style="color:{colour};font-weight:bold">{html_text(status.describe())}</span>'


def status_html(job_id: int, status: JobStatus, *, extra: str = "") -> str:
    """The one-line status of a job: id, state or outcome, elapsed time, isolation.

    Args:
        job_id: the job's id.
        status: its status.
        extra: more text (already HTML) to append, e.g. a line count.
    """
    parts = [f"<b>job {job_id}</b>", _state_html(status)]
    if attempt := status.attempt_text():
        parts.append(html_text(attempt))
    parts.append(html_text(status.elapsed_text))
    if status.timeout and status.state == "running" and status.elapsed is not None:
        left = format_elapsed(max(0.0, status.timeout - status.elapsed), tenths_below=0)
        parts.append(html_text(f"{left} left of {format_elapsed(status.timeout, tenths_below=0)}"))
    limits = status.limits.describe()
    if limits != "unlimited":
        parts.append(html_text(limits))
    if status.isolation:
        parts.append(html_text(status.isolation) if status.isolation != "none" else
                     f'<span style="color:{_RED}">not isolated</span>')
    if extra:
        parts.append(extra)
    line = " · ".join(parts)
    # What was not enforced, and why (the core words it: "not isolated: ...").
    if status.isolation_note:
        colour = _RED if status.isolation == "none" else _AMBER
        line += f'<br><span style="color:{colour}">{html_text(status.isolation_note)}</span>'
    if status.log_dropped_bytes:
        line += (f'<br><span style="color:{_AMBER}">log truncated: {html_text(format_size(status.log_dropped_bytes))} cut '
                 'from its middle by its cap (log_max); the first and newest output are kept</span>')
    if status.log_stopped:
        line += f'<br><span style="color:{_RED}">log stopped: {html_text(status.log_stopped)}</span>'
    if not status.ended and (held := status.held_back()):
        line += f'<br><span style="color:{_AMBER}">{html_text(held)}</span>'
    if status.note:
        colour = _AMBER if status.state == "pending" else _RED
        line += f'<br><span style="color:{colour}">{html_text(status.note)}</span>'
    return f'<div style="{_MONO}">{line}</div>'


def log_html(text: str, *, height: str = "20em") -> str:
    """A scrolling <pre> that shows its end: the newest line stays in view.

    ``column-reverse`` anchors the scroll position at the bottom without any JavaScript,
    and keeps it there as lines arrive (each redraw replaces the HTML, so it also brings a
    reader who scrolled up back to the newest line). JupyterLab gives output <pre> its own
    overflow: ``flex:none; overflow:visible`` keeps the outer box the one that scrolls.
    """
    return (
        f'<div style="display:flex;flex-direction:column-reverse;max-height:{height};'
        f'overflow-y:auto"><pre style="margin:0;flex:none;overflow:visible;{_MONO};'
        f'white-space:pre-wrap;word-break:break-all">{html_text(text)}</pre></div>'
    )


def static_job_text(job_id: int, status: JobStatus) -> str:
    """One line for a reader without the live view: the state, and when it was true."""
    line = f"job {job_id} · {status.describe()} · {status.elapsed_text}"
    if not status.ended:
        line += f" · as of {now_text()} (live view: %jobber_tail -f {job_id})"
    return line


def static_job_html(job: Any, status: JobStatus) -> str:
    """A card for one job as of now: status line and command. A job that has not ended says
    when that was true, and how to watch it live (it is never "running" forever)."""
    line = status_html(job.id, status)
    if not status.ended:
        line += (f'<div style="color:{_AMBER}">as of {html_text(now_text())}: this card does not change; '
                 f"<code>%jobber_tail -f {job.id}</code> shows the job live</div>")
    return (
        f'<div class="jobber-card" style="border-left:3px solid {STATE_COLOURS.get(status.state, _GREY)};'
        f'padding-left:8px">{line}'
        f'<pre style="margin:2px 0;{_MONO}">{html_text(job.command)}</pre></div>'
    )


def job_html(job: Any) -> str:
    """The static card of a job as of now (the ``Job`` HTML formatter, where no live view is)."""
    try:
        status = job.status()
    except JobberError as err:  # a formatter must not raise: IPython would print a traceback
        return f"<div><b>job {job.id}</b>: status unavailable: {html_text(err)}</div>"
    return static_job_html(job, status)


class JobList(list):
    """A list of jobs that shows itself as a table (what ``%jobber_jobs`` returns).

    It is a plain ``list`` of ``Job`` objects otherwise: index it, loop over it. The table
    shows the states read when the list was made (so both renderings agree, and a status
    that cannot be read fails in the magic, as a UsageError, not in the display).

    Args:
        jobs: the jobs, newest last.
        statuses: their statuses, if already read (else read now).
        hidden: how many older jobs were left out (``-n``), said above the table.
        skipped: job id -> why it was left out (its files cannot be read), said under it.

    Raises:
        JobberError: a job's status cannot be read.
    """

    def __init__(self, jobs: Iterable[Any] = (), statuses: Iterable[JobStatus] | None = None, *,
                 hidden: int = 0, skipped: dict[int, str] | None = None) -> None:
        super().__init__(jobs)
        self._statuses = [job.status() for job in self] if statuses is None else list(statuses)
        self.hidden = hidden
        self.skipped = dict(skipped or {})

    def _skipped_lines(self) -> list[str]:
        return [f"job {job_id} skipped: {why}" for job_id, why in self.skipped.items()]

    def _rows(self) -> list[tuple[Any, JobStatus]]:
        return list(zip(self, self._statuses))

    def _hidden_text(self) -> str:
        many = "s" if self.hidden != 1 else ""
        return f"({self.hidden:,} older job{many} not shown: %jobber_jobs --all, or -n N)" if self.hidden else ""

    def _repr_html_(self) -> str:
        rows = self._rows()
        skipped = "".join(f'<p style="color:var(--jp-warn-color0, #b35c00)">{html_text(line)}</p>'
                          for line in self._skipped_lines())
        if not rows:
            return skipped or "<p>No jobs yet: start one with <code>%%jobber_run</code>.</p>"
        # A column whose every cell says the same (all local, all cgroup-v1) is said once,
        # under the table: its width goes to the command.
        shared = {name: values.pop() for name, values in (
            ("isolation", {status.isolation or "-" for _, status in rows}),
            ("backend", {status.backend for _, status in rows})) if len(values) == 1}
        columns = [name for name in ("id", "label", "started", "duration", "result", "limits", "isolation",
                                     "backend", "command") if name not in shared]
        head = "".join(f'<th style="{_NOWRAP}">{name}</th>' for name in columns)
        body = "".join("<tr>" + "".join(_job_cells(job, status, columns)) + "</tr>" for job, status in rows)
        note = f"<p>{html_text(self._hidden_text())}</p>" if self.hidden else ""
        said = " · ".join(f"{name} {value}" for name, value in shared.items())
        under = f'<p style="opacity:0.7">every job: {html_text(said)}</p>' if said else ""
        return (f'{note}<table class="jobber-jobs" style="width:100%;table-layout:auto"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>{under}{skipped}")

    def __repr__(self) -> str:
        rows = self._rows()
        if not rows:
            return "\n".join(self._skipped_lines()) or "No jobs yet: start one with %%jobber_run."
        table = [("ID", "STARTED", "DURATION", "RESULT", "BACKEND", "LABEL", "COMMAND")]
        table += [(str(job.id), local_time(status.started_at), status.elapsed_text, status.describe(),
                   status.backend, job.label or "-", _first_line(job.command, 60)) for job, status in rows]
        lines = _aligned(table, right=(0, 2))
        return "\n".join([*([self._hidden_text()] if self.hidden else []), *lines, *self._skipped_lines()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


_RESULT_BOX = "min-width:10em;max-width:16em;white-space:normal"
# The command's cell takes the table's width that is left (width 100%, max-width 0: its text
# never widens it) and shows one line, cut with an ellipsis; the whole command on hover.
# JupyterLab's own style lets <code> wrap: nowrap is set on it too.
_COMMAND_CELL = _CELL + ";width:100%;max-width:0"
_COMMAND_BOX = "min-width:12em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis"


def _job_cells(job: Any, status: JobStatus, columns: list[str]) -> list[str]:
    """The ``<td>`` of each of ``columns`` for one job of a `JobList` table."""
    plain = {"id": job.id, "label": job.label or "-", "started": _started_text(status.started_at),
             "duration": status.elapsed_text, "limits": status.limits.describe(),
             "isolation": status.isolation or "-", "backend": status.backend}
    cells = []
    for name in columns:
        if name == "result":
            cells.append(f'<td style="{_CELL}"><div class="jobber-result" style="{_RESULT_BOX}">'
                         f"{_state_html(status)}</div></td>")
        elif name == "command":
            cells.append(f'<td style="{_COMMAND_CELL}"><div class="jobber-command" style="{_COMMAND_BOX}" '
                         f'title="{html_text(job.command.rstrip())}"><code style="white-space:nowrap">'
                         f"{html_text(_first_line(job.command, 200))}</code>{_more_lines(job.command)}</div></td>")
        else:
            cells.append(f'<td style="{_NOWRAP}">{html_text(plain[name])}</td>')
    return cells


def _started_text(when: datetime | None) -> str:
    """When a job started, short: "14:02:03" today, "2025-01-31 14:02" before."""
    if when is None:
        return "-"
    local = when.astimezone()
    return local.strftime("%H:%M:%S") if local.date() == datetime.now().astimezone().date() else local_time(
        when, seconds=False)


def _more_lines(command: str) -> str:
    """`` (+5 lines)`` after a command's first line, when it has more."""
    more = len(command.strip().splitlines()) - 1
    return f' <span style="opacity:0.7">(+{more} line{"s" if more != 1 else ""})</span>' if more > 0 else ""


def _aligned(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """Rows of a text table with every column as wide as its widest cell (the last one free)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


class DoctorReport:
    """What ``%jobber_doctor`` shows: each check of ``jobber.doctor()``, ok or with its fix."""

    def __init__(self, diagnosis: Any) -> None:
        self.diagnosis = diagnosis

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>"
            f'<td style="{_CELL};color:{"var(--jp-success-color1,#2ca02c)" if check.ok else _RED}">{"ok" if check.ok else "no"}</td>'
            f'<th style="{_CELL}">{html_text(check.name)}</th>'
            f'<td style="{_CELL}">{html_text(check.found)}'
            + (f'<br><b>fix:</b> <code>{html_text(check.fix)}</code>' if check.fix else "")
            + "</td></tr>"
            for check in self.diagnosis.checks
        )
        verdict = ("Jobs here are fully confined." if self.diagnosis.confined else
                   "Jobs here run, but not every limit is enforced: see the fixes above.")
        return f"<table><tbody>{rows}</tbody></table><p>{html_text(verdict)}</p>"

    def __repr__(self) -> str:
        return str(self.diagnosis)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def certificate_html(cert: Certificate) -> str:
    """A card for a certificate (the ``Certificate`` HTML formatter)."""
    rows = [
        ("subject", cert.subject),
        ("issuer", cert.issuer),
        ("valid", f"{cert.not_before:%Y-%m-%d %H:%M} to {cert.not_after:%Y-%m-%d %H:%M} UTC"),
        ("CA", "yes" if cert.is_ca else "no"),
        ("sha256", cert.hash()),
    ]
    body = "".join(f'<tr><th style="{_CELL}">{k}</th><td style="{_CELL}"><code>{html_text(v)}</code></td></tr>'
                   for k, v in rows)
    return f"<table>{body}</table>"


class IdentityView:
    """The current identity and the certificate pool (``%jobber_cert`` without a path).

    Args:
        session: the current session (a ``Certificate`` or a remote session), or None.
        pool: the pool's certificates.
        pool_dir: where the pool lives, to tell people where to add certificates.
    """

    def __init__(self, session: Session | None, pool: Sequence[Certificate], pool_dir: str) -> None:
        self.session = session
        self.pool = list(pool)
        self.pool_dir = pool_dir

    def _identity_line(self) -> str:
        session = self.session
        if session is None:
            return "no identity chosen yet: run %jobber_cert PATH/TO/cert.pem (or set $JOBBER_CERT)"
        if isinstance(session, Certificate):
            return (f"{session.subject}  (sha256 {session.hash()[:16]}…, "
                    f"valid until {session.not_after:%Y-%m-%d})")
        return f"{getattr(session, 'subject', '?')} on {getattr(session, 'url', session)}  (a jobber server)"

    def _issued_you(self, cert: Certificate) -> bool:
        return isinstance(self.session, Certificate) and cert.subject == self.session.issuer

    def _repr_html_(self) -> str:
        out = [f"<p><b>Identity:</b> <code>{html_text(self._identity_line())}</code></p>"]
        if not self.pool:
            out.append(f"<p>The pool <code>{html_text(self.pool_dir)}</code> is empty: put the PEM "
                       "certificate of your CA there.</p>")
            return "".join(out)
        head = "".join(f'<th style="{_CELL}">{h}</th>' for h in ("subject", "CA", "valid until", "sha256", "for you"))
        body = "".join(
            "<tr>"
            f'<td style="{_CELL}"><code>{html_text(cert.subject)}</code></td>'
            f'<td style="{_CELL}">{"yes" if cert.is_ca else "no"}</td>'
            f'<td style="{_CELL}">{cert.not_after:%Y-%m-%d}</td>'
            f'<td style="{_CELL}"><code>{cert.hash()[:16]}…</code></td>'
            f'<td style="{_CELL}">{"issued your identity" if self._issued_you(cert) else ""}</td>'
            "</tr>"
            for cert in self.pool
        )
        out.append(f"<p><b>Pool</b> <code>{html_text(self.pool_dir)}</code></p>"
                   f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return "".join(out)

    def __repr__(self) -> str:
        lines = [f"identity: {self._identity_line()}"]
        if not self.pool:
            lines.append(f"pool: {self.pool_dir} is empty: put the PEM certificate of your CA there")
        else:
            lines.append(f"pool: {self.pool_dir}")
            for cert in self.pool:
                mark = "  <- issued your identity" if self._issued_you(cert) else ""
                lines.append(f"  {cert.subject}  {'CA' if cert.is_ca else '  '}  until {cert.not_after:%Y-%m-%d}  "
                             f"sha256 {cert.hash()[:16]}…{mark}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
