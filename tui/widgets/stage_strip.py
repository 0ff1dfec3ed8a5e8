"""A run's stages as one line: glyph, name and duration per stage, the selected one marked."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from core.api.views import StageView
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
        # As much as fits: names and durations, then names only, then only the selected
        # stage's name with the others as glyphs.
        width = self.size.width or 80
        text = self._strip(durations=True, names=True)
        if text.cell_len > width:
            text = self._strip(durations=False, names=True)
        if text.cell_len > width:
            text = self._strip(durations=False, names=False)
        return text

    def _strip(self, durations: bool, names: bool) -> Text:
        palette = self.app.theme_variables
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, stage in enumerate(self.stages):
            if not names and index != self.selected:
                if index:
                    text.append(" ")
                text.append(render.glyph(stage.status), style=render.colour(stage.status, palette))
                continue
            if index:
                text.append(" → " if names else " ", style=palette.get("muted", ""))
            style = render.colour(stage.status, palette)
            label = Text(f"{render.glyph(stage.status)} {stage.name}", style=style)
            if stage.environment:
                label.append(f"@{stage.environment}", style=palette.get("muted", ""))
            took = render.took(stage.started_at, stage.finished_at) if durations else ""
            if took:
                label.append(f" {took}", style=palette.get("muted", ""))
            if index == self.selected:
                label.stylize("bold underline")
                label = Text("[", style="bold") + label + Text("]", style="bold")
            text.append_text(label)
        return text
