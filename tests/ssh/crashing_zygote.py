"""The console zygote with a bug injected: the overview raises as it loads (for the crash test)."""

from __future__ import annotations

import sys

import tui.zygote
from tui.screens.overview import OverviewScreen


def broken_load(self: OverviewScreen) -> None:
    raise RuntimeError("injected bug, secret=hunter2")


OverviewScreen.load = broken_load  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(tui.zygote.main(int(sys.argv[1])))  # no warm-up: it would crash too
