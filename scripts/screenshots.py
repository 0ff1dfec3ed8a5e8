"""Regenerate screenshots/*.svg: every console screen on the fixed demo (see tests/tui/scenes.py).

Run with ./dev screenshots. Uses the same scenes as the snapshot tests.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.workspace import Workspace  # noqa: E402
from tests.tui.scenes import SCENES, build_demo, make_app  # noqa: E402


async def shoot(out: Path, ws: Workspace) -> None:
    for scene in SCENES:
        app = make_app(ws, scene.theme)
        async with app.run_test(size=scene.size) as pilot:
            await scene.steps(pilot)
            app.save_screenshot(filename=f"{scene.name}.svg", path=str(out))
        print(f"screenshots/{scene.name}.svg")


def main() -> int:
    out = ROOT / "screenshots"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        ws = build_demo(Path(scratch))  # runs its own event loop, so before ours
        asyncio.run(shoot(out, ws))
    return 0


if __name__ == "__main__":
    sys.exit(main())
