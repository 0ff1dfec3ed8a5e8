"""A run's stages as one line: glyph, name and duration per stage, the selected one marked."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from core.views import StageView
from tui import render


class StageStrip(Widget):
    """Stages in order, `✓ build 2s → ▶ test 4s → … deploy`; `selected` is underlined.

    Attributes down: the screen sets `stages` and `selected`; this widget only renders.
    """

    DEFAULT_CSS = """
    StageStrip { height: 1; }
    """

    selected: reactive[int] = reactive(0)
    """Index of the selected stage."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stages: tuple[StageView, ...] = ()

    def set_stages(self, stages: tuple[StageView, ...]) -> None:
        self.stages = stages
        self.refresh()

    def render(self) -> Text:
        palette = self.app.theme_variables
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, stage in enumerate(self.stages):
            if index:
                text.append(" → ", style=palette.get("muted", ""))
            style = render.colour(stage.status, palette)
            label = Text(f"{render.glyph(stage.status)} {stage.name}", style=style)
            if stage.environment:
                label.append(f"@{stage.environment}", style=palette.get("muted", ""))
            took = render.took(stage.started_at, stage.finished_at)
            if took:
                label.append(f" {took}", style=palette.get("muted", ""))
            if index == self.selected:
                label.stylize("bold underline")
                label = Text("[", style="bold") + label + Text("]", style="bold")
            text.append_text(label)
        return text
