"""Who: the other consoles open on this workspace, over SSH or local, and what they look at.

Per console: the operator, where from (the SSH client's address, or `local`), since when, and
the screen it shows. Live: presence events (a login, a logout, a screen change) reload it.
This console itself is left out; the title bar of every screen names the others too.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui import render
from tui.commands import BACK, DOWN, HELP, QUIT, UP, bindings
from tui.messages import EventBatch
from tui.screens.base import AheadScreen
from tui.widgets.table import Table

EMPTY = (
    "Nobody else is connected. Operators open the console with `ahead`, or over SSH with "
    "their key (ssh -p PORT NAME@HOST) while `ahead serve` runs."
)


class WhoScreen(AheadScreen):
    COMMAND_LIST = (DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | j / k | Down / up |
    | esc | Back |
    """

    def body(self) -> ComposeResult:
        yield Static(EMPTY, id="who-empty", markup=False)
        yield Table(id="who", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#who", DataTable)
        table.add_columns("OPERATOR", "FROM", "SINCE", "SCREEN")
        table.focus()
        super().on_mount()

    def load(self) -> None:
        self._load()

    def on_events(self, batch: EventBatch) -> None:
        if "presence" in batch.kinds():
            self._load()

    @work(exclusive=True, group="who-load", name="who-load", description="list open consoles")
    async def _load(self) -> None:
        session = self.ahead.session
        others = [p for p in await session.who() if p.id != session.presence_id]
        palette = self.app.theme_variables
        table = self.query_one("#who", DataTable)
        table.clear()
        for p in others:
            table.add_row(
                render.plain(p.operator, style="bold"),
                render.plain(f"ssh {p.source}" if p.kind == "ssh" else p.kind),
                Text(f"{render.ago(p.started_at)} ago", style=palette.get("muted", "")),
                render.plain(p.screen or "-"),
                key=str(p.id),
            )
        self.query_one("#who-empty", Static).display = not others
        people = len({p.operator for p in others})
        self.set_status(
            f"{len(others)} other console{'s' * (len(others) != 1)} open"
            f" · {people} operator{'s' * (people != 1)}"
            if others
            else "only you"
        )
