"""Drift: every target of every (repo, environment) with its state, how long, and who accepted it.

A row per target (the built-in `revision` one and those in the pipelines' `drift:`), in the
store's order (repo, environment, revision first), so a repo's targets stay together. `c` checks the selected target now and `C` every target
(in this console's process; each row being checked says so until its finding is back);
`A` acknowledges, `R` reconciles, enter opens the detail with the files and the diff.

The filter takes words: `repo:NAME`, `env:NAME`, `state:drifted|unknown|in_sync|acked`,
`kind:files|command|revision`, and any other text matched against every column.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from core.api.views import DriftView
from tui import render
from tui.commands import (
    ACKNOWLEDGE,
    BACK,
    CHECK,
    CHECK_ALL,
    DOWN,
    FILTER,
    HELP,
    OPEN,
    QUIT,
    RECONCILE,
    UP,
    bindings,
)
from tui.messages import EventBatch
from tui.screens import drift_actions
from tui.screens.base import FilteredListScreen
from tui.widgets.filter_bar import FilterBar
from tui.widgets.table import Table

SUMMARY_WIDTH = 40  # the status line has the whole of the selected one
DRIFT_EVENTS = {"drift.checked", "drift.acknowledged"}
Key = tuple[str, str, str]  # (repo, environment, target)
EMPTY = (
    "No drift checked yet. Every environment a repo deploys to has a `revision` target (main "
    "ahead of the deployed commit); a pipeline's drift: adds files and command targets. The "
    "engine checks them on schedule and after each deploy; C checks every target now."
)


def key(view: DriftView) -> Key:
    return (view.repo, view.environment, view.target)


def matches(view: DriftView, query: str) -> bool:
    state = render.drift_key(view.state, view.acknowledged) or ""
    for word in query.lower().split():
        name, _, value = word.partition(":")
        fields = {
            "repo": view.repo,
            "env": view.environment,
            "environment": view.environment,
            "state": f"{state} {view.state}",
            "kind": view.kind,
            "target": view.target,
        }
        if value and name in fields:
            if value not in fields[name].lower():
                return False
        elif not any(
            word in text.lower() for text in (*fields.values(), view.summary, view.ack_by or "")
        ):
            return False
    return True


def worst_first(view: DriftView) -> tuple[int, bool]:
    """Drifted, then unknown, then in sync; a live state (files, command) before the revision."""
    order = ("drifted", "unknown", "in_sync")
    return (order.index(view.state) if view.state in order else 3, view.kind == "revision")


def ack_text(view: DriftView, palette: dict[str, str]) -> Text:
    """`bob 23h` (by whom, for how much longer), or nothing."""
    if not view.acknowledged:
        return Text("")
    text = render.plain(view.ack_by or "", style=palette.get("drift-acked", ""))
    left = render.until(view.ack_until)
    if left:
        text.append(f" {left}", style=palette.get("muted", ""))
    return text


class DriftScreen(FilteredListScreen):
    LIST_ID = "drift"
    COMMAND_LIST = (
        OPEN,
        CHECK,
        CHECK_ALL,
        ACKNOWLEDGE,
        RECONCILE,
        FILTER,
        DOWN,
        UP,
        BACK,
        HELP,
        QUIT,
    )
    BINDINGS = bindings(OPEN, CHECK, CHECK_ALL, ACKNOWLEDGE, RECONCILE, FILTER, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | enter | Open the selected target: files, diff or command output, checks |
    | c | Check the selected target now |
    | C | Check every target now |
    | A | Acknowledge the selected drift (a reason and a duration) |
    | R | Reconcile: re-deploy the deployed commit through the pipeline (asks first) |
    | / | Filter: repo:NAME env:NAME state:drifted kind:files or any text |
    | esc | Clear the filter, then back |
    """

    def __init__(self, repo: str | None = None) -> None:
        super().__init__()
        self._views: list[DriftView] = []
        self._shown: list[DriftView] = []
        self._checking: set[Key] = set()
        self._checking_all = False
        self._want_repo = repo  # from the overview: start on this repo's worst target

    def body(self) -> ComposeResult:
        yield FilterBar("repo:NAME env:NAME state:drifted kind:files or any text", id="filter")
        yield Static(EMPTY, id="drift-empty", markup=False)
        yield Table(id="drift", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#drift", DataTable)
        for label, width in (
            ("REPO", None),
            ("ENV", None),
            ("TARGET", None),
            ("KIND", 8),
            ("STATE", 10),
            ("SINCE", 5),
            ("CHECKED", 7),
            ("ACK", None),
            ("SUMMARY", None),
        ):
            table.add_column(label, width=width)
        table.loading = True
        table.focus()
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load()

    @work(exclusive=True, group="drift-load", name="drift-load", description="list drift targets")
    async def _load(self) -> None:
        self._views = await self.ahead.session.drift()
        self.query_one("#drift", DataTable).loading = False
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if batch.kinds() & DRIFT_EVENTS:
            self._load()

    def select_repo(self, repo: str) -> None:
        """Put the cursor on `repo`'s worst target (now, or once the list has loaded)."""
        self._want_repo = repo
        if self._views:
            self._draw()

    # -- rendering ----------------------------------------------------------------------------------

    def _draw(self) -> None:
        table = self.query_one("#drift", DataTable)
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        selected = self.selected()
        self._shown = [v for v in self._views if matches(v, self._filter)]
        table.clear()
        for view in self._shown:
            checking = self._checking_all or key(view) in self._checking
            state = (
                Text("⟳ checking", style=palette.get("run-active", ""))
                if checking
                else render.drift(view.state, view.acknowledged, palette)
            )
            table.add_row(
                render.plain(view.repo),
                render.plain(view.environment),
                render.plain(view.target)[:24],
                Text(view.kind, style=muted),
                state,
                Text(render.ago(view.since)),
                Text(render.ago(view.checked_at), style=muted),
                ack_text(view, palette),
                render.plain(view.summary, style=muted)[:SUMMARY_WIDTH],
            )
        keys = [key(v) for v in self._shown]
        if self._want_repo is not None:
            mine = sorted((v for v in self._shown if v.repo == self._want_repo), key=worst_first)
            if mine:
                table.move_cursor(row=keys.index(key(mine[0])))
            self._want_repo = None
        elif selected is not None and key(selected) in keys:
            table.move_cursor(row=keys.index(key(selected)))
        self.query_one("#drift-empty", Static).display = not self._views
        self._update_status()
        self.refresh_bindings()

    def _update_status(self) -> None:
        if self._checking_all or self._checking:
            count = "every target" if self._checking_all else f"{len(self._checking)} target(s)"
            self.set_status(
                f"checking {count}… (a check can take seconds; the list updates when done)"
            )
            return
        view = self.selected()
        counts = {
            k: sum(1 for v in self._shown if render.drift_key(v.state, v.acknowledged) == k)
            for k in ("drifted", "unknown", "acked")
        }
        parts = [
            f"{len(self._shown)} targets",
            f"{counts['drifted']} drifted",
            f"{counts['unknown']} unknown",
            f"{counts['acked']} acknowledged",
        ]
        if self._filter:
            parts.append(f"filter: {self._filter}")
        if view is not None:
            parts.append(
                f"{view.repo}/{view.environment} {view.target}: {render.plain(view.summary).plain}"
            )
        self.set_status(" · ".join(parts))

    def selected(self) -> DriftView | None:
        row = self.query_one("#drift", DataTable).cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) else None

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self.selected()
        if action in ("open", "check"):
            return view is not None or None
        if action == "acknowledge":
            return (view is not None and view.state == "drifted") or None
        if action == "reconcile":
            return (
                view is not None and view.kind != "revision" and view.state != "in_sync"
            ) or None
        return True

    @on(DataTable.RowHighlighted, "#drift")
    def _moved(self) -> None:
        self.refresh_bindings()
        self._update_status()

    @on(DataTable.RowSelected, "#drift")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        view = self.selected()
        if view is not None:
            self.ahead.open_drift(view.repo, view.environment, view.target)

    def action_check(self) -> None:
        view = self.selected()
        if view is None:
            return
        if key(view) in self._checking or self._checking_all:
            self.notify("already checking it", timeout=3)
            return
        self._checking.add(key(view))
        self._draw()
        self.run_worker(
            self._check(view),
            group="drift-check",
            name="drift-check",
            description=f"check drift of {view.repo}/{view.environment} {view.target}",
        )

    def action_check_all(self) -> None:
        if self._checking_all:
            return
        self._checking_all = True
        self._draw()
        self.run_worker(
            self._check(None),
            group="drift-check",
            name="drift-check-all",
            description="check every drift target",
        )

    async def _check(self, view: DriftView | None) -> None:
        try:
            if view is None:
                found = await self.ahead.session.drift_check()
            else:
                found = await self.ahead.session.drift_check(
                    view.repo, view.environment, view.target
                )
        finally:
            if view is None:
                self._checking_all = False
            else:
                self._checking.discard(key(view))
            self._load()
        self.notify(drift_actions.check_summary(found), title="Checked", markup=False)

    def action_acknowledge(self) -> None:
        view = self.selected()
        if view is not None:
            drift_actions.acknowledge(self, view, self._load)

    def action_reconcile(self) -> None:
        view = self.selected()
        if view is not None:
            drift_actions.reconcile(self, view, self._load)

    def filter_changed(self) -> None:
        self._draw()
