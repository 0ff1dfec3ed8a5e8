"""The console's screens on the fixed demo: one definition used by the snapshot tests and by
scripts/screenshots.py, so the README's pictures and the guarded baselines show the same thing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import demo, workspace
from core.console import ConsoleSession
from core.services import Actor
from core.workspace import Workspace
from tui import render
from tui.app import AheadApp
from tui.settings import Settings

NOW = 1795000000.0  # the fixed present of the pictures: 2026-11-18 08:26 UTC


def build_demo(parent: Path) -> Workspace:
    """The demo with the same commits, runs, times and logs on every machine, every day."""
    target = parent / "demo"
    if not (target / "ahead.yml").exists():
        demo.create(target, now=NOW, reproducible=True)
    return workspace.read(target / "ahead.yml")


def make_app(ws: Workspace, theme: str | None = None) -> AheadApp:
    render.set_clock(lambda: NOW)
    session = ConsoleSession(ws, Actor("alice"), embed_engine=False)
    return AheadApp(session, Settings(theme=theme))


async def settle(pilot: Any) -> None:
    """Wait until the session is up and every screen worker has finished."""
    app = pilot.app
    for _ in range(400):
        if app.is_ready:
            break
        await asyncio.sleep(0.025)
    for _ in range(3):
        workers = [w for w in app.workers if w.group != "bridge"]
        await asyncio.gather(*(w.wait() for w in workers), return_exceptions=True)
        await pilot.pause()


async def press(pilot: Any, *keys: str) -> None:
    await settle(pilot)
    await pilot.press(*keys)
    await settle(pilot)


async def open_run(pilot: Any, run_id: int) -> None:
    await settle(pilot)
    pilot.app.open_run(run_id)
    await settle(pilot)


@dataclass(frozen=True)
class Scene:
    name: str
    size: tuple[int, int]
    steps: Callable[[Any], Awaitable[None]]
    theme: str | None = None


async def nothing(pilot: Any) -> None:
    await settle(pilot)


SCENES: tuple[Scene, ...] = (
    Scene("overview", (100, 30), nothing),
    Scene("overview-80x24", (80, 24), nothing),
    Scene("overview-200x60", (200, 60), nothing),
    Scene("overview-filter", (80, 24), lambda p: press(p, "slash", "s", "e", "r")),
    Scene("repo", (100, 30), lambda p: press(p, "enter")),
    Scene("repo-80x24", (80, 24), lambda p: press(p, "enter")),
    Scene("run", (100, 30), lambda p: open_run(p, 7)),
    Scene("run-80x24", (80, 24), lambda p: open_run(p, 6)),
    Scene("run-200x60", (200, 60), lambda p: open_run(p, 7)),
    Scene("runs", (100, 30), lambda p: press(p, "r")),
    Scene("runs-80x24", (80, 24), lambda p: press(p, "r")),
    Scene("help", (80, 24), lambda p: press(p, "question_mark")),
    Scene("overview-light", (100, 30), nothing, theme="ahead-light"),
    Scene("overview-contrast", (100, 30), nothing, theme="ahead-contrast"),
)
