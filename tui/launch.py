"""The `ahead` entry point: the core CLI, with the console plugged in.

core never imports the UI; this module hands core.cli a function that opens the console, and
the program `ahead serve` forks SSH consoles from (tui.zygote).
"""

from __future__ import annotations

import asyncio
import sys

from core.api import Actor
from core.api.session import ClientSession
from core.cli import commands as cli
from core.workspace import Workspace

ZYGOTE_ARGV = (sys.executable, "-m", "tui.zygote")


def run_console(session: ClientSession, app_setup: object = None) -> int:
    """Run the console on `session` until it quits, then close the session; the exit code.
    `app_setup(app)`, when given, adjusts the app before it runs (the SSH child uses it)."""
    from tui.app import AheadApp
    from tui.settings import load_settings

    app = AheadApp(session, load_settings())
    if callable(app_setup):
        app_setup(app)

    async def run() -> None:
        try:
            await app.run_async()
        finally:
            await session.aclose()

    asyncio.run(run())
    return app.return_code or 0


def open_console(ws: Workspace, actor: Actor) -> int:
    return run_console(ClientSession(ws, actor))


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, open_console=open_console, console_zygote=ZYGOTE_ARGV)


if __name__ == "__main__":
    sys.exit(main())
