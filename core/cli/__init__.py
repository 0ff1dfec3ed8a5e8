"""The `ahead` command line: formatters over the door (core.api), one module a concern.

- `commands`: the parser, `main` and the commands (`python -m core.cli` runs it);
- `listings`: exit codes, opening the door, the shared listings and the host-trust flow;
- `drift`: `ahead drift` and its actions.

This package's own import is light (the commands load on first use of `main` and friends), so
`core.serve.listing` can use `listings` and `drift` without loading the command line: no
cli -> serve -> listing -> cli cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

SUBMODULES = ("commands", "drift", "listings")


def __getattr__(name: str) -> Any:
    """`cli.main`, `cli.OK`, ...: the names of core.cli.commands, loaded when first asked for."""
    if name.startswith("__"):  # import machinery and pickling ask for dunders: not ours
        raise AttributeError(name)
    if name in SUBMODULES:  # `from core.cli import drift` asks here first: load only that one
        return importlib.import_module(f"core.cli.{name}")
    commands = importlib.import_module("core.cli.commands")
    try:
        return getattr(commands, name)
    except AttributeError:
        raise AttributeError(f"module 'core.cli' has no attribute {name!r}") from None
