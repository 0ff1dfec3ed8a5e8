"""One console under load, for bench_load.py: the real AheadApp (headless, `run_test`) on a real
ClientSession (a client of the engine process), following the log of the newest run and
pressing `f` (follow on/off) every 50-100 ms; each press is timed to the first frame displayed
with the new follow state. Every few seconds it switches to the newest run, as someone watching
deploys would.

    python bench/load_console.py --workspace DIR --seconds 120 --out FILE.json

Writes {"samples": [[wall time, ms or null, seconds since the run screen opened], ...],
"errors": [...], "runs_followed": N}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.api.session import ClientSession
from core.services import Actor
from core.workspace import read as read_workspace

SWITCH_SECONDS = 15.0


async def follow(ws_dir: Path, seconds: float, seed: int) -> dict[str, Any]:
    from textual import events
    from textual.app import App

    from tui.app import AheadApp
    from tui.screens.run import RunScreen

    rng = random.Random(seed)
    ws = read_workspace(ws_dir / "ahead.yml")
    session = ClientSession(ws, Actor("bench", ("viewer",)), embed_engine=False)
    app = AheadApp(session)
    samples: list[tuple[float, float | None, float]] = []
    errors: list[str] = []
    waiting: dict[str, Any] = {}
    original = App._display

    def display(self: Any, screen: Any, renderable: Any) -> None:
        original(self, screen, renderable)
        want = waiting.get("state")
        if (
            renderable is not None
            and want is not None
            and isinstance(self.screen, RunScreen)
            and self.screen._follow == want
        ):
            waiting["seen"] = time.perf_counter()
            waiting["state"] = None

    App._display = display  # type: ignore[method-assign]
    followed = 0
    try:
        async with app.run_test(size=(160, 50)):
            deadline = time.monotonic() + seconds
            current, switched = None, 0.0
            while time.monotonic() < deadline:
                if time.monotonic() - switched >= SWITCH_SECONDS:
                    switched = time.monotonic()
                    runs = await session.runs(limit=1)
                    if runs and runs[0].id != current:
                        current = runs[0].id
                        if isinstance(app.screen, RunScreen):
                            app.pop_screen()
                        app.open_run(current)
                        followed += 1
                        await asyncio.sleep(0.2)
                screen = app.screen
                if not isinstance(screen, RunScreen):
                    await asyncio.sleep(0.1)
                    continue
                waiting.update(state=not screen._follow, seen=None)
                key = events.Key("f", "f")
                key.set_sender(app)
                sent = time.perf_counter()
                app._driver.send_message(key)  # type: ignore[union-attr]
                limit = sent + 3.0
                while waiting["seen"] is None and time.perf_counter() < limit:
                    await asyncio.sleep(0.002)
                seen = waiting["seen"]
                samples.append(
                    (
                        time.time(),
                        (seen - sent) * 1000 if seen else None,
                        time.monotonic() - switched,
                    )
                )
                waiting["state"] = None
                await asyncio.sleep(rng.uniform(0.05, 0.1))
    except Exception:  # a console failing under load is a result, not a crash
        errors.append(traceback.format_exc())
    finally:
        App._display = original  # type: ignore[method-assign]
        await session.aclose()
    return {"samples": samples, "errors": errors, "runs_followed": followed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(follow(args.workspace, args.seconds, args.seed))
    args.out.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
