"""Changes: the queue of change requests waiting at approval gates, newest first.

Per request: repo, environment, the range it would deploy (base..head) and how many commits,
its age, the policy status (`⏸ 1 of 2`, ❄ when the environment is frozen) and who may still
approve (you in bold). Live: any `change.*` event reloads it, so an approval given from the CLI
or another console shows at once. Enter opens the detail; approve and reject work from here too.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui import checklist, render
from tui.commands import APPROVE, BACK, DECIDED, DOWN, HELP, OPEN, QUIT, REJECT, UP, bindings
from tui.messages import EventBatch
from tui.screens.base import AheadScreen
from tui.screens.decision import decide
from tui.widgets.table import Table

EMPTY = (
    "Nothing waits for approval. A run that reaches a stage deploying to an environment "
    "with a policy (policies: in ahead.yml) waits here until enough approvers agree."
)


def is_change_event(batch: EventBatch) -> bool:
    return (
        any(kind.startswith("change.") for kind in batch.kinds()) or "run.finished" in batch.kinds()
    )


class ChangesScreen(AheadScreen):
    COMMAND_LIST = (OPEN, APPROVE, REJECT, DECIDED, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(OPEN, APPROVE, REJECT, DECIDED, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | enter | Open the selected change: commits, diff stat, artifacts, checklist |
    | A | Approve the selected change (asks first) |
    | X | Reject the selected change with a comment (asks first) |
    | d | Show decided change requests too, or only open ones |
    | j / k | Down / up |
    | esc | Back |
    """

    def __init__(self) -> None:
        super().__init__()
        self._changes: list[dict[str, Any]] = []
        self._decided = False

    def body(self) -> ComposeResult:
        yield Static(EMPTY, id="changes-empty", markup=False)
        yield Table(id="changes", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#changes", DataTable)
        table.add_columns(
            "CHANGE", "REPO", "ENV", "RANGE", "COMMITS", "AGE", "POLICY", "MAY APPROVE"
        )
        table.loading = True
        table.focus()
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load()

    @work(
        exclusive=True,
        group="changes-load",
        name="changes-load",
        description="list change requests",
    )
    async def _load(self) -> None:
        self._changes = await self.ahead.session.changes(include_decided=self._decided)
        self.query_one("#changes", DataTable).loading = False
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if is_change_event(batch):
            self._load()

    def _draw(self) -> None:
        table = self.query_one("#changes", DataTable)
        palette = self.app.theme_variables
        actor = self.ahead.session.actor.name
        envs = self.ahead.session.ws.environments
        selected = self.selected_change()
        table.clear()
        for change in self._changes:
            production = checklist.is_production(envs, change["environment"])
            still = (
                checklist.may_still_approve(change)
                if change["status"] in checklist.DECIDABLE
                else []
            )
            table.add_row(
                Text(f"#{change['id']}"),
                render.plain(change["repo"]),
                render.plain(change["environment"], style="bold" if production else ""),
                Text(checklist.range_text(change), style=palette.get("primary", "")),
                Text(str(len(change["commits"])), justify="right"),
                Text(render.ago(change["created_at"]), style=palette.get("muted", "")),
                checklist.policy_status(change, palette),
                checklist.names(still, actor, palette, empty="—"),
                key=str(change["id"]),
            )
        ids = [c["id"] for c in self._changes]
        if selected is not None and selected["id"] in ids:
            table.move_cursor(row=ids.index(selected["id"]))
        empty = self.query_one("#changes-empty", Static)
        empty.display = not self._changes and not self._decided
        self._update_status()
        self.refresh_bindings()

    def _update_status(self) -> None:
        change = self.selected_change()
        if change is not None:
            self.set_status(checklist.summary(change, self.ahead.session.actor.name))
            return
        waiting = sum(1 for c in self._changes if c["status"] in checklist.DECIDABLE)
        scope = "every change request" if self._decided else "open change requests"
        self.set_status(f"{waiting} waiting for approval · showing {scope} (d toggles)")

    def selected_change(self) -> dict[str, Any] | None:
        row = self.query_one("#changes", DataTable).cursor_row
        return self._changes[row] if 0 <= row < len(self._changes) else None

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        change = self.selected_change()
        if action == "open":
            return change is not None or None
        if action in ("approve", "reject"):
            return (
                change is not None and checklist.standing(change, self.ahead.session.actor.name)[0]
            ) or None
        return True

    @on(DataTable.RowHighlighted, "#changes")
    def _moved(self) -> None:
        self.refresh_bindings()
        self._update_status()

    @on(DataTable.RowSelected, "#changes")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        change = self.selected_change()
        if change is not None:
            self.ahead.open_change(change["id"])

    def action_approve(self) -> None:
        change = self.selected_change()
        if change is not None:
            decide(self, change, "approve", self._load)

    def action_reject(self) -> None:
        change = self.selected_change()
        if change is not None:
            decide(self, change, "reject", self._load)

    def action_decided(self) -> None:
        self._decided = not self._decided
        self._load()
