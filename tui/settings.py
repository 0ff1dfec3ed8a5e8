"""The operator's console preferences: theme and key remaps.

Read from `$XDG_CONFIG_HOME/change-ahead/config.yml` (or `~/.config/...`):

    theme: ahead-light
    keymap:
      trigger: ctrl+t      # binding id: key

A bad file never stops the console: its problems (with file, line and field) are returned
as warnings and the defaults are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core import fields as f
from core.errors import ConfigError
from core.yamlfile import load


@dataclass(frozen=True)
class Settings:
    theme: str | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "change-ahead" / "config.yml"


def load_settings(path: Path | None = None) -> Settings:
    path = path or config_path()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        return Settings(warnings=(f"{path}: cannot read ({exc})",))
    try:
        doc = load(text, str(path))
        top = f.mapping(doc, (), doc.data if doc.data is not None else {}, "settings")
        f.check_keys(doc, (), top, ["theme", "keymap"])
        theme = (
            f.string(doc, ("theme",), top["theme"], "a theme name") if top.get("theme") else None
        )
        keymap_raw = f.mapping(doc, ("keymap",), top.get("keymap") or {}, "binding id: key")
        keymap = {
            k: f.string(doc, ("keymap", k), v, "a key such as ctrl+t")
            for k, v in keymap_raw.items()
        }
    except ConfigError as exc:
        return Settings(warnings=(str(exc),))
    return Settings(theme=theme, keymap=keymap)
