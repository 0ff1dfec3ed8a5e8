"""Snapshot tests of every screen on the fixed demo (pytest-textual-snapshot).

Deterministic by construction: a reproducible demo (fixed commits, run times and logs), a fixed
console clock, no engine running, fixed terminal sizes. After a deliberate change to a screen,
look at the report, then update the baselines with `./dev test tests/tui/test_snapshots.py
--snapshot-update`.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.workspace import Workspace
from tests.cache import demo_copy
from tests.tui.scenes import SCENES, Scene, make_app


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A copy of the demo as tests.tui.scenes.build_demo makes it (built once, see tests/cache.py)."""
    return demo_copy(tmp_path_factory.mktemp("snapshots") / "demo")


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_screen(scene: Scene, demo_ws: Workspace, snap_compare: Any) -> None:
    app = make_app(demo_ws, scene.theme)
    assert snap_compare(app, terminal_size=scene.size, run_before=scene.steps)
