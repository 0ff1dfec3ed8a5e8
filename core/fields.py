"""Typed readers for fields of a YAML `Document`, shared by the workspace and pipeline parsers.

Each reader checks one field and raises a `ConfigError` that names the file, line and field and
says how to fix it. Unknown keys get a "did you mean" suggestion. Depends on core.yamlfile only.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from core.yamlfile import Document, Path

_DURATION = re.compile(
    r"^(?:([0-9]{1,12})d)?(?:([0-9]{1,12})h)?(?:([0-9]{1,12})m)?(?:([0-9]{1,12})s)?$"
)
MAX_DURATION = 3650 * 86400  # ten years: longer is a typo, and would overflow timers and dates
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_keys(doc: Document, path: Path, value: dict[str, Any], known: list[str]) -> None:
    """Refuse keys not in `known`, suggesting the closest known key."""
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            fix = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(known)
            raise doc.error(path + (key,), "unknown key", fix)


def mapping(doc: Document, path: Path, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, f"must be a mapping ({what}), got {type_name(value)}")
    return value


def sequence(doc: Document, path: Path, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise doc.error(path, f"must be a list ({what}), got {type_name(value)}")
    return value


def string(doc: Document, path: Path, value: Any, what: str = "text") -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise doc.error(path, f"must be {what}, got {type_name(value)}")
    text = str(value)
    if "\x00" in text:
        raise doc.error(path, "must not contain NUL characters")
    return text


def name(doc: Document, path: Path, value: Any, what: str) -> str:
    text = string(doc, path, value, what)
    if not NAME.match(text):
        raise doc.error(
            path,
            f"{text!r} is not a valid {what}",
            "use letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return text


def string_list(doc: Document, path: Path, value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    items = sequence(doc, path, value, what)
    return [string(doc, path + (i,), item, what) for i, item in enumerate(items)]


def positive_int(doc: Document, path: Path, value: Any, what: str, most: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise doc.error(
            path, f"must be a whole number of at least 1 ({what}), got {str(value)[:40]}"
        )
    if value > most:
        raise doc.error(path, f"must be at most {most} ({what})")
    return value


def duration(doc: Document, path: Path, value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"2d"``."""
    if isinstance(value, bool):
        raise doc.error(path, "must be a duration like 30s, 5m or 1h", f"got {value!r}")
    if isinstance(value, int | float):
        seconds: int | float = value
    else:
        match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
        if not match or not any(match.groups()):
            raise doc.error(
                path, f"{str(value)[:40]!r} is not a duration", "write it like 30s, 5m, 1h30m or 2d"
            )
        d, h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds != seconds:  # NaN (.nan in YAML) compares unequal to itself
        raise doc.error(path, "must be a duration like 30s, 5m or 1h", "got .nan")
    if seconds <= 0:
        raise doc.error(path, "must be longer than zero")
    if seconds > MAX_DURATION:  # also .inf and numbers too large for a float
        raise doc.error(path, f"must be at most {MAX_DURATION // 86400}d")
    return float(seconds)


_SIZE = re.compile(r"^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def size(doc: Document, path: Path, value: Any, most: int = 1024**4) -> int:
    """Bytes from ``1048576``, ``"512MiB"``, ``"2GiB"``, ``"100MB"`` or ``"64k"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise doc.error(path, "must be a size like 512MiB or 2GiB", f"got {str(value)[:40]}")
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if isinstance(value, str) and match is None:
        raise doc.error(
            path, f"{value[:40]!r} is not a size", "write it like 512MiB, 2GiB or 100MB"
        )
    if isinstance(value, int):
        number = value
    else:
        assert match is not None  # a str that did not match was refused above
        number = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if number < 1:
        raise doc.error(path, "must be at least 1 byte")
    if number > most:
        raise doc.error(path, f"must be at most {most // 1024**3} GiB")
    return number


def seconds_of(text: str) -> float | None:
    """Seconds from "90", "90s", "5m", "1h30m" or "2d"; None when it is not a duration."""
    text = text.strip()
    if text.isdigit():
        return float(text) or None
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return float(((d * 24 + h) * 60 + m) * 60 + s) or None


def env_map(doc: Document, path: Path, value: Any) -> dict[str, str]:
    """Environment variables: names like shell identifiers, values as strings."""
    items = mapping(doc, path, value, "NAME: value")
    result: dict[str, str] = {}
    for key, item in items.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise doc.error(
                path + (key,),
                "is not a valid environment variable name",
                "use letters, digits and _, not starting with a digit",
            )
        if key.startswith("AHEAD_"):
            raise doc.error(
                path + (key,),
                "names starting with AHEAD_ are set by the engine",
                "choose another name",
            )
        result[key] = string(doc, path + (key,), item, "text")
    return result


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "a mapping", list: "a list", str: "text", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def require(doc: Document, path: Path, value: dict[str, Any], key: str, fix: str) -> Any:
    if key not in value or value[key] is None:
        raise doc.error(path, f'missing required key "{key}"', fix)
    return value[key]


def switch(doc: Document, path: Path, value: Any, fix: str = "") -> bool:
    """on/off (also true/false, yes/no)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in ("on", "true", "yes"):
        return True
    if text in ("off", "false", "no"):
        return False
    raise doc.error(path, f"must be on or off, got {str(value)[:40]!r}", fix)
