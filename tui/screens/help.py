"""Help: every key of the screen underneath, generated from its declared commands and the
bindings active right now (so remapped keys show as remapped, unavailable ones dimmed)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

from tui.commands import Command
from tui.widgets.table import Table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", id="help_close", tooltip="Close help")
    ]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                f"Keys · {type(self.under).__name__.removesuffix('Screen')}",
                classes="dialog-title",
                markup=False,
            )
            yield Table(id="help-table", cursor_type="row", show_header=True)
            yield Static(
                "ctrl+p opens the command palette: every command, and a jump to any repo "
                "or run. Remap keys by command id in ~/.config/change-ahead/config.yml "
                "(keymap: {trigger: ctrl+t}).",
                markup=False,
            )

    def rows(self) -> list[tuple[str, str, str, bool]]:
        """(key, command, what it does, available now) for the screen underneath."""
        active = self.under.active_bindings
        by_id = {a.binding.id: key for key, a in active.items() if a.binding.id}
        rows: list[tuple[str, str, str, bool]] = []
        seen: set[str] = set()
        commands: list[Command] = [
            *getattr(self.under, "COMMAND_LIST", ()),
            *getattr(self.app, "COMMAND_LIST", ()),
        ]
        for command in commands:
            if command.id in seen:
                continue
            seen.add(command.id)
            key = by_id.get(command.id, command.key)
            target = self.app if command.action.startswith("app.") else self.under
            enabled = target.check_action(command.action.removeprefix("app."), ()) is True
            shadow = active.get(key) if command.id not in by_id else None
            if shadow is not None and shadow.node is self.under and target is self.app:
                # an app command whose key this screen uses for something else
                rows.append(
                    (
                        "^p",
                        command.label,
                        f"{command.help} (from the palette: "
                        f"{self._display(key)} is {shadow.binding.description} here)",
                        enabled,
                    )
                )
                continue
            rows.append((self._display(key), command.label, command.help, enabled))
        for key, binding_state in active.items():
            binding = binding_state.binding
            node = binding_state.node
            if node is self.under or node is self.app or binding.system or not binding.description:
                continue
            if key in ("up", "down", "pageup", "pagedown", "home", "end", "tab", "shift+tab"):
                rows.append((self._display(key), binding.description, "", binding_state.enabled))
        return rows

    def _display(self, key: str) -> str:
        return self.app.get_key_display(Binding(key, ""))

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("KEY", "COMMAND", "WHAT IT DOES")
        for key, label, text, enabled in self.rows():
            style = "" if enabled else "dim"
            table.add_row(
                Text(key, style=style),
                Text(label, style=style),
                Text(("not now: " if not enabled else "") + text, style=style),
            )
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
