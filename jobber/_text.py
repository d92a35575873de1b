"""Numbers and near misses as people read them: sizes, spans of time, "did you mean".

One home for each, so that the CLI, the magics, the widgets and the notes written into a
job's status say "50 MiB" and "3 min 05 s" the same way:

    format_size       52428800 -> "50 MiB"           a byte count, in binary units
    format_elapsed    185 -> "3 min 05 s"            a span a clock measured
    format_duration   5400 -> "90 min"               a time limit, as people set one
    did_you_mean      --memroy -> "did you mean --memory?"

The supervisor island imports this module (a retry's note names memory sizes): standard
library only, and nothing costly to import.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~15 ms to import in the island's bare interpreter
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

__all__ = ["did_you_mean", "format_duration", "format_elapsed", "format_size"]

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_size(size: float | None, *, digits: int | None = None) -> str:
    """Show a byte count the way people read it, in binary units.

    Args:
        size: the byte count; None (unknown, unlimited) shows as "-".
        digits: significant digits where the exact size matters, as for the memory limit a
            retry gets (4: "1.25 GiB", "97.66 MiB"). Default: a whole number of the unit, or
            one decimal below 100 of it ("50 MiB", "1.5 GiB", "120 MiB").

    Returns:
        "50 MiB", "1.5 GiB", "512 B", or "-".
    """
    if size is None:
        return "-"
    for unit, factor in _UNITS:
        if size >= factor:
            value = size / factor
            if digits is not None:
                return f"{value:.{digits}g} {unit}"
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{int(size)} B"


def format_elapsed(seconds: float, *, tenths_below: float = 60) -> str:
    """Show a span of time as a clock measured it: to the second, hours and minutes past one hour.

    Args:
        seconds: the span.
        tenths_below: below this many seconds, tenths are shown ("12.3 s"); from there to a
            minute, whole seconds ("45 s"). 60 (the default) for a job's running time, 10
            for a chart's axis, 0 for a time left.

    Returns:
        "12.3 s", "45 s", "3 min 05 s" or "2 h 01 min".
    """
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < tenths_below else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_duration(seconds: float) -> str:
    """Show a time limit the way people set one, in the largest unit that reads well.

    Args:
        seconds: the limit (``parse_duration`` of "90s", "30m", "2h", "1d").

    Returns:
        "90 s", "30 min", "2 h", "1 d 6 h".
    """
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    if seconds < 172800:
        return f"{seconds / 3600:g} h"
    days, rest = divmod(seconds, 86400)
    return f"{days:g} d" + (f" {rest / 3600:g} h" if rest else "")


def did_you_mean(unknown: Iterable[str], parser: argparse.ArgumentParser) -> list[str]:
    """The closest real option of ``parser`` for each mistyped long option.

    Args:
        unknown: the arguments the parser did not recognise (``parse_known_args``'s
            leftovers, or the words of argparse's "unrecognized arguments" message);
            only those that look like long options (``--memroy=1G``) are matched.
        parser: the parser (or subparser) whose long options are the candidates.

    Returns:
        One "--memroy: did you mean --memory?" per option with a close match, in order;
        empty when none has one. Close means that at least 60% of the two names, without
        their "--", match (difflib's ratio): "--lable" is close to "--label", "--label"
        is close to neither "--help" nor "--all".
    """
    import difflib  # 30 ms: only for a mistyped option, never in the island

    # Names are compared without their "--": the shared prefix alone made any two short
    # options look alike ("--label" came out 62% like "--help", over the 60% bar).
    names = [option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")]
    words = [word.split("=")[0] for word in unknown if word.startswith("--")]
    return [f"{word}: did you mean --{match[0]}?" for word in words
            if (match := difflib.get_close_matches(word[2:], names, n=1, cutoff=0.6))]
