"""Drift detail: one target's finding, what differs, and its checks.

The header says the state, the summary, when the drift was first and last seen and who
acknowledged it until when. The body depends on the kind: files (the live directory; added,
removed, changed and unreadable paths; the unified diff with + and - lines coloured), command
(exit code, the resources or tasks that would change, the output), revision (main against the
deployed commit). Then the history of checks, newest first. Every path, diff line and output
line comes from outside (the live host, the command) and is rendered inert.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from core.api.views import DriftDetail, DriftView
from tui import render
from tui.commands import ACKNOWLEDGE, BACK, CHECK, DOWN, HELP, QUIT, RECONCILE, UP, bindings
from tui.messages import EventBatch
from tui.screens import drift_actions
from tui.screens.base import AheadScreen

LISTS = ("changed", "added", "removed", "unreadable")
DIFF_LINES = 5000  # lines of diff drawn (the engine caps the text at 256 KB)


def diff_text(diff: str, palette: dict[str, str]) -> Text:
    """A unified diff, inert, with added lines green, removed red and hunk headers muted."""
    text = Text()
    lines = diff.splitlines()
    for line in lines[:DIFF_LINES]:
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = palette.get("run-ok", "")
        elif line.startswith("-"):
            style = palette.get("run-failed", "")
        elif line.startswith("@@"):
            style = palette.get("primary", "")
        else:
            style = ""
        text.append_text(render.plain(line, style=style))
        text.append("\n")
    if len(lines) > DIFF_LINES:
        text.append(
            f"… {len(lines) - DIFF_LINES} more lines (ahead drift show)",
            style=palette.get("muted", ""),
        )
    return text


class DriftDetailScreen(AheadScreen):
    COMMAND_LIST = (CHECK, ACKNOWLEDGE, RECONCILE, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(CHECK, ACKNOWLEDGE, RECONCILE, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | c | Check this target now |
    | A | Acknowledge the drift (a reason and a duration) |
    | R | Reconcile: re-deploy the deployed commit through the pipeline (asks first) |
    | j / k | Scroll down / up (pgup / pgdn a page) |
    | esc | Back |
    """

    AUTO_FOCUS = "#drift-body"

    def __init__(self, repo: str, environment: str, target: str) -> None:
        super().__init__()
        self.repo = repo
        self.environment = environment
        self.target = target
        self.detail: DriftDetail | None = None
        self.checking = False

    def body(self) -> ComposeResult:
        yield Static("", id="drift-header")
        with VerticalScroll(id="drift-body"):
            yield Static("", id="drift-what")
            yield Static("checks", classes="section-title", markup=False)
            yield Static("", id="drift-history")

    def on_mount(self) -> None:
        self.query_one("#drift-body", VerticalScroll).loading = True
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load()

    @work(
        exclusive=True,
        group="drift-detail-load",
        name="drift-detail-load",
        description="load a drift target",
    )
    async def _load(self) -> None:
        self.detail = await self.ahead.session.drift_detail(
            self.repo, self.environment, self.target
        )
        self.query_one("#drift-body", VerticalScroll).loading = False
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if any(
            e.kind in ("drift.checked", "drift.acknowledged")
            and e.repo == self.repo
            and e.data.get("environment") == self.environment
            for e in batch.events
        ):
            self._load()

    # -- rendering ----------------------------------------------------------------------------------

    def _draw(self) -> None:
        if self.detail is None:
            return
        view, detail = self.detail.view, self.detail.detail
        self.query_one("#drift-header", Static).update(self._header(view))
        if "error" in detail:
            what: RenderableType = render.plain(
                detail["error"],
                style=self.app.theme_variables.get("run-failed", ""),
                single_line=False,
            )
        elif view.kind == "files":
            what = self._files(detail)
        elif view.kind == "command":
            what = self._command(detail)
        else:
            what = self._revision(detail)
        self.query_one("#drift-what", Static).update(what)
        self.query_one("#drift-history", Static).update(self._history())
        self.set_status(self._status(view))
        self.refresh_bindings()

    def _header(self, view: DriftView) -> Text:
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        text = Text()
        text.append_text(render.plain(f"{view.repo} → {view.environment}", style="bold"))
        text.append(" · ")
        text.append_text(render.plain(view.target))
        text.append(f" ({view.kind})  ", style=muted)
        text.append_text(
            Text("⟳ checking…", style=palette.get("run-active", ""))
            if self.checking
            else render.drift(view.state, view.acknowledged, palette)
        )
        text.append("\n")
        text.append_text(render.plain(view.summary))
        text.append(f" · against {render.short(view.commit)}", style=palette.get("primary", ""))
        first = "first seen" if view.state != "in_sync" else "in sync since"
        text.append(
            f" · {first} {render.ago(view.since)} ago · last seen {render.ago(view.checked_at)} ago",
            style=muted,
        )
        text.append("\n")
        if view.acknowledged:
            text.append(f"≈ acknowledged by {view.ack_by}", style=palette.get("drift-acked", ""))
            left = render.until(view.ack_until)
            text.append(f" for {left} more: " if left else ": ", style=muted)
            text.append_text(render.plain(view.ack_reason or ""))
        elif view.state == "drifted":
            text.append(
                "not acknowledged · A acknowledge · R reconcile · c check now",
                style=palette.get("drift", ""),
            )
        else:
            text.append("c checks now", style=muted)
        return text

    def _status(self, view: DriftView) -> str:
        checks = self.detail.history if self.detail else ()
        return (
            f"{view.repo}/{view.environment} {view.target} · {len(checks)} check(s) kept · "
            "j/k scroll · esc back"
        )

    def _files(self, detail: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        parts: list[RenderableType] = []
        head = Text("live ", style=muted)
        head.append_text(render.plain(str(detail.get("live", ""))))
        head.append(" against ", style=muted)
        head.append_text(render.plain(str(detail.get("path", ""))))
        head.append(" in git", style=muted)
        parts.append(head)
        counts = detail.get("counts", {})
        marks = {
            "changed": ("~", "drift"),
            "added": ("+", "run-ok"),
            "removed": ("-", "run-failed"),
            "unreadable": ("?", "drift-unknown"),
        }
        for name in LISTS:
            paths = detail.get(name) or []
            if not paths:
                continue
            total = counts.get(name, len(paths))
            parts.append(Text(f"\n{name} ({total})", style="bold"))
            mark, var = marks[name]
            for path in paths:
                line = Text(f"  {mark} ", style=palette.get(var, ""))
                line.append_text(render.plain(path))
                parts.append(line)
            if total > len(paths):
                parts.append(Text(f"  … {total - len(paths)} more", style=muted))
        if not any(detail.get(name) for name in LISTS):
            parts.append(Text("\nno differences", style=muted))
        if detail.get("diff"):
            parts.append(Text("\ndiff", style="bold"))
            parts.append(diff_text(detail["diff"], palette))
        return Group(*parts)

    def _command(self, detail: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        code = detail.get("exit_code")
        head = Text(
            f"exit code {code if code is not None else '(none: did not finish)'}", style="bold"
        )
        if detail.get("parse"):
            head.append(f" · parsed as {detail['parse']}", style=muted)
        parts: list[RenderableType] = [head]
        items = detail.get("items") or []
        if items:
            parts.append(Text(f"\nwould change ({len(items)})", style="bold"))
            parts += [
                Text("  ~ ", style=palette.get("drift", "")) + render.plain(item) for item in items
            ]
        parts.append(Text("\noutput", style="bold"))
        parts.append(render.plain(detail.get("output") or "(no output)", single_line=False))
        return Group(*parts)

    def _revision(self, detail: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style=palette.get("muted", ""), no_wrap=True)
        grid.add_column()
        grid.add_row(
            "main", Text(render.short(detail.get("main")), style=palette.get("primary", ""))
        )
        grid.add_row(
            "deployed",
            Text(render.short(detail.get("deployed")) if detail.get("deployed") else "never"),
        )
        pending = detail.get("pending")
        grid.add_row("pending", Text("—" if pending is None else f"{pending} commit(s)"))
        if detail.get("oldest_pending_at"):
            grid.add_row("oldest", Text(f"waiting {render.ago(detail['oldest_pending_at'])}"))
        return grid

    def _history(self) -> RenderableType:
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        if self.detail is None or not self.detail.history:
            return Text("none", style=muted)
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(no_wrap=True, max_width=24, overflow="ellipsis")
        for check in self.detail.history:
            grid.add_row(
                render.drift(check.state, False, palette),
                Text(f"{render.ago(check.finished_at)} ago", style=muted),
                Text(render.took(check.started_at, check.finished_at), style=muted),
                render.plain(check.summary),
                render.plain(check.reason, style=muted),
            )
        return grid

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self.detail.view if self.detail else None
        if action == "check":
            return (view is not None and not self.checking) or None
        if action == "acknowledge":
            return (view is not None and view.state == "drifted") or None
        if action == "reconcile":
            return (
                view is not None and view.kind != "revision" and view.state != "in_sync"
            ) or None
        return True

    def action_check(self) -> None:
        if self.detail is None or self.checking:
            return
        self.checking = True
        self._draw()
        self.run_worker(
            self._check(),
            group="drift-check",
            name="drift-check",
            description=f"check drift of {self.repo}/{self.environment} {self.target}",
        )

    async def _check(self) -> None:
        try:
            found = await self.ahead.session.drift_check(self.repo, self.environment, self.target)
        finally:
            self.checking = False
            self._load()
        self.notify(drift_actions.check_summary(found), title="Checked", markup=False)

    def action_acknowledge(self) -> None:
        if self.detail is not None:
            drift_actions.acknowledge(self, self.detail.view, self._load)

    def action_reconcile(self) -> None:
        if self.detail is not None:
            drift_actions.reconcile(self, self.detail.view, self._load)

    def action_cursor_down(self) -> None:
        self.query_one("#drift-body", VerticalScroll).scroll_down(animate=False)

    def action_cursor_up(self) -> None:
        self.query_one("#drift-body", VerticalScroll).scroll_up(animate=False)
