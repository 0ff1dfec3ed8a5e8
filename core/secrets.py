"""Secrets: values named in ahead.yml, read by the engine when a step that declares them starts,
and masked in every stored log line.

ahead.yml names where each value lives (`secrets: {API_TOKEN: {env: DEPLOY_TOKEN}}` or
`{file: secrets/token}`); the value itself is never in a file ahead parses, never in argv,
the store, the audit log or an error message. A step gets a secret (as an environment
variable of the secret's name) only when its stage or step lists it under `secrets:`, and a
gated stage's steps only start after the gate passes. Masking replaces the raw value and its
common encodings (base64 standard and URL-safe, also inside a longer base64 text, double
base64, URL and JSON escaping) with `***`. Masking is a safety net, not a guarantee: a step
that transforms a value some other way can still print it. Depends on the stdlib only.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = b"***"
MIN_LENGTH = 8


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value is read from (an environment variable of the engine, or a file)
    and where it may go: stages deploying to `environments` (None: any stage), runs of `repos`
    (None: any repo), and branch runs only when `branches` is true (the default: main only)."""

    name: str
    env: str | None = None
    file: Path | None = None
    environments: tuple[str, ...] | None = None
    repos: tuple[str, ...] | None = None
    branches: bool = False

    @property
    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def refusal(self, repo: str, environment: str | None, branch_run: bool) -> str | None:
        """Why a stage of `repo` deploying to `environment` (None: nowhere), in a branch run
        (or, for `ahead check`, a stage that branch runs execute) may not have this secret; None
        when it may."""
        if self.repos is not None and repo not in self.repos:
            return (
                f"secret {self.name} is only for repos {', '.join(self.repos)}, not {repo!r} "
                f"(its repos: in ahead.yml)"
            )
        if self.environments is not None and environment not in self.environments:
            where = f"deploys to {environment!r}" if environment else "deploys nowhere"
            return (
                f"secret {self.name} is only for stages deploying to {', '.join(self.environments)}; "
                f"this stage {where} (its environments: in ahead.yml)"
            )
        if branch_run and not self.branches:
            return (
                f"secret {self.name} is for main runs only and this stage runs on a branch "
                f"(say branches: true under secrets: {self.name} in ahead.yml to allow it)"
            )
        return None


class SecretError(Exception):
    """A secret could not be read; the message names the secret and its source, never a value."""


_captured: dict[str, str] = {}  # environment variables taken out of os.environ by capture()


def capture(sources: Iterable[SecretSource]) -> dict[str, str]:
    """Take the environment variables secrets are read from out of this process (the engine
    does when it starts): their values stay in memory for `read` until `release`; each is deleted
    from os.environ (no child process inherits it) and, on Linux, blanked in the process's
    initial environment block, which /proc/PID/environ shows to any process of the same user
    even after the variable is unset. Returns what it took (variable -> value)."""
    taken: dict[str, str] = {}
    for source in sources:
        if source.env is not None and source.env in os.environ:
            taken[source.env] = os.environ.pop(source.env)
    _captured.update(taken)
    if taken and sys.platform == "linux":
        _blank_initial_environ(set(taken))
    return taken


def release(taken: Mapping[str, str]) -> None:
    """Forget values `capture` took (the engine stopped); they are not put back in os.environ."""
    for var, value in taken.items():
        if _captured.get(var) == value:
            del _captured[var]


def _blank_initial_environ(names: set[str]) -> None:
    """Overwrite the values of `names` in the environment block the kernel set up at exec (best
    effort: a kernel that refuses the write leaves it as it was)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        env_start = int(stat[stat.rindex(b")") + 2 :].split()[47])  # field 50: env_start
        with open("/proc/self/environ", "rb") as fh:
            block = fh.read()
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            offset = 0
            for entry in block.split(b"\0"):
                name, eq, value = entry.partition(b"=")
                if eq and value and name.decode("utf-8", "replace") in names:
                    mem.seek(env_start + offset + len(name) + 1)
                    mem.write(b"\0" * len(value))
                offset += len(entry) + 1
    except (OSError, ValueError, IndexError):
        return


def read(source: SecretSource) -> str:
    """The secret's value (a file's trailing newline dropped); an environment variable is read
    from os.environ, or from what `capture` took out of it.

    Raises:
        SecretError: unset, unreadable, or too short to mask safely.
    """
    if source.env is not None:
        value = os.environ.get(source.env, _captured.get(source.env))
        if value is None:
            raise SecretError(
                f"secret {source.name}: the engine's environment variable {source.env} is not set"
            )
    else:
        assert source.file is not None
        try:
            value = source.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SecretError(
                f"secret {source.name}: cannot read {source.file}: {reason}"
            ) from None
        value = value[:-1] if value.endswith("\n") else value
    if len(value) < MIN_LENGTH:
        raise SecretError(
            f"secret {source.name} (from the {source.where}) is shorter than {MIN_LENGTH} "
            "characters: too short to mask in logs; use a longer value"
        )
    return value


def _b64_inner(data: bytes) -> list[bytes]:
    """Base64 text that appears whenever `data` is inside a longer base64-encoded text, for
    each of the three alignments (the partial groups at both edges dropped)."""
    found = []
    for shift in range(3):
        text = base64.b64encode(b"\0" * shift + data)
        start = 4 if shift else 0
        usable = (shift + len(data)) // 3 * 4  # whole groups only: the last depends on what follows
        inner = text[start:usable]
        if len(inner) >= MIN_LENGTH:
            found.append(inner)
    return found


def forms(value: str) -> set[bytes]:
    """The byte strings that give `value` away in output."""
    raw = value.encode("utf-8", "surrogateescape")
    found = {
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(base64.b64encode(raw)),
        quote(value, safe="").encode(),
        quote(value).encode(),
        quote_plus(value).encode(),
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode(),
    }
    found |= {f.rstrip(b"=") for f in list(found)}
    for inner in _b64_inner(raw):
        found |= {inner, inner.replace(b"+", b"-").replace(b"/", b"_")}
    for line in value.splitlines():  # a multi-line secret (a key file) shows up line by line
        if len(line.strip()) >= MIN_LENGTH:
            found.add(line.strip().encode("utf-8", "surrogateescape"))
    return {f for f in found if len(f) >= MIN_LENGTH or f == raw}


# What the display drops (core.text.inert), in UTF-8 bytes: escape sequences (CSI, OSC, two-byte
# ESC), C0 and C1 controls but tab, zero-width characters, bidi controls, the BOM.
_ANSI = rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])"
_CONTROL = (
    rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f\xad]|\xe2\x80[\x8b-\x8f\xaa-\xae]|"
    rb"\xe2\x81[\xa0-\xa4\xa6-\xaf]|\xef\xbb\xbf|"
    # and the other zero-width characters core.text.inert drops (U+00AD above, U+034F,
    # U+061C, U+115F-1160, U+17B4-17B5, U+180B-180F, U+3164, U+FE00-FE0F, U+FFA0, tags
    # U+E0000-E007F, variation selectors U+E0100-E01EF)
    rb"\xcd\x8f|\xd8\x9c|\xe1\x85[\x9f\xa0]|\xe1\x9e[\xb4\xb5]|\xe1\xa0[\x8b-\x8f]|"
    rb"\xe3\x85\xa4|\xef\xb8[\x80-\x8f]|\xef\xbe\xa0|\xf3\xa0[\x80\x81\x84-\x86][\x80-\xbf]|"
    rb"\xf3\xa0\x87[\x80-\xaf]"
)
_HIDDEN = re.compile(_CONTROL)
_C0 = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
_STRIP = re.compile(_ANSI + b"|" + _CONTROL)
_PCT_LOWER = re.compile(rb"%[0-9a-fA-F][0-9a-f]|%[0-9a-f][0-9A-F]")
_PCT = re.compile(rb"%[0-9a-fA-F]{2}")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")
WRAP_WIDTHS = (76, 64)  # MIME (base64 -w76, openssl) and PEM
MIN_PIECE = 4  # the shortest piece of a wrapped base64 form masked at a line's edge


class Masker:
    """Replaces every form of the given secret values in bytes of output.

    A line holding a character the display drops (an escape sequence, a control or invisible
    character) is searched as the display would show it, and the matching span of the line as
    stored (invisible characters included) is masked. Percent escapes are matched in any case;
    a line that is a piece of a wrapped base64 form (76 or 64 columns) is masked piece by piece.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        patterns: set[bytes] = set()
        b64: set[bytes] = set()
        for value in values:
            found = forms(value)
            patterns |= found
            b64 |= {p for p in found if _B64_LINE.fullmatch(p) and len(p) >= MIN_LENGTH}
        self._patterns = sorted(patterns, key=len, reverse=True)
        self._b64 = sorted(b64, key=len, reverse=True)
        self._pct = any(b"%" in p for p in patterns)
        self._odd = any(_STRIP.search(p) for p in patterns)  # a value holding a control character
        # Bytes to hold back at the end of a long unfinished line: a value may continue in the
        # next chunk.
        self.tail = max((len(p) for p in self._patterns), default=1) - 1

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def mask(self, data: bytes) -> bytes:
        hidden = (
            len(data.translate(None, _C0)) != len(data)
            if data.isascii()
            else bool(_HIDDEN.search(data))
        )
        if not hidden:  # the fast path: what is stored is what is shown
            data = self._replace(data)
            pct = self._pct and b"%" in data and _PCT_LOWER.search(data) is not None
            if not pct and not (
                len(data) <= WRAP_WIDTHS[0] + 1 and _B64_LINE.fullmatch(data.rstrip(b"\r"))
            ):
                return data
        shown = _STRIP.sub(b"", data)
        if b"%" in shown:
            shown = _PCT.sub(_upper, shown)
        spans = self._spans(shown)
        if spans:
            data = self._mask_shown(data, spans)
        return self._replace(data) if spans or self._odd else data

    def _replace(self, data: bytes) -> bytes:
        for pattern in self._patterns:
            if pattern in data:
                data = data.replace(pattern, MASK)
        return data

    def _mask_shown(self, data: bytes, spans: list[tuple[int, int]]) -> bytes:
        """`data` with the `spans` of its shown text (`_STRIP` removed) masked, invisible
        characters inside a span included."""
        shown_at: list[int] = []  # where each kept run starts in the shown text
        stored_at: list[int] = []  # and in `data`
        kept = at = 0
        for match in _STRIP.finditer(data):
            if match.start() > at:
                shown_at.append(kept)
                stored_at.append(at)
                kept += match.start() - at
            at = match.end()
        if at < len(data):
            shown_at.append(kept)
            stored_at.append(at)

        def stored(pos: int) -> int:
            i = bisect.bisect_right(shown_at, pos) - 1
            return stored_at[i] + pos - shown_at[i]

        out: list[bytes] = []
        at = 0
        for start, end in _merged(spans):
            first, last = stored(start), stored(end - 1) + 1
            out += [data[at:first], MASK]
            at = last
        out.append(data[at:])
        return b"".join(out)

    def _spans(self, shown: bytes) -> list[tuple[int, int]]:
        spans = []
        for pattern in self._patterns:
            at = shown.find(pattern)
            while at != -1:
                spans.append((at, at + len(pattern)))
                at = shown.find(pattern, at + 1)
        line = shown.rstrip(b"\r")
        if len(line) <= WRAP_WIDTHS[0] and _B64_LINE.fullmatch(line):
            spans += self._wrapped(line)
        return spans

    def _wrapped(self, line: bytes) -> list[tuple[int, int]]:
        """Pieces of a base64 form wrapped over lines: a whole line inside a form (a long value),
        a form's start ending a full-width line, a form's end starting a line."""
        found = []
        full = len(line) in WRAP_WIDTHS
        for form in self._b64:
            if full and line in form:
                return [(0, len(line))]
            if full:  # the line ends with the start of `form`
                at = line.find(form[:MIN_PIECE], max(len(line) - len(form) + 1, 0))
                while at != -1:
                    if form.startswith(line[at:]):
                        found.append((at, len(line)))
                        break
                    at = line.find(form[:MIN_PIECE], at + 1)
            # the line starts with the end of `form`
            end = form[-MIN_PIECE:]
            at, longest = line.find(end), 0
            while at != -1 and at + MIN_PIECE < len(form):
                if form.endswith(line[: at + MIN_PIECE]):
                    longest = at + MIN_PIECE
                at = line.find(end, at + 1)
            if longest:
                found.append((0, longest))
        return found

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")


def _upper(match: re.Match[bytes]) -> bytes:
    return match.group(0).upper()


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def hidden_sources(sources: Iterable[SecretSource]) -> set[str]:
    """The environment variables secrets are read from: never passed on to a child process."""
    return {s.env for s in sources if s.env}


def inherited_env(sources: Iterable[SecretSource]) -> dict[str, str]:
    """What a child process (a step, a drift command) inherits of this process's environment:
    all of it but ahead's own AHEAD_* variables and the variables secrets are read from."""
    hidden = hidden_sources(sources)
    return {k: v for k, v in os.environ.items() if not k.startswith("AHEAD_") and k not in hidden}


def masker_for(sources: Iterable[SecretSource]) -> Masker:
    """A masker for every secret that can be read now (output may print one it was not given)."""
    values = []
    for source in sources:
        try:
            values.append(read(source))
        except SecretError:
            continue
    return Masker(values)
