"""The `ahead` entry point: the core CLI, with the console plugged in.

core never imports the UI; this module hands core.cli a function that opens the console.
"""

from __future__ import annotations

import asyncio
import sys

from core import cli
from core.console import ConsoleSession
from core.services import Actor
from core.workspace import Workspace


def open_console(ws: Workspace, actor: Actor) -> int:
    from tui.app import AheadApp
    from tui.settings import load_settings

    session = ConsoleSession(ws, actor)
    app = AheadApp(session, load_settings())

    async def run() -> None:
        try:
            await app.run_async()
        finally:
            await session.aclose()

    asyncio.run(run())
    return app.return_code or 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, open_console=open_console)


if __name__ == "__main__":
    sys.exit(main())
