"""The last lines of a job's log, as a terminal would show them, in bounded memory.

A job may print gigabytes; the live view keeps only what it shows: a ring of the last
``max_lines`` lines, each cut at ``max_line_chars``. Bytes are decoded incrementally (a
UTF-8 character split across two chunks survives; invalid bytes become U+FFFD), a ``\\r``
progress bar shows its last state (tqdm redraws its line after ``\\r``), and ANSI colour
and cursor sequences are dropped rather than shown as garbage.
"""

from __future__ import annotations

import codecs
import re
from collections import deque

__all__ = ["LogLines"]

# CSI sequences (colours, cursor moves, "erase line") and the two-byte ESC forms.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_ELLIPSIS = "…"


class LogLines:
    """A bounded ring of decoded log lines, fed with raw chunks.

    Args:
        max_lines: how many complete lines to keep (the oldest fall out).
        max_line_chars: longer lines are cut here and end with "…".
    """

    def __init__(self, max_lines: int = 1000, max_line_chars: int = 1000) -> None:
        if max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, not {max_lines}")
        self.max_lines = max_lines
        self.max_line_chars = max_line_chars
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # The unfinished last line: the segment after its last \r, and the last non-empty
        # segment before it (what a progress bar shows until the next redraw has text).
        self._segment = ""
        self._previous = ""
        self.total_lines = 0
        """Complete lines seen so far, kept or not."""

    def feed(self, data: bytes) -> None:
        """Add a chunk of the log, exactly as the job wrote it."""
        newlines = data.count(b"\n")
        self.total_lines += newlines
        if newlines > self.max_lines:
            # Every line before the last max_lines of this chunk would fall out of the ring
            # anyway: skip them undecoded (a job printing gigabytes costs a scan, not a
            # decode). A newline byte never occurs inside a UTF-8 sequence, so the decoder
            # can restart just after one.
            cut = len(data)
            for _ in range(self.max_lines + 1):
                cut = data.rfind(b"\n", 0, cut)
            data = data[cut + 1 :]
            self._decoder.reset()
            self._lines.clear()
            self._segment = self._previous = ""
        self._add_text(self._decoder.decode(data))

    def finish(self) -> None:
        """The log has ended: flush a trailing incomplete UTF-8 sequence (as U+FFFD)."""
        self._add_text(self._decoder.decode(b"", final=True))

    def text(self, max_chars: int | None = None) -> str:
        """The kept lines and the unfinished last one, joined by newlines.

        Args:
            max_chars: keep only the newest lines that fit in this many characters.
        """
        lines = list(self._lines)
        current = self._segment or self._previous
        if current:
            lines.append(self._shown(current))
        text = "\n".join(lines)
        if max_chars is not None and len(text) > max_chars:
            start = text.find("\n", len(text) - max_chars)
            text = text[start + 1 :] if start >= 0 else text[-max_chars:]
        return text

    def complete_lines(self, count: int | None = None) -> list[str]:
        """The newest ``count`` complete lines kept (all of them by default), oldest first."""
        kept = len(self._lines)
        count = kept if count is None else min(count, kept)
        if count <= 0:
            return []
        if count == kept:
            return list(self._lines)
        return [self._lines[i] for i in range(kept - count, kept)]

    def unfinished(self) -> str:
        """The unfinished last line as a terminal shows it now ("" when the log ends in a newline)."""
        current = self._segment or self._previous
        return self._shown(current) if current else ""

    @property
    def kept_lines(self) -> int:
        """How many complete lines the ring holds now."""
        return len(self._lines)

    def __len__(self) -> int:
        return len(self._lines) + bool(self._segment or self._previous)

    def _add_text(self, text: str) -> None:
        if not text:
            return
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        parts = text.split("\n")
        self._extend_current(parts[0])
        if len(parts) == 1:
            return
        self._lines.append(self._shown(self._segment or self._previous))
        middle = parts[1:-1]
        if len(middle) > self.max_lines:
            middle = middle[-self.max_lines :]
        self._lines.extend(self._shown(_last_state(line)) for line in middle)
        self._segment = self._previous = ""
        self._extend_current(parts[-1])

    def _extend_current(self, text: str) -> None:
        if "\r" in text:
            segments = text.split("\r")
            segments[0] = self._segment + segments[0]
            self._previous = next((s for s in reversed(segments[:-1]) if s), self._previous)
            self._previous = self._previous[: self.max_line_chars + 1]
            self._segment = segments[-1][: self.max_line_chars + 1]
        elif len(self._segment) <= self.max_line_chars:
            # One character past the cap marks the line as cut; the rest is dropped.
            self._segment = (self._segment + text)[: self.max_line_chars + 1]

    def _shown(self, line: str) -> str:
        if len(line) > self.max_line_chars:
            return line[: self.max_line_chars] + _ELLIPSIS
        return line


def _last_state(line: str) -> str:
    """What a terminal shows of a line redrawn with \\r: its last non-empty segment."""
    if "\r" not in line:
        return line
    return next((s for s in reversed(line.split("\r")) if s), "")
