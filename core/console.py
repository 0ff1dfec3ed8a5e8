"""The engine as a console sees it: read models, commands, and live events, all async.

A console (the local TUI, or one SSH session) holds one `ConsoleSession`. On start it runs the
engine embedded when no other engine holds the workspace's lease, and is otherwise a client of
the running one; either way it follows the store's event feed, so a run started anywhere shows
up here within the feed's poll interval. Every call runs on the session's own store thread (git
and SQLite never on the event loop). Depends on core only; never on textual.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

from core import approvals, drift, gitio, lease
from core.errors import GitError, LeaseHeld, PermissionDenied
from core.feed import Event, EventFeed
from core.serve import presence
from core.services import Actor, Revoked, Services
from core.store.db import AsyncStore, Row, Store
from core.views import (
    BranchView,
    CommitView,
    DriftCheckView,
    DriftDetail,
    DriftView,
    EnvCell,
    RepoDetail,
    RepoView,
    RunDetail,
    RunView,
    StageView,
    StepView,
)
from core.workspace import Workspace

log = logging.getLogger("ahead.console")


def run_view(row: Row, stages: list[Row] | None = None) -> RunView:
    return RunView(
        id=row["id"], repo=row["repo"], branch=row["branch"], commit=row["commit_sha"],
        status=row["status"], trigger=row["trigger"], actor=row["actor"], author=row["author"],
        subject=row["subject"], created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], error=row["error"], retry_of=row["retry_of"],
        stages=tuple(stage_view(s) for s in stages or ()))


def stage_view(row: Row) -> StageView:
    return StageView(row["id"], row["name"], row["environment"], row["status"], row["started_at"],
                     row["finished_at"], row["error"])


class ConsoleSession:
    """One console's view of a workspace.

    Args:
        ws: the workspace.
        actor: who acts through this console.
        embed_engine: run the engine here when no other process holds the lease.
        presence_id: the presence row an SSH server opened for this console (else its own).
        origin: the session named in audit entries (default `console:NAME`).
    """

    def __init__(self, ws: Workspace, actor: Actor, embed_engine: bool = True,
                 presence_id: int | None = None, origin: str | None = None) -> None:
        self.ws = ws
        self.actor = actor
        self._embed = embed_engine
        # An SSH console's presence row is the server's (opened before it started); a local
        # console opens its own on start and closes it on aclose.
        self.presence_id = presence_id
        self._own_presence = presence_id is None
        # Audit entries name the console they came from (an SSH console: its address and session).
        self.db = AsyncStore(Store(ws.db_path, session=origin or f"console:{actor.name}"))
        self.svc = Services(ws, self.db.store)
        self.feed = EventFeed(self.db)
        self.engine: Any = None  # core.engine.Engine when this console runs the engine
        self.engine_holder: str | None = None
        self.revoked: str | None = None  # why this console's operator may no longer act
        self._closed = False

    async def start(self) -> None:
        await self.db.open()
        if self._embed:
            from core.engine import Engine

            engine = Engine(self.ws)
            try:
                await engine.start()
                self.engine = engine
            except LeaseHeld as exc:
                self.engine_holder = exc.holder
        if self.engine is None and self.engine_holder is None:
            self.engine_holder = await self.db.call(lease.holder, self.db.store, lease.STALE_SECONDS)
        if self._own_presence:
            self.presence_id = await self.db.call(presence.open_session, self.db.store,
                                                  self.actor.name, "local")
        await self.feed.start()

    async def aclose(self) -> None:
        """Stop following, stop the embedded engine (if any) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.feed.aclose()
        if self._own_presence and self.presence_id is not None:
            try:
                await self.db.call(presence.close_session, self.db.store, self.presence_id)
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
            actor = self.svc.acting(self.actor)
        except Revoked as exc:
            self.revoked = str(exc)
            self.actor = Actor(self.actor.name, (), self.actor.os_user)
            raise
        self.revoked = None
        self.actor = actor
        return actor

    async def trigger(self, repo: str, ref: str | None = None, commit: str | None = None) -> int:
        return await self.db.call(lambda: self.svc.trigger(repo, self.acting(), ref, commit))

    async def cancel(self, run_id: int) -> str:
        return await self.db.call(lambda: self.svc.cancel(run_id, self.acting()))

    async def retry(self, run_id: int) -> int:
        return await self.db.call(lambda: self.svc.retry(run_id, self.acting()))

    # -- reads ------------------------------------------------------------------------------------

    async def overview(self, only: list[str] | None = None, pending: bool = True) -> list[RepoView]:
        """Every repo (or `only` these) by environment. With `pending=False` it answers from the
        store and ref files alone (no git history walk), leaving pending counts as None."""
        return await self.db.call(self._overview, only, pending)

    def _overview(self, only: list[str] | None, pending: bool) -> list[RepoView]:
        status = self.svc.status(only, pending)
        store = self.db.store
        last_ids = [r["last_run"]["id"] for r in status["repos"] if r["last_run"]]
        runs: dict[int, RunView] = {}
        if last_ids:
            marks = ",".join("?" * len(last_ids))
            stages: dict[int, list[Row]] = {}
            for stage in store.query(f"SELECT * FROM stages WHERE run_id IN ({marks}) ORDER BY idx",
                                     tuple(last_ids)):
                stages.setdefault(stage["run_id"], []).append(stage)
            for row in store.query(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(last_ids)):
                runs[row["id"]] = run_view(row, stages.get(row["id"], []))
        touching: dict[tuple[str, str], Row] = {}
        for row in store.query(
                "SELECT r.repo, s.environment, s.status, s.run_id FROM stages s JOIN runs r ON r.id = s.run_id "
                "JOIN (SELECT MAX(s2.id) AS id FROM stages s2 JOIN runs r2 ON r2.id = s2.run_id "
                "WHERE s2.environment IS NOT NULL AND s2.status != 'skipped' "
                "GROUP BY r2.repo, s2.environment) m ON m.id = s.id"):
            touching[(row["repo"], row["environment"])] = row
        drifts: dict[tuple[str, str], list[DriftView]] = {}
        for item in self._drift():
            if item.kind != drift.REVISION:
                drifts.setdefault((item.repo, item.environment), []).append(item)
        views = []
        for repo in status["repos"]:
            cells = []
            for env in self.ws.environments:
                e = repo["environments"][env]
                touch = touching.get((repo["name"], env))
                found = drifts.get((repo["name"], env), [])
                cells.append(EnvCell(env, e["deploys"], e["deployed"], e["deployed_at"], e["pending"], e["oldest_pending_at"],
                                     touch["status"] if touch else None, touch["run_id"] if touch else None,
                                     drift.worst([d.state for d in found]),
                                     all(d.acknowledged for d in found if d.state == "drifted")
                                     and any(d.state == "drifted" for d in found),
                                     _locked(e.get("lock"))))
            last = repo["last_run"]
            views.append(RepoView(repo["name"], repo["branch"], repo["head"], repo["error"],
                                  runs.get(last["id"]) if last else None, tuple(cells)))
        return views

    async def runs(self, repo: str | None = None, status: str | None = None,
                   branch: str | None = None, limit: int = 200) -> list[RunView]:
        rows = await self.db.call(self.svc.runs, repo, status, branch, limit)
        return [run_view(r) for r in rows]

    async def run(self, run_id: int) -> RunDetail:
        return await self.db.call(self._run, run_id)

    def _run(self, run_id: int) -> RunDetail:
        detail = self.svc.show(run_id)
        steps = [StepView(s["id"], s["stage_id"], s["name"], s["command"], s["status"], s["exit_code"],
                          s["started_at"], s["finished_at"], s["error"])
                 for stage in detail["stages"] for s in stage["steps"]]
        return RunDetail(run_view(detail, detail["stages"]), tuple(steps))

    async def step_log_tail(self, step_id: int, after: int = -1, limit: int = 5000) -> tuple[int, list[str]]:
        """The step's log lines after `after` as plain strings, and the last seq read (`after`
        when none): the console's hot path during a log flood, kept free of per-line objects."""
        return await self.db.call(self._step_log_tail, step_id, after, limit)

    def _step_log_tail(self, step_id: int, after: int, limit: int) -> tuple[int, list[str]]:
        cursor = self.db.store.conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute("SELECT seq, line FROM log_lines WHERE step_id = ? AND seq > ? "
                              "ORDER BY seq LIMIT ?", (step_id, after, limit)).fetchall()
        if not rows:
            return after, []
        return rows[-1][0], [line for _, line in rows]

    async def step_log_start(self, step_id: int, keep: int) -> int | None:
        """The seq after which the step's last `keep` lines begin, or None when it has fewer."""
        rows = await self.db.call(self.db.store.query, "SELECT seq FROM log_lines WHERE step_id = ? "
                                  "ORDER BY seq DESC LIMIT 1 OFFSET ?", (step_id, keep))
        return int(rows[0]["seq"]) if rows else None

    async def repo_detail(self, repo: str, limit: int = 300) -> RepoDetail:
        return await self.db.call(self._repo_detail, repo, limit)

    def _repo_detail(self, name: str, limit: int) -> RepoDetail:
        repo = self.ws.repo(name)
        path = self.ws.repo_dir(repo)
        _, common = gitio.git_dirs(path)
        branches = gitio.read_branches(common)
        head = branches.get(repo.branch)
        deployed: dict[str, str | None] = {}
        for env in self.ws.environments:
            dep = self.svc.deployed(name, env)
            deployed[env] = dep["commit_sha"] if dep else None
        commits: list[CommitView] = []
        if head is not None:
            log_commits = gitio.log_range(path, None, head, limit)
            pending: dict[str, set[str]] = {}
            for env, sha in deployed.items():
                try:
                    pending[env] = {c.sha for c in gitio.log_range(path, sha, head, limit)}
                except GitError:
                    pending[env] = set()
            for c in log_commits:
                commits.append(CommitView(
                    c.sha, c.author, c.email, c.time, c.subject,
                    tuple(env for env, sha in deployed.items() if sha == c.sha),
                    tuple(env for env in self.ws.environments if c.sha in pending[env])))
        last_by_branch: dict[str, RunView] = {}
        for row in self.db.store.query(
                "SELECT r.* FROM runs r JOIN (SELECT MAX(id) AS id FROM runs WHERE repo = ? GROUP BY branch) m "
                "ON m.id = r.id", (name,)):
            last_by_branch[row["branch"]] = run_view(row)
        branch_views = [BranchView(b, sha, last_by_branch.get(b))
                        for b, sha in sorted(branches.items(), key=lambda kv: (kv[0] != repo.branch, kv[0]))
                        if gitio.valid_branch(b)]
        return RepoDetail(name, repo.branch, tuple(commits), tuple(branch_views), deployed)

    async def environments_with(self, repo: str, sha: str) -> dict[str, bool]:
        """For each environment: is `sha` deployed there (the deployed commit contains it)?"""
        return await self.db.call(self._environments_with, repo, sha)

    def _environments_with(self, name: str, sha: str) -> dict[str, bool]:
        path = self.ws.repo_dir(self.ws.repo(name))
        result = {}
        for env in self.ws.environments:
            dep = self.svc.deployed(name, env)
            result[env] = bool(dep) and gitio.is_ancestor(path, sha, dep["commit_sha"]) if dep else False
        return result

    # -- change control -------------------------------------------------------------------------

    async def changes(self, include_decided: bool = False) -> list[dict[str, Any]]:
        """Change requests (open ones, or all), newest first; commits decoded."""
        return await self.db.call(self._changes, include_decided)

    def _changes(self, include_decided: bool) -> list[dict[str, Any]]:
        rows = approvals.changes(self.db.store, None if include_decided else "open")
        result = []
        for row in rows:
            detail = approvals.change_detail(self.db.store, self.ws, row["id"])
            result.append(detail)
        return result

    async def change(self, change_id: int) -> dict[str, Any]:
        """One change: commits, diff stat, artifacts, decisions and the policy checklist."""
        return await self.db.call(approvals.change_detail, self.db.store, self.ws, change_id)

    async def approve(self, change_id: int, comment: str = "") -> approvals.Verdict:
        return await self.db.call(self._decide, change_id, "approve", comment)

    async def reject(self, change_id: int, comment: str) -> approvals.Verdict:
        return await self.db.call(self._decide, change_id, "reject", comment)

    def _decide(self, change_id: int, verdict: str, comment: str) -> approvals.Verdict:
        # The operator and the policy as ahead.yml says now, not as it said when the console started.
        actor = self.acting()
        current = self.svc.watch.current()
        return approvals.decide(self.db.store, current, change_id, actor.name, verdict, comment)

    # -- presence ---------------------------------------------------------------------------------

    async def who(self) -> list[presence.Presence]:
        """Every open console (this one included: its id is `presence_id`), oldest first."""
        return await self.db.call(presence.who, self.db.store)

    async def show_screen(self, screen: str) -> None:
        """Tell the others which screen this console shows."""
        if self.presence_id is not None and not self._closed:
            await self.db.call(presence.set_screen, self.db.store, self.presence_id, screen)

    async def audit(self, limit: int = 500) -> list[Row]:
        """The newest audit entries, newest first."""
        return await self.db.call(self.db.store.query, "SELECT * FROM audit ORDER BY id DESC LIMIT ?",
                                  (limit,))

    async def verify_audit(self) -> tuple[bool, int, str]:
        """Check the whole hash chain, then every decision's MAC (when this user may read the
        decision key): (ok, entries checked, the first problem)."""
        return await self.db.call(self._verify_audit)

    def _verify_audit(self) -> tuple[bool, int, str]:
        ok, count, problem = self.db.store.verify_audit()
        if ok:
            try:
                forged = approvals.unauthenticated(self.db.store, self.ws)
            except PermissionDenied:
                forged = []  # only the key's owner (the engine's user) can check decisions
            if forged:
                return False, count, f"{len(forged)} decision(s) do not verify: {forged[0]}"
        return ok, count, problem

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Escape hatch for tests and tools; consoles use the typed reads above."""
        return await self.db.call(self.db.store.query, sql, params)

    # -- drift ------------------------------------------------------------------------------------

    async def drift(self) -> list[DriftView]:
        """Every drift target's latest finding (targets never checked yet are not listed)."""
        return await self.db.call(self._drift)

    def _drift(self) -> list[DriftView]:
        return [drift_view(item) for item in drift.listing(self.db.store)]

    async def drift_detail(self, repo: str, environment: str, target: str) -> DriftDetail:
        items = await self.db.call(drift.detail, self.db.store, repo, environment, target)
        item = items[0]
        history = tuple(DriftCheckView(h["id"], h["state"], h["summary"], h["reason"], h["started_at"],
                                       h["finished_at"]) for h in item["history"])
        return DriftDetail(drift_view(item), item["detail"], history)

    async def drift_check(self, repo: str | None = None, environment: str | None = None,
                          target: str | None = None) -> list[DriftView]:
        """Check now, in this process (the findings are recorded and every console sees them).
        Checks run commands and reach hosts as this process's user: the operator role only."""
        actor = await self.db.call(self.acting)
        actor.require("check drift")
        checker = drift.DriftChecker(self.ws, self.db)
        targets = await checker.targets(repo, environment, target)
        await checker.check(targets, f"asked by {actor.name}")
        keys = {(t.repo, t.environment, t.name) for t in targets}
        return [v for v in await self.drift() if (v.repo, v.environment, v.target) in keys]

    async def drift_ack(self, repo: str, environment: str, target: str | None, reason: str,
                        seconds: float) -> list[str]:
        def ack() -> list[str]:
            actor = self.acting()
            actor.require("acknowledge")
            return drift.acknowledge(self.db.store, repo, environment, target, reason, seconds, actor.name)
        return await self.db.call(ack)

    async def drift_reconcile(self, repo: str, environment: str) -> int:
        return await self.db.call(lambda: self.svc.reconcile(repo, environment, self.acting()))


def drift_view(item: dict[str, Any]) -> DriftView:
    ack = item.get("acknowledged")
    return DriftView(item["repo"], item["environment"], item["target"], item["kind"], item["state"],
                     item["summary"], item["commit_sha"], item["since"], item["checked_at"],
                     ack["by"] if ack else None, ack["reason"] if ack else None, ack["until"] if ack else None)

def _locked(lock: dict[str, Any] | None) -> str | None:
    """The reason an environment waits for an operator's unlock, or None."""
    return lock["reason"] if lock and lock["state"] == "needs_operator" else None
