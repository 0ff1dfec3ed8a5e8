"""The engine as a console sees it: read models, commands, and live events, all async.

A console (the local TUI, or one SSH session) holds one `ClientSession`. On start it runs the
engine embedded when no other engine holds the workspace's lease, and is otherwise a client of
the running one; either way it follows the store's event feed, so a run started anywhere shows
up here within the feed's poll interval. Every call runs on the session's own store thread (git
and SQLite never on the event loop). Depends on core only; never on textual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from core.api import Actor, Revoked, Verdict
from core.api.door import Api, drift_view
from core.api.views import DriftDetail, DriftView, RepoDetail, RepoView, RunDetail, RunView
from core.feed import Event, EventFeed
from core.presence import Presence
from core.workspace import Workspace

log = logging.getLogger("ahead.console")
T = TypeVar("T")


class ClientSession:
    """One console's view of a workspace.

    Args:
        ws: the workspace.
        actor: who acts through this console.
        embed_engine: run the engine here when no other process holds the lease.
        presence_id: the presence row an SSH server opened for this console (else its own).
        origin: the session named in audit entries (default `console:NAME`).
        clock: the moment the console's "may I?" is asked at (`may_decide`).
    """

    def __init__(
        self,
        ws: Workspace,
        actor: Actor,
        embed_engine: bool = True,
        presence_id: int | None = None,
        origin: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ws = ws
        self.actor = actor
        self._embed = embed_engine
        # An SSH console's presence row is the server's (opened before it started); a local
        # console opens its own on start and closes it on aclose.
        self.presence_id = presence_id
        self._own_presence = presence_id is None
        # Audit entries name the console they came from (an SSH console: its address and session).
        self.db = Api.async_store(ws, origin or f"console:{actor.name}")
        self.api = Api(
            ws, self.db.store, self.db, clock=clock
        )  # the door: every command and read goes through it
        self.feed = EventFeed(self.db)
        self.engine: Any = None  # core.engine.Engine when this console runs the engine
        self.engine_holder: str | None = None
        self.revoked: str | None = None  # why this console's operator may no longer act
        self._closed = False

    async def start(self) -> None:
        await self.db.open()
        if self._embed:
            self.engine, self.engine_holder = await Api.embed_engine(self.ws)
        if self.engine is None and self.engine_holder is None:
            self.engine_holder = await self.db.call(self.api.engine_holder)
        if self._own_presence:
            self.presence_id = await self.db.call(self.api.open_presence, self.actor.name, "local")
        await self.feed.start()

    async def aclose(self) -> None:
        """Stop following, stop the embedded engine (if any) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.feed.aclose()
        if self._own_presence and self.presence_id is not None:
            try:
                await self.db.call(self.api.close_presence, self.presence_id)
            except Exception:  # closing anyway; `who` skips rows of processes that are gone
                log.exception("could not remove this console's presence row")
        if self.engine is not None:
            await self.engine.aclose()
        await self.db.aclose()

    @property
    def mode(self) -> str:
        """'embedded' (this console runs the engine), 'client' or 'no engine'."""
        if self.engine is not None:
            return "embedded"
        return "client" if self.engine_holder else "no engine"

    def subscribe(self) -> AsyncGenerator[Event, None]:
        return self.feed.subscribe()

    # -- commands -------------------------------------------------------------------------------

    def acting(self) -> Actor:
        """(store thread) Who acts, as ahead.yml says now: called before every command, so an
        operator removed from the file, or a role taken away, stops working in an open console.
        Once revoked, the console is read-only (`actor` has no roles) and `revoked` says why.

        Raises:
            Revoked: the operator is gone. PermissionDenied: ahead.yml is broken (fail closed).
        """
        try:
            actor = self.api.acting(self.actor)
        except Revoked as exc:
            self.revoked = str(exc)
            self.actor = Actor(self.actor.name, (), self.actor.os_user)
            raise
        self.revoked = None
        self.actor = actor
        return actor

    def _act(self, command: Callable[[Actor], T]) -> T:
        """(store thread) Run a door command as this console's operator, as ahead.yml says now
        (the door checks the capability)."""
        return command(self.acting())

    async def trigger(self, repo: str, ref: str | None = None, commit: str | None = None) -> int:
        return await self.db.call(
            self._act, lambda actor: self.api.trigger(actor, repo, ref, commit)
        )

    async def cancel(self, run_id: int) -> str:
        return await self.db.call(self._act, lambda actor: self.api.cancel(actor, run_id))

    async def retry(self, run_id: int) -> int:
        return await self.db.call(self._act, lambda actor: self.api.retry(actor, run_id))

    # -- reads ------------------------------------------------------------------------------------

    async def overview(self, only: list[str] | None = None, pending: bool = True) -> list[RepoView]:
        """Every repo (or `only` these) by environment. With `pending=False` it answers from the
        store and ref files alone (no git history walk), leaving pending counts as None."""
        return await self.db.call(self.api.overview, only, pending)

    async def runs(
        self,
        repo: str | None = None,
        status: str | None = None,
        branch: str | None = None,
        limit: int = 200,
    ) -> list[RunView]:
        return await self.db.call(self.api.run_views, repo, status, branch, limit)

    async def run(self, run_id: int) -> RunDetail:
        return await self.db.call(self.api.run_detail, run_id)

    async def step_log_tail(
        self, step_id: int, after: int = -1, limit: int = 5000
    ) -> tuple[int, list[str]]:
        """The step's log lines after `after` as plain strings, and the last seq read (`after`
        when none): the console's hot path during a log flood, kept free of per-line objects."""
        return await self.db.call(self.api.step_log_tail, step_id, after, limit)

    async def step_log_start(self, step_id: int, keep: int) -> int | None:
        """The seq after which the step's last `keep` lines begin, or None when it has fewer."""
        return await self.db.call(self.api.step_log_start, step_id, keep)

    async def repo_detail(self, repo: str, limit: int = 300) -> RepoDetail:
        return await self.db.call(self.api.repo_detail, repo, limit)

    async def environments_with(self, repo: str, sha: str) -> dict[str, bool]:
        """For each environment: is `sha` deployed there (the deployed commit contains it)?"""
        return await self.db.call(self.api.environments_with, repo, sha)

    # -- change control -------------------------------------------------------------------------

    async def changes(self, include_decided: bool = False) -> list[dict[str, Any]]:
        """Change requests (open ones, or all), newest first, in detail; each says under
        `refusal` why this console's operator may not decide it (None: they may)."""
        return await self.db.call(self._changes, include_decided)

    def _changes(self, include_decided: bool) -> list[dict[str, Any]]:
        return [self._with_refusal(c) for c in self.api.change_details(include_decided)]

    async def change(self, change_id: int) -> dict[str, Any]:
        """One change: commits, diff stat, artifacts, decisions, the policy checklist, and
        `refusal`: why this console's operator may not decide it (None: they may)."""
        return await self.db.call(lambda: self._with_refusal(self.api.change(change_id)))

    def _with_refusal(self, change: dict[str, Any]) -> dict[str, Any]:
        return {**change, "refusal": self.api.may_decide(self.actor, change["id"])}

    async def may_decide(self, change_id: int, verdict: str = "approve") -> str | None:
        """Why this console's operator may not decide the change now, or None (the door's
        answer, computed by the code `approve`/`reject` refuse with)."""
        return await self.db.call(self.api.may_decide, self.actor, change_id, verdict)

    async def approve(self, change_id: int, comment: str = "") -> Verdict:
        return await self.db.call(
            self._act, lambda actor: self.api.decide(actor, change_id, "approve", comment)
        )

    async def reject(self, change_id: int, comment: str) -> Verdict:
        return await self.db.call(
            self._act, lambda actor: self.api.decide(actor, change_id, "reject", comment)
        )

    # -- presence ---------------------------------------------------------------------------------

    async def who(self) -> list[Presence]:
        """Every open console (this one included: its id is `presence_id`), oldest first."""
        return await self.db.call(self.api.who)

    async def show_screen(self, screen: str) -> None:
        """Tell the others which screen this console shows."""
        if self.presence_id is not None and not self._closed:
            await self.db.call(self.api.show_screen, self.presence_id, screen)

    async def audit(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest audit entries, newest first."""
        return await self.db.call(self.api.audit_rows, limit)

    async def verify_audit(self) -> tuple[bool, int, str]:
        """Check the whole hash chain, then every decision's MAC (when this user may read the
        decision key): (ok, entries checked, the first problem)."""
        return await self.db.call(self.api.audit_chain)

    # -- drift ------------------------------------------------------------------------------------

    async def drift(self) -> list[DriftView]:
        """Every drift target's latest finding (targets never checked yet are not listed)."""
        return await self.db.call(self.api.drift_views)

    async def drift_detail(self, repo: str, environment: str, target: str) -> DriftDetail:
        return await self.db.call(self.api.drift_detail_view, repo, environment, target)

    async def drift_check(
        self, repo: str | None = None, environment: str | None = None, target: str | None = None
    ) -> list[DriftView]:
        """Check now, in this process (the findings are recorded and every console sees them).
        Checks run commands and reach hosts as this process's user: the operator role only."""
        await self.db.call(self.acting)
        items = await self.api.drift_check(self.actor, repo, environment, target, allow_none=True)
        return [drift_view(i) for i in items]

    async def drift_ack(
        self, repo: str, environment: str, target: str | None, reason: str, seconds: float
    ) -> list[str]:
        return await self.db.call(
            self._act,
            lambda actor: self.api.drift_ack(actor, repo, environment, target, reason, seconds),
        )

    async def drift_reconcile(self, repo: str, environment: str) -> int:
        return await self.db.call(
            self._act, lambda actor: self.api.reconcile(actor, repo, environment)
        )
