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
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = b"***"
MIN_LENGTH = 8


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value is read from: an environment variable of the engine, or a file."""

    name: str
    env: str | None = None
    file: Path | None = None

    @property
    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"


class SecretError(Exception):
    """A secret could not be read; the message names the secret and its source, never a value."""


def read(source: SecretSource) -> str:
    """The secret's value (a file's trailing newline dropped).

    Raises:
        SecretError: unset, unreadable, or too short to mask safely.
    """
    if source.env is not None:
        value = os.environ.get(source.env)
        if value is None:
            raise SecretError(f"secret {source.name}: the engine's environment variable {source.env} is not set")
    else:
        assert source.file is not None
        try:
            value = source.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SecretError(f"secret {source.name}: cannot read {source.file}: {reason}") from None
        value = value[:-1] if value.endswith("\n") else value
    if len(value) < MIN_LENGTH:
        raise SecretError(f"secret {source.name} (from the {source.where}) is shorter than {MIN_LENGTH} "
                          "characters: too short to mask in logs; use a longer value")
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
    found = {raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw),
             base64.b64encode(base64.b64encode(raw)), quote(value, safe="").encode(),
             quote(value).encode(), quote_plus(value).encode(),
             json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode()}
    found |= {f.rstrip(b"=") for f in list(found)}
    for inner in _b64_inner(raw):
        found |= {inner, inner.replace(b"+", b"-").replace(b"/", b"_")}
    for line in value.splitlines():  # a multi-line secret (a key file) shows up line by line
        if len(line.strip()) >= MIN_LENGTH:
            found.add(line.strip().encode("utf-8", "surrogateescape"))
    return {f for f in found if len(f) >= MIN_LENGTH or f == raw}


class Masker:
    """Replaces every form of the given secret values in bytes of output."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        patterns: set[bytes] = set()
        for value in values:
            patterns |= forms(value)
        self._patterns = sorted(patterns, key=len, reverse=True)
        # Bytes to hold back at the end of a long unfinished line: a value may continue in the
        # next chunk.
        self.tail = max((len(p) for p in self._patterns), default=1) - 1

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def mask(self, data: bytes) -> bytes:
        for pattern in self._patterns:
            if pattern in data:
                data = data.replace(pattern, MASK)
        return data

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")


def hidden_sources(sources: Iterable[SecretSource]) -> set[str]:
    """The environment variables secrets are read from: never passed on to a child process."""
    return {s.env for s in sources if s.env}


def masker_for(sources: Iterable[SecretSource]) -> Masker:
    """A masker for every secret that can be read now (output may print one it was not given)."""
    values = []
    for source in sources:
        try:
            values.append(read(source))
        except SecretError:
            continue
    return Masker(values)
