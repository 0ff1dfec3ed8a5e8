"""Overview: every repo against every environment, at a glance.

Per cell: the last state touching the environment (glyph and colour), the deployed commit,
how many commits on main wait (pending) and for how long (lag); a cell whose run waits at an
approval gate says so in the approval colour with the policy status (`⏸ b3506dd +3 1/2`); a
drifted environment ends in `≠` (acknowledged: `≈`, could not check: `?`). Per
repo: head of main and the last run's stage strip. Sorted (`s`) and filtered (`/`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable

from core.api.views import EnvCell, RepoView
from tui import checklist, render
from tui.commands import (
    BACK,
    DOWN,
    FILTER,
    HELP,
    LAST_RUN,
    OPEN,
    QUIT,
    RUNS,
    SORT,
    TRIGGER,
    UP,
    bindings,
)
from tui.messages import EventBatch
from tui.screens.base import FilteredListScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.filter_bar import FilterBar
from tui.widgets.table import Table

SORTS = ("name", "lag", "state")
PENDING_CHUNK = 50
STATE_ORDER = {
    "failed": 0,
    "interrupted": 1,
    "running": 2,
    "waiting": 3,
    "queued": 4,
    "cancelled": 5,
    "succeeded": 6,
    "skipped": 7,
    None: 8,
}
REFRESH_KINDS = {
    "run.queued",
    "run.started",
    "run.finished",
    "run.planned",
    "stage.started",
    "stage.finished",
    "deployment",
    "refs",
    "lock",
    "drift.checked",
    "drift.acknowledged",
}
Gates = dict[tuple[str, str], dict[str, Any]]  # (repo, environment) → its open change request


def stage_strip(view: RepoView, palette: Mapping[str, str]) -> Text:
    run = view.last_run
    if run is None:
        return Text("no runs", style=palette.get("muted", ""))
    text = Text(f"#{run.id} ", style=palette.get("muted", ""))
    stages = [s for s in run.stages if s.status != "skipped"] or list(run.stages)
    if not stages:
        text.append(render.glyph(run.status), style=render.colour(run.status, palette))
    for stage in stages:
        text.append(render.glyph(stage.status), style=render.colour(stage.status, palette))
    return text


def env_cell(
    cell: EnvCell,
    palette: Mapping[str, str],
    wide: bool = True,
    gate: Mapping[str, Any] | None = None,
) -> Text:
    if not cell.deploys and not cell.deployed:
        return Text("  —", style=palette.get("muted", ""))  # the pipeline never deploys here
    text = Text()
    at_gate = cell.last_status == "waiting" or gate is not None
    approval = palette.get("approval-pending", "")
    if at_gate:
        text.append(render.glyph("waiting"), style=f"bold {approval}")
    else:
        text.append(render.glyph(cell.last_status), style=render.colour(cell.last_status, palette))
    text.append(" ")
    if cell.deployed:
        text.append(render.short(cell.deployed), style=palette.get("deployed", ""))
    else:
        text.append("never  ", style=palette.get("muted", ""))
    if at_gate and gate is not None and not wide:
        pass  # narrow: the approval status says more than the pending count (in the status line)
    elif cell.pending is None:
        text.append(" …", style=palette.get("muted", ""))
    elif cell.pending:
        text.append(f" +{cell.pending}", style=palette.get("pending", ""))
        if wide:
            text.append(f" {render.age(lag(cell))}", style=palette.get("muted", ""))
    else:
        text.append(" ✓", style=palette.get("run-ok", ""))
    if cell.locked:
        text.append(" locked" if wide else " lk", style=f"bold {palette.get('run-failed', '')}")
    if at_gate:
        if gate is None:
            text.append(" approval" if wide else " appr", style=approval)
        else:
            have, need = checklist.approvals(gate)
            text.append(f" {'approval ' if wide else ''}{have}/{need}", style=f"bold {approval}")
            if gate["checklist"].get("frozen"):
                text.append("❄", style=palette.get("run-cancelled", ""))
    if cell.drift in ("drifted", "unknown"):  # in sync stays quiet
        if wide:
            text.append(" ")
        text.append_text(render.drift(cell.drift, cell.drift_acked, palette, label=wide))
    return text


def lag(cell: EnvCell) -> float:
    """How long the oldest pending commit has waited (by the console's clock)."""
    return render.now() - cell.oldest_pending_at if cell.oldest_pending_at else 0.0


def max_lag(view: RepoView) -> float:
    return max((lag(c) for c in view.cells), default=0.0)


class OverviewScreen(FilteredListScreen):
    LIST_ID = "overview"
    COMMAND_LIST = (OPEN, LAST_RUN, TRIGGER, FILTER, SORT, RUNS, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(OPEN, LAST_RUN, TRIGGER, FILTER, SORT, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | enter | Open the selected repo |
    | l | Open the selected repo's last run |
    | t | Trigger a run of the head of main |
    | / | Filter by repo name or state |
    | s | Sort by name, lag or state |
    | j / k | Down / up |
    """

    def __init__(self) -> None:
        super().__init__()
        self._views: dict[str, RepoView] = {}
        self._filter = ""
        self._sort = "name"
        self._dirty: set[str] = set()
        self._order: list[str] = []
        self._binding_state: tuple[bool | None, ...] = ()
        self._gates: Gates = {}
        self._gates_dirty = False

    def body(self) -> ComposeResult:
        yield FilterBar("filter: repo name or state (esc clears)", id="filter")
        table: DataTable[Text] = Table(id="overview", cursor_type="row", zebra_stripes=False)
        table.loading = True
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#overview", DataTable)
        table.add_column("REPO", key="repo")
        table.add_column("MAIN", key="main")
        table.add_column("LAST RUN", key="last")
        for env in self.ahead.session.ws.environments:
            table.add_column(env.upper(), key=f"env:{env}")
        table.focus()
        self.watch(self.app, "theme", lambda _: self._rebuild(), init=False)
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self.set_status(f"loading {len(self.ahead.session.ws.repos)} repos…")
        self._load_all()

    @work(
        exclusive=True, group="overview-load", name="overview-load", description="load the overview"
    )
    async def _load_all(self) -> None:
        # A small workspace loads in one pass. A large one shows what the store and ref files
        # say first (fast), then fills pending counts in chunks while the operator reads it.
        table = self.query_one("#overview", DataTable)
        large = len(self.ahead.session.ws.repos) > PENDING_CHUNK
        views = await self.ahead.session.overview(pending=not large)
        self._views = {v.name: v for v in views}
        self._gates = await self._read_gates()
        table.loading = False
        self._rebuild()
        if self.focused is None:
            table.focus()
        if not large:
            return
        names = [v.name for v in views]
        for start in range(0, len(names), PENDING_CHUNK):
            chunk = names[start : start + PENDING_CHUNK]
            self.set_status(f"counting pending commits… {start}/{len(names)} repos")
            for view in await self.ahead.session.overview(only=chunk):
                self._views[view.name] = view
            if self._sort == "name" and not self._filter:
                self._update_rows(chunk, filling=True)
        self._rebuild()  # order and column widths from the complete data

    async def _read_gates(self) -> Gates:
        changes = await self.ahead.session.changes()  # newest first: the newest per cell wins
        return {(c["repo"], c["environment"]): c for c in reversed(changes)}

    def on_events(self, batch: EventBatch) -> None:
        gates = any(kind.startswith("change.") for kind in batch.kinds())
        if gates or batch.kinds() & REFRESH_KINDS:
            self._gates_dirty |= gates
            self._dirty |= {r for r in batch.repos() if r in self._views}
            if self._dirty:
                self._refresh_dirty()

    @work(
        exclusive=True,
        group="overview-refresh",
        name="overview-refresh",
        description="refresh changed repos",
    )
    async def _refresh_dirty(self) -> None:
        names, self._dirty = sorted(self._dirty), set()
        if self._gates_dirty:
            self._gates_dirty = False
            before = {repo for repo, _ in self._gates}
            self._gates = await self._read_gates()
            names = sorted(set(names) | before | {repo for repo, _ in self._gates})
        for view in await self.ahead.session.overview(only=names):
            self._views[view.name] = view
        if self._sort == "name" and not self._filter:
            self._update_rows(names)
        else:
            self._rebuild()

    # -- rendering ----------------------------------------------------------------------------------

    def _visible(self) -> list[RepoView]:
        needle = self._filter.lower()
        views = [
            v
            for v in self._views.values()
            if not needle
            or needle in v.name.lower()
            or (v.last_run is not None and needle in v.last_run.status)
        ]
        if self._sort == "lag":
            views.sort(key=lambda v: (-max_lag(v), v.name))
        elif self._sort == "state":
            views.sort(
                key=lambda v: (
                    STATE_ORDER.get(v.last_run.status if v.last_run else None, 9),
                    v.name,
                )
            )
        else:
            views.sort(key=lambda v: v.name)
        return views

    def _row(self, view: RepoView) -> list[Text]:
        palette = self.app.theme_variables
        head = Text(render.short(view.head), style=palette.get("primary", ""))
        if view.error:
            head = Text("error", style=palette.get("run-failed", ""))
        wide = self.size.width >= 120
        return [
            render.plain(view.name),
            head,
            stage_strip(view, palette),
            *(
                env_cell(c, palette, wide, self._gates.get((view.name, c.environment)))
                for c in view.cells
            ),
        ]

    def _rebuild(self) -> None:
        table = self.query_one("#overview", DataTable)
        selected = self.selected_repo()
        table.clear()
        views = self._visible()
        self._order = [v.name for v in views]
        for view in views:
            table.add_row(*self._row(view), key=view.name)
        if selected in self._order:
            table.move_cursor(row=self._order.index(selected))
        self._update_status()

    def _update_rows(self, names: list[str], filling: bool = False) -> None:
        """Update rows in place. Outside the initial fill, a cell wider than its column makes a
        rebuild instead (rare: a first deployment, a gate opening)."""
        table = self.query_one("#overview", DataTable)
        keys = ["repo", "main", "last", *(f"env:{e}" for e in self.ahead.session.ws.environments)]
        rows = {name: self._row(self._views[name]) for name in names if name in self._order}
        if not filling:
            widths = {str(key.value): column.content_width for key, column in table.columns.items()}
            if any(
                cell.cell_len > widths.get(key, 0)
                for cells in rows.values()
                for key, cell in zip(keys, cells, strict=True)
            ):
                self._rebuild()
                return
        for name, cells in rows.items():
            for key, value in zip(keys, cells, strict=True):
                # update_width=True re-measures the whole column on every narrower cell
                # (quadratic over a 1,000-repo fill, bench/bench_console.py); the rebuild after
                # the fill and on sort/filter sizes the columns instead
                table.update_cell(name, key, value)
        self._update_status()

    def _update_status(self) -> None:
        selected = self.selected_repo()
        if selected is not None and selected in self._views:
            self.set_status(self._detail(self._views[selected]))
            return
        self.set_status(self._summary())

    def _detail(self, view: RepoView) -> str:
        """The selected repo in words: what the narrow table cannot show."""
        parts = []
        if self._filter:
            parts.append(f"filter: {self._filter} ({len(self._order)} of {len(self._views)})")
        if self._sort != "name":
            parts.append(f"sorted by {self._sort}")
        parts.append(view.name)
        behind = [
            f"{c.environment} +{c.pending} ({render.age(lag(c))})" for c in view.cells if c.pending
        ]
        parts.append(
            "behind: " + ", ".join(behind) if behind else "every environment is up to date"
        )
        for env in self.ahead.session.ws.environments:
            gate = self._gates.get((view.name, env))
            if gate is not None:
                have, need = checklist.approvals(gate)
                still = checklist.may_still_approve(gate)
                parts.append(
                    f"{env} waits for approval: change #{gate['id']} {have} of {need}"
                    + (f", may approve: {', '.join(still)}" if still else "")
                    + " (a: Changes)"
                )
        drifts = [
            f"{c.environment} {render.drift(c.drift, c.drift_acked, {}).plain}"
            for c in view.cells
            if c.drift in ("drifted", "unknown")
        ]
        if drifts:
            parts.append("drift: " + ", ".join(drifts) + " (d: Drift)")
        if view.last_run is not None:
            run = view.last_run
            parts.append(f"last run #{run.id} {run.status} on {render.plain(run.branch).plain}")
        if view.error:
            parts.append(render.plain(view.error).plain)
        return " · ".join(parts)

    def _summary(self) -> str:
        views = list(self._views.values())
        failing = sum(
            1 for v in views if v.last_run and v.last_run.status in ("failed", "interrupted")
        )
        active = sum(
            1 for v in views if v.last_run and v.last_run.status in ("running", "queued", "waiting")
        )
        pending = sum(1 for v in views for c in v.cells if c.pending)
        parts = []
        if self._filter:
            parts.append(f"filter: {self._filter} ({len(self._order)} of {len(views)})")
        parts += [
            f"{len(views)} repos",
            f"{active} active",
            f"{failing} failing",
            f"{pending} env(s) behind main",
        ]
        if self._gates:
            parts.append(f"{len(self._gates)} waiting for approval (a)")
        drifted = sum(
            1 for v in views for c in v.cells if c.drift == "drifted" and not c.drift_acked
        )
        if drifted:
            parts.append(f"{drifted} env(s) drifted (d)")
        parts.append(f"sorted by {self._sort}")
        return " · ".join(parts)

    def selected_repo(self) -> str | None:
        table = self.query_one("#overview", DataTable)
        if not self._order or table.cursor_row < 0 or table.cursor_row >= len(self._order):
            return None
        return self._order[table.cursor_row]

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("open", "trigger"):
            return self.selected_repo() is not None or None
        if action == "last_run":
            repo = self.selected_repo()
            return (repo is not None and self._views[repo].last_run is not None) or None
        return True

    @on(DataTable.RowHighlighted, "#overview")
    def _highlighted(self) -> None:
        # Refreshing bindings remounts the footer's keys: only when what they depend on changed.
        state = (self.check_action("open", ()), self.check_action("last_run", ()))
        if state != self._binding_state:
            self._binding_state = state
            self.refresh_bindings()
        self._update_status()

    @on(DataTable.RowSelected, "#overview")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        repo = self.selected_repo()
        if repo:
            self.ahead.open_repo(repo)

    def action_last_run(self) -> None:
        repo = self.selected_repo()
        if repo and self._views[repo].last_run is not None:
            run = self._views[repo].last_run
            assert run is not None
            self.ahead.open_run(run.id)

    def action_trigger(self) -> None:
        repo = self.selected_repo()
        if repo is None:
            return
        view = self._views[repo]
        targets = [c.environment for c in view.cells if c.deploys]

        def answered(yes: bool | None) -> None:
            if yes:
                self._trigger(repo)

        self.app.push_screen(
            ConfirmScreen(
                f"Run {repo} at the head of {view.branch} ({render.short(view.head)})?",
                "Main runs every stage it is configured for, deploys included"
                + (f" (to {', '.join(targets)})." if targets else "."),
                confirm="Trigger",
            ),
            answered,
        )

    @work(group="commands", name="trigger", description="trigger a run")
    async def _trigger(self, repo: str) -> None:
        run_id = await self.ahead.session.trigger(repo)
        self.notify(f"queued run #{run_id} of {repo} (head of main)", title="Triggered")

    def action_sort(self) -> None:
        self._sort = SORTS[(SORTS.index(self._sort) + 1) % len(SORTS)]
        self._rebuild()

    def filter_changed(self) -> None:
        self._rebuild()
