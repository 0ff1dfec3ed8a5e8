"""The console's data table: Textual's DataTable with one fix.

Textual 8.2's DataTable measures new rows on idle, but a row drawn before that (a table refilled
while a frame is due) stays cached at the column widths of the moment: the Runs table could keep
its REPO and SUBJECT columns as narrow as their headers for good (seen in tests under load). After
each measurement the render caches are dropped, so the next frame draws at the measured widths.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class Table(DataTable):  # type: ignore[type-arg]
    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        self._clear_caches()
        self.refresh()
