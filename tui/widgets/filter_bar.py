"""A text box that appears on `/` and hides on `esc`; never focusable while hidden."""

from __future__ import annotations

from textual.widgets import Input


class FilterBar(Input):
    """Hidden (and disabled, so focus and keys never land in it) until `show()`."""

    def __init__(self, placeholder: str, *, id: str) -> None:
        super().__init__(placeholder=placeholder, id=id, classes="filter-bar", disabled=True)

    @property
    def shown(self) -> bool:
        return self.has_class("-visible")

    def show(self) -> None:
        self.disabled = False
        self.add_class("-visible")
        self.focus()

    def hide(self, clear: bool = True) -> None:
        if clear:
            self.value = ""
        self.remove_class("-visible")
        self.disabled = True
