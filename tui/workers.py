"""Workers that never end the console.

Textual ends the app when a worker fails unless it was started with `exit_on_error=False`
(`@work` passes True by default). A console must not die because a command was refused or a
read failed (over SSH that is the operator's whole session): every worker of the console's
screens and app runs with `exit_on_error=False`, and a failed worker becomes a notification (a
refusal as is, anything else with its type). Worker state messages do not bubble, so each node
that starts workers (the app and every screen) handles its own.
"""

from __future__ import annotations

import logging
from typing import Any

from textual.worker import Worker, WorkerState

from core.errors import CoreError

log = logging.getLogger("ahead.console")


class KeepRunning:
    """Mixin for the App and the screens: `run_worker` (and so `@work`) never exits on error."""

    def run_worker(
        self,
        work: Any,
        name: str | None = "",
        group: str = "default",
        description: str = "",
        exit_on_error: bool = True,
        start: bool = True,
        exclusive: bool = False,
        thread: bool = False,
    ) -> Any:
        del exit_on_error  # in Textual's signature (`@work` passes it); never honoured here
        return super().run_worker(  # type: ignore[misc]
            work,
            name=name,
            group=group,
            description=description,
            exit_on_error=False,
            start=start,
            exclusive=exclusive,
            thread=thread,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        worker, error = event.worker, event.worker.error
        if isinstance(error, CoreError):
            self.notify(str(error), title="Could not do that", severity="error", timeout=8)  # type: ignore[attr-defined]
            return
        log.error("console worker %s failed", worker.name, exc_info=error)
        self.notify(  # type: ignore[attr-defined]
            f"{type(error).__name__}: {error}",
            title=f"{worker.name} failed",
            severity="error",
            timeout=12,
        )
