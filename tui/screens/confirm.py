"""A yes/no question before anything destructive."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True (confirmed) or False. `y` confirms, `n` or `esc` declines."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes", tooltip="Confirm"),
        Binding(
            "n,escape", "answer(False)", "No", id="confirm_no", tooltip="Keep things as they are"
        ),
    ]

    def __init__(
        self, question: str, detail: str = "", confirm: str = "Yes", destructive: bool = False
    ) -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.confirm = confirm
        self.destructive = destructive

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, classes="dialog-title", markup=False)
            if self.detail:
                yield Static(self.detail, markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("No (n)", id="no")
                yield Button(
                    f"{self.confirm} (y)",
                    id="yes",
                    variant="error" if self.destructive else "primary",
                )

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
