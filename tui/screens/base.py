"""What every console screen shares: the title bar, footer, live events and list keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tui.commands import Command
from tui.messages import EventBatch
from tui.widgets.filter_bar import FilterBar
from tui.workers import KeepRunning

if TYPE_CHECKING:
    from tui.app import AheadApp


class AheadScreen(KeepRunning, Screen[None]):
    """Base screen: subclasses set COMMAND_LIST (and BINDINGS from it) and build `body()`."""

    COMMAND_LIST: ClassVar[tuple[Command, ...]] = ()
    AUTO_FOCUS = "DataTable"

    @property
    def ahead(self) -> AheadApp:
        return cast("AheadApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="title-bar", markup=False)
        yield from self.body()
        yield Static("", id="status-line", markup=False)
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def title_text(self) -> str:
        session = self.ahead.session
        mode = (
            {
                "embedded": "engine: here",
                "client": "engine: elsewhere",
                "no engine": "engine: not running",
            }[session.mode]
            if self.ahead.is_ready
            else "starting engine…"
        )
        title = f"Change Ahead · {session.ws.root.name} · {session.actor.name} · {mode}"
        if not session.ws.settings.sandbox:
            title += " · ⚠ sandbox off: branch steps run unisolated"
        others = self.ahead.others
        if others:
            names = ", ".join(others[:2]) + (f" +{len(others) - 2}" if len(others) > 2 else "")
            title += f" · also here: {names}"
        return title

    def on_mount(self) -> None:
        self.ahead.engine_events.subscribe(self, self._on_events)
        self.ahead.ready.subscribe(self, self._on_ready)
        self.ahead.presence.subscribe(self, self._on_presence)
        if self.ahead.is_ready:
            self.call_after_refresh(self.load)

    def _on_ready(self, _: None) -> None:
        self.query_one("#title-bar", Static).update(self.title_text())
        self.load()

    def _on_presence(self, _: None) -> None:
        self.query_one("#title-bar", Static).update(self.title_text())

    def on_screen_resume(self) -> None:
        self.ahead.screen_shown(self.presence_name())

    def presence_name(self) -> str:
        """What the other consoles see this one look at (the Who screen)."""
        return type(self).__name__.removesuffix("Screen")

    def _on_events(self, batch: EventBatch) -> None:
        if self.ahead.is_ready:
            self.on_events(batch)

    def load(self) -> None:
        """(Re)load the screen's data; called when the session is ready."""

    def on_events(self, batch: EventBatch) -> None:
        """React to engine events (runs only while the session is ready)."""

    def set_status(self, text: str) -> None:
        self.query_one("#status-line", Static).update(text)

    # -- shared list keys ------------------------------------------------------------------------

    def _table(self) -> DataTable[object] | None:
        focused = self.focused
        if isinstance(focused, DataTable):
            return focused
        tables = self.query(DataTable)
        return tables.first() if tables else None

    def action_cursor_down(self) -> None:
        table = self._table()
        if table is not None:
            table.action_cursor_down()

    def action_cursor_up(self) -> None:
        table = self._table()
        if table is not None:
            table.action_cursor_up()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


class FilteredListScreen(AheadScreen):
    """A list screen with a `/` filter bar (a FilterBar with id `filter`) over one table.

    Subclasses set LIST_ID (the table's id) and implement `filter_changed()`; the text typed
    is in `self._filter`. `esc` clears and hides the bar before it goes back.
    """

    LIST_ID: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self._filter = ""

    def filter_changed(self) -> None:
        """Redraw the list for `self._filter`."""

    def action_filter(self) -> None:
        self.query_one("#filter", FilterBar).show()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._filter = event.value.strip()
        self.filter_changed()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(f"#{self.LIST_ID}", DataTable).focus()

    def action_back(self) -> None:
        bar = self.query_one("#filter", FilterBar)
        if bar.shown:
            bar.hide()
            self.query_one(f"#{self.LIST_ID}", DataTable).focus()
            return
        super().action_back()
