"""Console fixtures: the real app over a real session (embedded engine, real git, real SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.api.session import ClientSession
from core.services import Actor
from core.workspace import Workspace
from tui.app import AheadApp
from tui.settings import Settings


@asynccontextmanager
async def console(
    ws: Workspace,
    size: tuple[int, int] = (100, 30),
    settings: Settings | None = None,
    actor: str = "alice",
    embed: bool = True,
) -> AsyncIterator[tuple[AheadApp, object]]:
    session = ClientSession(ws, Actor(actor), embed_engine=embed)
    app = AheadApp(session, settings)
    try:
        async with app.run_test(size=size) as pilot:
            await wait_ready(app, pilot)
            yield app, pilot
    finally:
        await session.aclose()


async def wait_ready(app: AheadApp, pilot: object, timeout: float = 10.0) -> None:
    import asyncio

    for _ in range(int(timeout / 0.05)):
        if app.is_ready:
            await settle(app)
            await pilot.pause()  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the console session never became ready")


async def settle(app: AheadApp) -> None:
    """Wait for the screens' workers (not the bridge, which follows the feed forever)."""
    import asyncio

    workers = [w for w in app.workers if w.group != "bridge"]
    await asyncio.gather(*(w.wait() for w in workers), return_exceptions=True)


def screen_text(app: AheadApp) -> str:
    """The visible screen (top modal included) as plain text: what an operator reads."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)
