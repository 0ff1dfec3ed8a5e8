"""How state looks: glyphs, theme colours, durations, and inert text.

Colour and a glyph both carry state (never colour alone). Untrusted text (commit messages,
authors, branch names, log output) only ever becomes a `Text` through `plain()`, which strips
control sequences and never parses markup. `now()` is the console's clock; snapshot tests fix it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from rich.text import Text

from core import states
from core.text import duration as text_duration
from core.text import inert, one_line

# Glyphs come from core.states (one table for the CLI and the console); colours are the theme's.
_COLOURS = {
    "succeeded": "run-ok",
    "failed": "run-failed",
    "running": "run-active",
    "queued": "run-queued",
    "waiting": "run-waiting",
    "cancelled": "run-cancelled",
    "interrupted": "run-interrupted",
    "skipped": "muted",
}
GLYPHS: dict[str, tuple[str, str]] = {
    state: (states.glyph(state), var) for state, var in _COLOURS.items()
}

# Drift of a target or a cell: acknowledged drift has its own glyph, never colour alone.
DRIFT_GLYPHS: dict[str, tuple[str, str, str]] = {
    key: (states.glyph(key), var, word)
    for key, var, word in (
        ("drifted", "drift", "drifted"),
        ("acked", "drift-acked", "acked"),
        ("unknown", "drift-unknown", "unknown"),
        ("in_sync", "run-ok", "in sync"),
    )
}

_clock: Callable[[], float] = time.time


def now() -> float:
    return _clock()


def set_clock(clock: Callable[[], float]) -> None:
    """Replace the clock (snapshot tests pin it so "3m ago" never changes)."""
    global _clock
    _clock = clock


def plain(text: str, style: str = "", single_line: bool = True, wrap: bool = False) -> Text:
    """Untrusted text as an inert Text: no markup, no control sequences. A single line does not
    wrap unless `wrap` (for prose in a narrow column)."""
    return Text(
        one_line(text) if single_line else inert(text),
        style=style,
        no_wrap=single_line and not wrap,
    )


def glyph(status: str | None) -> str:
    return GLYPHS.get(status or "", ("·", "muted"))[0]


def colour(status: str | None, palette: Mapping[str, str]) -> str:
    return palette.get(GLYPHS.get(status or "", ("·", "muted"))[1], "")


def state(status: str | None, palette: Mapping[str, str], label: bool = True) -> Text:
    """Glyph (and the state's name) in the state's colour."""
    if status is None:
        return Text("·", style=palette.get("muted", ""))
    text = glyph(status) + (f" {status}" if label else "")
    return Text(text, style=colour(status, palette))


def short(sha: str | None) -> str:
    return sha[:7] if sha else "-------"


def duration(seconds: float | None) -> str:
    return "" if seconds is None else text_duration(seconds)


def age(seconds: float | None) -> str:
    """A compact age for tables: 42s, 12m, 5h, 5h12m under 10h, 3d4h."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 36000:
        minutes = seconds % 3600 // 60
        return f"{seconds // 3600:.0f}h{minutes:02.0f}m" if minutes else f"{seconds // 3600:.0f}h"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:.0f}h"


def ago(ts: float | None) -> str:
    """How long ago `ts` was, compactly (the column says it is an age)."""
    if not ts:
        return ""
    return age(now() - ts)


def took(started: float | None, finished: float | None) -> str:
    if started is None:
        return ""
    return duration((finished or now()) - started)


def size(n: int | None) -> str:
    """Bytes, compactly: 812 B, 4.2 KB, 17 MB."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.0f} GB"


def until(ts: float | None) -> str:
    """How long until `ts`, compactly ("" when unset or past)."""
    if not ts or ts <= now():
        return ""
    return age(ts - now())


def drift_key(state: str | None, acknowledged: bool) -> str | None:
    """The DRIFT_GLYPHS key: acknowledged drift is 'acked'."""
    return "acked" if state == "drifted" and acknowledged else state


def drift(
    state: str | None, acknowledged: bool, palette: Mapping[str, str], label: bool = True
) -> Text:
    """Drift state as glyph (and word) in its colour; '·' when never checked."""
    key = drift_key(state, acknowledged)
    if key not in DRIFT_GLYPHS:
        return Text("·", style=palette.get("muted", ""))
    mark, var, word = DRIFT_GLYPHS[key]
    style = palette.get(var, "") + (" bold" if key == "drifted" else "")
    return Text(mark + (f" {word}" if label else ""), style=style.strip())
