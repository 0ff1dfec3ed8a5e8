"""Audit: the newest entries of the hash-chained audit log, and whether the chain holds.

The verdict of `verify_audit()` stands on top, where nobody can miss it: `✓ intact` with the
number of entries checked, or `✗ BROKEN` naming the first bad entry (marked in the list too,
with the entries after it shown as unverified). Each entry's detail is JSON written by the
engine from values that may come from outside (commit subjects, comments), so it is shown
compactly and inert. Refreshes on engine events (every audited action publishes one) and on `v`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui import render
from tui.commands import BACK, DOWN, FILTER, HELP, QUIT, UP, VERIFY, bindings
from tui.messages import EventBatch
from tui.screens.base import FilteredListScreen
from tui.widgets.filter_bar import FilterBar
from tui.widgets.table import Table

SHA = re.compile(r"^[0-9a-f]{40}$")
BAD_ENTRY = re.compile(r"^entry (\d+)\b")
LIMIT = 500


def compact(detail: str) -> str:
    """An entry's JSON detail as `key=value` words, shas shortened; the raw text if not JSON."""
    try:
        data = json.loads(detail)
    except ValueError:
        return detail
    if not isinstance(data, dict):
        return detail

    def value(v: Any) -> str:
        if isinstance(v, str):
            return v[:7] if SHA.match(v) else v
        if isinstance(v, list):
            return ",".join(value(x) for x in v)
        if v is None:
            return "-"
        return json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in data.items())


def cut(text: str, width: int, style: str = "") -> Text:
    """Untrusted text for a table cell, at most `width` cells (the entry pane shows it whole)."""
    cell = render.plain(text, style=style)
    cell.truncate(width, overflow="ellipsis")
    return cell


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class AuditScreen(FilteredListScreen):
    LIST_ID = "audit"
    COMMAND_LIST = (VERIFY, FILTER, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(VERIFY, FILTER, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | v | Check the hash chain again now |
    | / | Filter by actor, action, subject or detail |
    | j / k | Down / up |
    | esc | Clear the filter, then back |
    """

    def __init__(self) -> None:
        super().__init__()
        self._entries: list[dict[str, Any]] = []
        self._shown: list[dict[str, Any]] = []
        self._verdict: tuple[bool, int, str] | None = None
        self._filter = ""

    def body(self) -> ComposeResult:
        yield Static(
            "checking the audit chain…", id="audit-verdict", classes="-checking", markup=False
        )
        yield FilterBar("actor, action, subject or detail text", id="filter")
        yield Table(id="audit", cursor_type="row")
        yield Static("", id="audit-entry")

    def on_mount(self) -> None:
        table = self.query_one("#audit", DataTable)
        table.add_columns("ID", "AGE", "ACTOR", "ACTION", "SUBJECT", "DETAIL", "SESSION")
        table.focus()
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load(verify=True)

    @work(
        exclusive=True,
        group="audit-load",
        name="audit-load",
        description="read and verify the audit log",
    )
    async def _load(self, verify: bool) -> None:
        # Verifying reads the whole chain: on opening, on `v`, and when new entries arrived,
        # not on every event of a busy engine.
        session = self.ahead.session
        newest = self._entries[0]["id"] if self._entries else None
        self._entries = list(await session.audit(limit=LIMIT))
        if verify or self._verdict is None or (self._entries and self._entries[0]["id"] != newest):
            self._verdict = await session.verify_audit()
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if batch.kinds() - {"log"}:
            self._load(verify=False)

    def bad_entry(self) -> int | None:
        """The id of the first entry that breaks the chain, if it is broken."""
        if self._verdict is None or self._verdict[0]:
            return None
        found = BAD_ENTRY.match(self._verdict[2])
        return int(found.group(1)) if found else None

    # -- rendering ----------------------------------------------------------------------------------

    def _draw(self) -> None:
        self._draw_verdict()
        table = self.query_one("#audit", DataTable)
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        bad = self.bad_entry()
        selected = self.selected_entry()
        needle = self._filter.lower()
        self._shown = [
            e
            for e in self._entries
            if not needle
            or needle
            in " ".join(
                str(e[k]) for k in ("actor", "action", "subject", "detail", "session")
            ).lower()
        ]
        table.clear()
        for entry in self._shown:
            ident = Text(f"{entry['id']}")
            if bad is not None and entry["id"] == bad:
                ident = Text(f"✗ {entry['id']}", style=f"bold {palette.get('run-failed', '')}")
            elif bad is not None and entry["id"] > bad:
                ident = Text(f"? {entry['id']}", style=muted)
            table.add_row(
                ident,
                Text(render.ago(entry["ts"]), style=muted),
                cut(entry["actor"], 22),
                Text(entry["action"], style=self._action_style(entry["action"])),
                cut(entry["subject"], 24),
                cut(compact(entry["detail"]), 90),
                cut(entry["session"], 24, style=muted),
                key=str(entry["id"]),
            )
        ids = [e["id"] for e in self._shown]
        if selected is not None and selected["id"] in ids:
            table.move_cursor(row=ids.index(selected["id"]))
        self._describe()

    def _action_style(self, action: str) -> str:
        palette = self.app.theme_variables
        if action.endswith(".refused") or action in (
            "change.rejected",
            "change.voided",
            "change.expired",
        ):
            return palette.get("run-failed", "")
        if action.startswith(("change.approve", "gate.passed", "deploy")):
            return palette.get("run-ok", "")
        if action.startswith(("gate.", "change.")):
            return palette.get("approval-pending", "")
        return ""

    def _draw_verdict(self) -> None:
        widget = self.query_one("#audit-verdict", Static)
        widget.remove_class("-checking", "-ok", "-broken")
        if self._verdict is None:
            widget.add_class("-checking")
            widget.update("checking the audit chain…")
            return
        ok, count, problem = self._verdict
        if ok:
            widget.add_class("-ok")
            widget.update(f"✓ audit chain intact: {count} entries verified")
        else:
            widget.add_class("-broken")
            widget.update(
                render.plain(
                    f"✗ audit chain BROKEN at {problem} (checked {count}; later entries unverified)"
                )
            )

    def _describe(self) -> None:
        entry = self.selected_entry()
        pane = self.query_one("#audit-entry", Static)
        if entry is None:
            pane.update("")
            scope = (
                f" · filter: {self._filter} ({len(self._shown)} of {len(self._entries)})"
                if self._filter
                else ""
            )
            self.set_status(f"newest {len(self._entries)} entries{scope}")
            return
        text = Text()
        text.append(f"#{entry['id']} {entry['action']} ", style="bold")
        text.append_text(render.plain(entry["subject"], style="bold"))
        text.append(f" · {stamp(entry['ts'])} · ")
        text.append_text(render.plain(entry["actor"]))
        text.append(" via ")
        text.append_text(render.plain(entry["session"]))
        text.append("\n")
        text.append_text(
            render.plain(
                entry["detail"], wrap=True, style=self.app.theme_variables.get("muted", "")
            )
        )
        pane.update(text)
        self.set_status(
            f"entry {entry['id']} · hash {entry['hash'][:12]} · follows {entry['prev_hash'][:12]}"
            + (f" · filter: {self._filter}" if self._filter else "")
        )

    def selected_entry(self) -> dict[str, Any] | None:
        row = self.query_one("#audit", DataTable).cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) else None

    # -- actions ------------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#audit")
    def _moved(self) -> None:
        self._describe()

    def action_verify(self) -> None:
        self._verdict = None
        self._draw_verdict()
        self._load(verify=True)

    def filter_changed(self) -> None:
        self._draw()
