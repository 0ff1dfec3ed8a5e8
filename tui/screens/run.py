"""Run: the stages as a strip, the steps of the selected stage, and the live log of the
selected step (following the tail, with search). Cancel and retry from here.

The log pane is Textual's `Log` (measured ~200k lines/s against RichLog's ~4.5k); lines come
from the store in chunks of at most 5,000, written a chunk per frame so keys keep answering,
and only the last 50,000 lines stay on screen (the full log stays in the store).
"""

from __future__ import annotations

import re
import time

from rich.highlighter import Highlighter
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Input, Log, Static

from core import states
from core.api.views import RunDetail, StepView
from core.text import inert
from tui import render
from tui.commands import (
    BACK,
    CANCEL,
    DOWN,
    FILTER,
    FOLLOW,
    HELP,
    NEXT_MATCH,
    NEXT_STAGE,
    PREV_MATCH,
    PREV_STAGE,
    QUIT,
    RETRY,
    RUNS,
    UP,
    Command,
    bindings,
)
from tui.messages import EventBatch
from tui.screens.base import AheadScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.filter_bar import FilterBar
from tui.widgets.stage_strip import StageStrip
from tui.widgets.table import Table

SEARCH = Command(FILTER.id, FILTER.key, "search", "Search", "Search the log")
ACTIVE = states.UNFINISHED
MAX_LOG_LINES = 50_000
LOG_READS_PER_SECOND = 4
CHUNK = 5_000


class SearchHighlighter(Highlighter):
    """Marks every match of the search term in a log line."""

    def __init__(self, term: str) -> None:
        self.pattern = re.compile(re.escape(term), re.IGNORECASE) if term else None

    def highlight(self, text: Text) -> None:
        if self.pattern is None:
            return
        for match in self.pattern.finditer(text.plain):
            text.stylize("reverse bold", match.start(), match.end())


class RunScreen(AheadScreen):
    COMMAND_LIST = (
        CANCEL,
        RETRY,
        FOLLOW,
        SEARCH,
        NEXT_MATCH,
        PREV_MATCH,
        PREV_STAGE,
        NEXT_STAGE,
        DOWN,
        UP,
        BACK,
        RUNS,
        HELP,
        QUIT,
    )
    BINDINGS = bindings(
        CANCEL,
        RETRY,
        FOLLOW,
        SEARCH,
        NEXT_MATCH,
        PREV_MATCH,
        PREV_STAGE,
        NEXT_STAGE,
        DOWN,
        UP,
        BACK,
    )
    """
    | Key | Action |
    | :- | :- |
    | c | Cancel the run (asks first) |
    | R | Retry the run |
    | f | Follow the log tail on / off |
    | / | Search the log; n / N next / previous match |
    | h / l | Previous / next stage |
    | j / k | Previous / next step |
    | esc | Back |
    """

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.detail: RunDetail | None = None
        self._stage_index = 0
        self._stage_chosen = False
        self._step_id: int | None = None
        self._step_chosen = False
        self._log_seq = -1
        self._follow = True
        self._term = ""
        self._matches: list[int] = []
        self._match_index = -1
        self._log_read_at = 0.0  # monotonic time of the last read of new log lines
        self._log_timer: Timer | None = None

    def body(self) -> ComposeResult:
        yield Static("", id="run-header", markup=False)
        yield StageStrip(id="stages")
        with Horizontal(id="run-body"):
            yield Table(id="steps", cursor_type="row", show_header=False)
            with Vertical(id="log-pane"):
                yield FilterBar("search the log (enter: next match, esc: close)", id="search")
                yield Log(id="log", max_lines=MAX_LOG_LINES, auto_scroll=True)
                yield Static("", id="log-status", markup=False)

    def on_mount(self) -> None:
        steps = self.query_one("#steps", DataTable)
        steps.add_column("", key="state")
        steps.add_column("", key="name")
        steps.add_column("", key="took")
        steps.focus()
        super().on_mount()

    # -- data -------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load_detail()

    @work(exclusive=True, group="run-detail", name="run-detail", description="load the run")
    async def _load_detail(self) -> None:
        self.detail = await self.ahead.session.run(self.run_id)
        self._render_detail()

    def on_events(self, batch: EventBatch) -> None:
        mine = [e for e in batch.events if e.run_id == self.run_id]
        if not mine:
            return
        if any(e.kind != "log" for e in mine):
            self._load_detail()
        if self._step_id is not None and any(
            e.kind == "log" and e.data.get("step_id") == self._step_id for e in mine
        ):
            self._log_soon()

    def _log_soon(self) -> None:
        """New lines at most LOG_READS_PER_SECOND times a second: each read relays out and
        repaints the log, and at 10 a second a console following a chatty step cost a fifth of
        a core (measured: 50 lines/s); at 4 it costs under half of that, and the log still moves."""
        if self._log_timer is not None:
            return
        wait = self._log_read_at + 1 / LOG_READS_PER_SECOND - time.monotonic()
        if wait <= 0:
            self._log_read_at = time.monotonic()
            self._load_log_tail()
            return

        def due() -> None:
            self._log_timer = None
            self._log_read_at = time.monotonic()
            self._load_log_tail()

        self._log_timer = self.set_timer(wait, due)

    def _current_stage_index(self, detail: RunDetail) -> int:
        stages = detail.run.stages
        for wanted in (("running", "waiting"), ("failed", "interrupted", "cancelled")):
            for index, stage in enumerate(stages):
                if stage.status in wanted:
                    return index
        done = [i for i, s in enumerate(stages) if s.status not in ("skipped", "queued")]
        return done[-1] if done else 0

    def _render_detail(self) -> None:
        detail = self.detail
        if detail is None:
            return
        run = detail.run
        palette = self.app.theme_variables
        header = Text()
        header.append(f"run #{run.id} ", style="bold")
        header.append_text(render.state(run.status, palette))
        header.append(f"  {run.repo}  ")
        header.append_text(render.plain(run.branch))
        header.append(f"  {render.short(run.commit)}  ", style=palette.get("primary", ""))
        header.append(render.took(run.started_at, run.finished_at))
        header.append("\n")
        header.append_text(render.plain(run.subject))
        header.append(" — ", style=palette.get("muted", ""))
        header.append_text(render.plain(run.author, style=palette.get("muted", "")))
        header.append(f"   {run.trigger} by ", style=palette.get("muted", ""))
        header.append_text(render.plain(run.actor, style=palette.get("muted", "")))
        if run.error:
            header.append("\n")
            header.append_text(render.plain(run.error, style=palette.get("run-failed", "")))
        self.query_one("#run-header", Static).update(header)
        if not self._stage_chosen:
            self._stage_index = self._current_stage_index(detail)
        self._stage_index = min(self._stage_index, max(len(run.stages) - 1, 0))
        strip = self.query_one(StageStrip)
        strip.set_stages(run.stages)
        strip.selected = self._stage_index
        self._render_steps()
        self.refresh_bindings()

    def _stage_steps(self) -> list[StepView]:
        if self.detail is None or not self.detail.run.stages:
            return []
        stage = self.detail.run.stages[self._stage_index]
        return [s for s in self.detail.steps if s.stage_id == stage.id]

    def _render_steps(self) -> None:
        table = self.query_one("#steps", DataTable)
        palette = self.app.theme_variables
        steps = self._stage_steps()
        keep = table.cursor_row
        table.clear()
        for step in steps:
            table.add_row(
                render.state(step.status, palette, label=False),
                render.plain(step.name),
                Text(
                    render.took(step.started_at, step.finished_at), style=palette.get("muted", "")
                ),
                key=str(step.id),
            )
        if not steps:
            self._show_step(None)
            return
        if not self._step_chosen or self._step_id not in {s.id for s in steps}:
            active = [
                i
                for i, s in enumerate(steps)
                if s.status in ("running", "failed", "interrupted", "cancelled")
            ]
            started = [i for i, s in enumerate(steps) if s.started_at is not None]
            keep = active[0] if active else (started[-1] if started else 0)
        else:
            keep = [s.id for s in steps].index(self._step_id)
        table.move_cursor(row=keep)
        self._show_step(steps[keep])

    def _show_step(self, step: StepView | None) -> None:
        new_id = step.id if step else None
        if new_id == self._step_id:
            self._update_log_status()
            return
        self._step_id = new_id
        self._log_seq = -1
        self._matches, self._match_index = [], -1
        self.query_one("#log", Log).clear()
        if new_id is not None:
            self._load_log_tail()
        self._update_log_status()

    @work(exclusive=True, group="run-log", name="run-log", description="read the step's log")
    async def _load_log_tail(self) -> None:
        step_id = self._step_id
        if step_id is None:
            return
        log = self.query_one("#log", Log)
        if self._log_seq < 0:
            # A long log (or a flood): only the last MAX_LOG_LINES would stay on screen anyway,
            # so start there; the whole log stays in the store (`ahead logs RUN`).
            start = await self.ahead.session.step_log_start(step_id, MAX_LOG_LINES - 1)
            if start is not None:
                self._log_seq = start
                log.write_line(f"… earlier lines are in the store: ahead logs {self.run_id}")
        while True:
            seq, lines = await self.ahead.session.step_log_tail(step_id, self._log_seq, CHUNK)
            if step_id != self._step_id:
                return
            if not lines:
                break
            log.write_lines([inert(line) for line in lines], scroll_end=self._follow)
            self._log_seq = seq
            if self._term:
                self._find_matches()
            self._update_log_status()
            if len(lines) < CHUNK:
                break
            await self._yield_frame()
        if self._follow:  # again once laid out: a horizontal scrollbar may have taken the last row
            log.call_after_refresh(log.scroll_end, animate=False)

    async def _yield_frame(self) -> None:
        import asyncio

        await asyncio.sleep(1 / 60)  # one chunk per frame: keys keep answering during a flood

    def _update_log_status(self) -> None:
        step = self._selected_step()
        log = self.query_one("#log", Log)
        parts = []
        if step is not None:
            parts.append(
                step.status + (f" (exit {step.exit_code})" if step.exit_code is not None else "")
            )
            parts.append(f"{log.line_count} lines")
        parts.append("following" if self._follow else "paused (f to follow)")
        if self._term:
            found = len(self._matches)
            at = (
                f"{self._match_index + 1}/{found}"
                if found and self._match_index >= 0
                else f"{found}"
            )
            parts.append(f"search {self._term!r}: {at}")
        if step is not None:
            parts.append(inert(step.name))
        # one row, always: a repaint, not a layout of the whole screen (10 times a second while following)
        self.query_one("#log-status", Static).update(" · ".join(parts), layout=False)

    def _selected_step(self) -> StepView | None:
        if self.detail is None or self._step_id is None:
            return None
        return next((s for s in self.detail.steps if s.id == self._step_id), None)

    # -- selection ----------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#steps")
    def _step_highlighted(self, event: DataTable.RowHighlighted) -> None:
        steps = self._stage_steps()
        if 0 <= event.cursor_row < len(steps):
            chosen = steps[event.cursor_row]
            if chosen.id != self._step_id:
                self._step_chosen = True
                self._show_step(chosen)

    def action_prev_stage(self) -> None:
        self._move_stage(-1)

    def action_next_stage(self) -> None:
        self._move_stage(1)

    def _move_stage(self, delta: int) -> None:
        if self.detail is None or not self.detail.run.stages:
            return
        self._stage_index = (self._stage_index + delta) % len(self.detail.run.stages)
        self._stage_chosen = True
        self._step_chosen = False
        self.query_one(StageStrip).selected = self._stage_index
        self._render_steps()

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        status = self.detail.run.status if self.detail else None
        if action == "cancel":
            return status in ACTIVE or None
        if action == "retry":
            return (status is not None and status not in ACTIVE) or None
        if action in ("next_match", "prev_match"):
            return bool(self._matches) or None
        return True

    def action_cancel(self) -> None:
        if self.detail is None:
            return
        run = self.detail.run

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel()

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel run #{run.id} of {run.repo}?",
                "Running steps get SIGTERM, then SIGKILL after the grace period. This is audited.",
                confirm="Cancel run",
                destructive=True,
            ),
            answered,
        )

    @work(group="commands", name="cancel", description="cancel the run")
    async def _cancel(self) -> None:
        state = await self.ahead.session.cancel(self.run_id)
        self.notify(f"run #{self.run_id}: {state}", title="Cancel")

    @work(group="commands", name="retry", description="retry the run")
    async def action_retry(self) -> None:
        run_id = await self.ahead.session.retry(self.run_id)
        self.notify(f"queued run #{run_id} (retry of #{self.run_id})", title="Retry")
        self.app.switch_screen(RunScreen(run_id))

    def action_follow(self) -> None:
        self._follow = not self._follow
        log = self.query_one("#log", Log)
        log.auto_scroll = self._follow
        if self._follow:
            log.scroll_end(animate=False)
        self._update_log_status()

    def action_search(self) -> None:
        self.query_one("#search", FilterBar).show()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self._term = event.value
        log = self.query_one("#log", Log)
        log.highlighter = SearchHighlighter(self._term)
        log.highlight = bool(self._term)
        log._render_line_cache.clear()
        log.refresh()
        self._find_matches()
        self._match_index = -1
        self._update_log_status()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.action_next_match()

    def _find_matches(self) -> None:
        term = self._term.lower()
        lines = self.query_one("#log", Log).lines
        self._matches = [i for i, line in enumerate(lines) if term and term in line.lower()]
        self.refresh_bindings()

    def action_next_match(self) -> None:
        self._jump(1)

    def action_prev_match(self) -> None:
        self._jump(-1)

    def _jump(self, delta: int) -> None:
        if not self._matches:
            return
        self._match_index = (self._match_index + delta) % len(self._matches)
        if self._follow:
            self.action_follow()
        log = self.query_one("#log", Log)
        log.scroll_to(
            y=max(0, self._matches[self._match_index] - log.size.height // 2), animate=False
        )
        self._update_log_status()

    def action_back(self) -> None:
        bar = self.query_one("#search", FilterBar)
        if bar.shown:
            bar.hide(clear=False)
            self.query_one("#steps", DataTable).focus()
            return
        super().action_back()
