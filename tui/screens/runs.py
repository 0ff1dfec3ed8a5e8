"""Runs: recent runs across every repo, filterable by repo, state and branch.

The filter takes words: `repo:NAME`, `status:STATE` (or `state:`), `branch:NAME`, and any other
text matched against repo, branch, subject and author.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable

from core import states
from core.api.views import RunView
from tui import render
from tui.commands import BACK, CANCEL, DOWN, FILTER, HELP, OPEN, QUIT, RETRY, UP, bindings
from tui.messages import EventBatch
from tui.screens.base import FilteredListScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.filter_bar import FilterBar
from tui.widgets.table import Table

ACTIVE = states.UNFINISHED


def matches(run: RunView, query: str) -> bool:
    for word in query.lower().split():
        key, _, value = word.partition(":")
        if value and key == "repo":
            if value not in run.repo.lower():
                return False
        elif value and key in ("status", "state"):
            if not run.status.startswith(value):
                return False
        elif value and key == "branch":
            if value not in run.branch.lower():
                return False
        elif not any(
            word in field.lower()
            for field in (run.repo, run.branch, run.subject, run.author, run.status, f"#{run.id}")
        ):
            return False
    return True


class RunsScreen(FilteredListScreen):
    LIST_ID = "runs"
    COMMAND_LIST = (OPEN, FILTER, CANCEL, RETRY, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(OPEN, FILTER, CANCEL, RETRY, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | enter | Open the selected run |
    | / | Filter: repo:NAME status:STATE branch:NAME or any text |
    | c | Cancel the selected run (asks first) |
    | R | Retry the selected run |
    | esc | Clear the filter, then back |
    """

    def __init__(self) -> None:
        super().__init__()
        self._runs: list[RunView] = []
        self._shown: list[RunView] = []
        self._filter = ""

    def body(self) -> ComposeResult:
        yield FilterBar("repo:NAME status:failed branch:main or any text", id="filter")
        yield Table(id="runs", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        # Fixed widths where the content has a known size: a table redrawn while runs move
        # never shows a truncated state or commit (auto widths lag behind a fast redraw).
        for label, width in (
            ("RUN", 6),
            ("REPO", None),
            ("BRANCH", None),
            ("COMMIT", 7),
            ("STATE", 13),
            ("TRIGGER", 7),
            ("QUEUED", 6),
            ("TOOK", 7),
            ("SUBJECT", None),
        ):
            table.add_column(label, width=width)
        table.focus()
        super().on_mount()

    def load(self) -> None:
        self._load()

    @work(exclusive=True, group="runs-load", name="runs-load", description="list recent runs")
    async def _load(self) -> None:
        self._runs = await self.ahead.session.runs(limit=500)
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if batch.kinds() & {"run.queued", "run.started", "run.finished", "stage.finished"}:
            self._load()

    def _draw(self) -> None:
        table = self.query_one("#runs", DataTable)
        palette = self.app.theme_variables
        selected = self.selected_run()
        self._shown = [r for r in self._runs if matches(r, self._filter)]
        table.clear()
        for run in self._shown:
            table.add_row(
                Text(f"#{run.id}"),
                render.plain(run.repo),
                render.plain(run.branch)[:28],
                Text(render.short(run.commit), style=palette.get("primary", "")),
                render.state(run.status, palette),
                Text(run.trigger, style=palette.get("muted", "")),
                Text(render.ago(run.created_at), style=palette.get("muted", "")),
                Text(render.took(run.started_at, run.finished_at)),
                render.plain(run.subject),
                key=str(run.id),
            )
        ids = [r.id for r in self._shown]
        if selected is not None and selected.id in ids:
            table.move_cursor(row=ids.index(selected.id))
        failed = sum(1 for r in self._shown if r.status in ("failed", "interrupted"))
        active = sum(1 for r in self._shown if r.status in ACTIVE)
        text = f"{len(self._shown)} runs · {active} active · {failed} failed"
        self.set_status(text + (f" · filter: {self._filter}" if self._filter else ""))
        self.refresh_bindings()

    def selected_run(self) -> RunView | None:
        row = self.query_one("#runs", DataTable).cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.selected_run()
        if action == "open":
            return run is not None or None
        if action == "cancel":
            return (run is not None and run.status in ACTIVE) or None
        if action == "retry":
            return (run is not None and run.status not in ACTIVE) or None
        return True

    @on(DataTable.RowHighlighted, "#runs")
    def _moved(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#runs")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.ahead.open_run(run.id)

    def action_cancel(self) -> None:
        run = self.selected_run()
        if run is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(run.id)

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel run #{run.id} of {run.repo}?",
                "Running steps are stopped. This is audited.",
                confirm="Cancel run",
                destructive=True,
            ),
            answered,
        )

    @work(group="commands", name="cancel", description="cancel a run")
    async def _cancel(self, run_id: int) -> None:
        state = await self.ahead.session.cancel(run_id)
        self.notify(f"run #{run_id}: {state}", title="Cancel")

    @work(group="commands", name="retry", description="retry a run")
    async def action_retry(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        run_id = await self.ahead.session.retry(run.id)
        self.notify(f"queued run #{run_id} (retry of #{run.id})", title="Retry")

    def filter_changed(self) -> None:
        self._draw()
