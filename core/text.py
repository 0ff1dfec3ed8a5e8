"""Making untrusted text (commit messages, branch names, log output) inert for a terminal.

Strips C0/C1 control characters (so an escape sequence like OSC 52 cannot reach the terminal)
and bidirectional overrides (so text cannot reorder itself on screen). Stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

# Also every character a terminal draws with no width and no glyph (a secret split by one looks
# whole on screen; core.secrets masks after the same removal): soft hyphen, grapheme joiner,
# Arabic letter mark, Hangul fillers, Khmer and Mongolian invisibles, word joiner and invisible
# operators, deprecated format characters, variation selectors, Unicode tags.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2060-\u2064\u206a-\u206f"
    "\u3164\ufe00-\ufe0f\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def inert(text: str, *, keep_tabs: bool = True) -> str:
    """`text` with escape sequences removed and every other control character dropped."""
    text = _ANSI.sub("", text)
    text = _CONTROL.sub("", text)
    if not keep_tabs:
        text = text.replace("\t", " ")
    return text


def one_line(text: str) -> str:
    """Inert text on a single line (newlines become spaces)."""
    return inert(text.replace("\r", " ").replace("\n", " "), keep_tabs=False)


class InertFormatter(logging.Formatter):
    """A log formatter whose final line (message, arguments, traceback) is inert: repo content
    logged by the engine or the server cannot emit ESC/OSC/C1 or bidi controls to a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class InertStream:
    """A text stream that writes everything through `inert` (newlines and tabs kept)."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(inert(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@contextlib.contextmanager
def inert_output() -> Iterator[None]:
    """While inside, every `print` and write to sys.stdout/sys.stderr is rendered inert: the one
    way the CLI reaches a terminal (tests/core/test_inert.py checks core/ writes nowhere else)."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, InertStream):
        sys.stdout = cast(TextIO, InertStream(sys.stdout))
    if not isinstance(sys.stderr, InertStream):
        sys.stderr = cast(TextIO, InertStream(sys.stderr))
    try:
        yield
    finally:  # a command that swapped a stream (a broken pipe: /dev/null) keeps its choice
        if isinstance(sys.stdout, InertStream):
            sys.stdout = saved[0]
        if isinstance(sys.stderr, InertStream):
            sys.stderr = saved[1]


def duration(seconds: float) -> str:
    """A duration for people: 4.2s, 42s, 3m05s, 2h10m, 3d4h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:.0f}h"


def size(count: int) -> str:
    """A byte count for people: 900 bytes, 64 KiB, 512 MiB, 2.0 GiB."""
    for unit, name in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if count >= unit:
            value = count / unit
            return f"{value:.1f} {name}" if value < 10 else f"{value:.0f} {name}"
    return f"{count} bytes"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns padded to their widest cell, two spaces apart (the CLI's listings)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    )


def email_identity(email: str) -> str:
    """The identity an email address stands for when deciding who may approve: trimmed, without
    angle brackets, case-folded, and without a `+tag` in the local part, so
    `Alice+x@Example.COM` and `alice@example.com` are one person. Git identities are claims the
    committer makes; this only stops the trivial variants (see docs/SECURITY.md)."""
    email = email.strip().strip("<>").strip().casefold()
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    base = local.split("+", 1)[0]
    return f"{base or local}@{domain}"
