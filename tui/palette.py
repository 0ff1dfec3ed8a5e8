"""Command-palette provider: jump to any repo, recent run, open change request or drift by name."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from core.text import one_line

if TYPE_CHECKING:
    from tui.app import AheadApp


class JumpProvider(Provider):
    """Repos (from the workspace), open change requests, drift that is not in sync and the last
    200 runs (from the engine)."""

    async def startup(self) -> None:
        app = cast("AheadApp", self.app)
        self._targets: list[tuple[str, str, object]] = []
        for repo in app.session.ws.repos:
            self._targets.append(
                (
                    f"repo {repo.name}",
                    "Open the repo: commits and branches",
                    partial(app.open_repo, repo.name),
                )
            )
        if app.is_ready:
            for change in await app.session.changes():
                title = f"change #{change['id']} {change['repo']} → {change['environment']} {change['status']}"
                self._targets.append(
                    (
                        title,
                        "Open the change request: commits, checklist, approve",
                        partial(app.open_change, change["id"]),
                    )
                )
            for drift in await app.session.drift():
                if drift.state != "in_sync":
                    title = f"drift {drift.repo}/{drift.environment} {one_line(drift.target)} {drift.state}"
                    self._targets.append(
                        (
                            title,
                            one_line(drift.summary)[:80],
                            partial(app.open_drift, drift.repo, drift.environment, drift.target),
                        )
                    )
            for run in await app.session.runs(limit=200):
                title = f"run #{run.id} {run.repo} {one_line(run.branch)} {run.status}"
                self._targets.append(
                    (title, one_line(run.subject)[:80], partial(app.open_run, run.id))
                )

    async def discover(self) -> Hits:
        for title, help_text, callback in self._targets[:20]:
            yield DiscoveryHit(title, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._targets:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)  # type: ignore[arg-type]
