"""The approval gate in front of a stage that deploys to an environment with a policy.

Opens the change request (or finds the run's latest after a restart), then waits for the
decisions, re-checking them with approvals.check_gate; the policy is read fresh from ahead.yml
at every check. The run's execution (execute.py) passes in what the gate needs: the workspace,
the store, the event feed, the run's cancel event and two callbacks (the run's note, and
whether the run now waits at its gate).

May not depend on the engine or the run's execution (no core.engine imports): what it needs is
given to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import approvals, gitio, workspace
from core.aio import wait_at_most
from core.errors import ConfigError
from core.feed import Event, EventFeed
from core.policy import Policy
from core.store.db import AsyncStore, Row
from core.workspace import Workspace


class Gate:
    """An approval gate in front of a stage that deploys to an environment with a policy.

    Opens (or, after a restart, finds) the change request, then re-checks it whenever a
    decision or cancel arrives and every few seconds (expiry, freeze): pass, or end the run.
    The policy is read fresh from ahead.yml at every check; a broken file keeps the gate shut.
    """

    RECHECK_SECONDS = 5.0

    def __init__(
        self,
        *,
        ws: Workspace,
        db: AsyncStore,
        feed: EventFeed,
        run: Row,
        stage_row: Row,
        environment: str,
        cancel: asyncio.Event,
        set_error: Callable[[str | None], None],
        waiting: Callable[[bool], None],
    ) -> None:
        """`ws`: the engine's workspace (its file is re-read at every check); `run`, `stage_row`:
        the run and the gated stage; `cancel`: set when the run is cancelled; `set_error`:
        (store thread) the run's note (runs.error); `waiting(True)` when the run starts
        waiting at the gate, `waiting(False)` when it stops waiting other than by the engine
        stopping (a run waiting at its gate when the engine stops stays waiting)."""
        self.ws = ws
        self.db = db
        self.feed = feed
        self.run = run
        self.stage_row = stage_row
        self.environment = environment
        self.cancel = cancel
        self.set_error = set_error
        self.waiting = waiting

    def _workspace(self) -> tuple[Workspace | None, str]:
        try:
            return workspace.read(self.ws.file), ""
        except ConfigError as exc:
            return None, f"gate shut: {exc}"

    async def wait(self) -> tuple[str, str]:
        """('pass', reason) or the stage's final status ('failed', 'cancelled', 'skipped')."""
        ws, problem = await asyncio.to_thread(self._workspace)
        # After a restart the run's latest request stands, whatever happened to it meanwhile
        # (decided, superseded, cancelled); a voided one is replaced.
        change = await self.db.call(
            self.db.store.query_one,
            "SELECT * FROM change_requests WHERE "
            "run_id = ? AND stage_id = ? AND status != 'voided' "
            "ORDER BY id DESC LIMIT 1",
            (self.run["id"], self.stage_row["id"]),
        )
        if ws is not None and self.environment not in ws.policies and change is None:
            return "pass", "no policy"
        queue = self.feed.listen()
        self.waiting(True)
        try:
            change_id = change["id"] if change else None
            shown = ""
            while True:
                if self.cancel.is_set():
                    await self.db.call(self._cancel)
                    return "cancelled", "cancelled at the approval gate"
                if ws is None:
                    outcome, reason = "wait", problem
                elif change_id is None:
                    policy = ws.policies.get(self.environment)
                    if policy is None:
                        return "pass", "no policy"
                    change_id = await self._open(policy)
                    continue
                else:
                    outcome, reason, row = await self.db.call(
                        approvals.check_gate, self.db.store, ws, change_id
                    )
                    if outcome == "pass":
                        await self.db.call(self.set_error, None)  # no longer waiting
                        return "pass", reason
                    if outcome == "stale":  # reopen under the policy as it is now, not as last read
                        change_id = None
                        ws, problem = await asyncio.to_thread(self._workspace)
                        continue
                    if outcome == "fail":
                        status = {"superseded": "skipped", "cancelled": "cancelled"}.get(
                            row["status"], "failed"
                        )
                        return status, f"change {row['id']} {row['status']}: {reason}"
                if reason != shown:
                    shown = reason
                    await self.db.call(self.set_error, f"waiting for approval: {reason}")
                await wait_at_most(self._next(queue), self.RECHECK_SECONDS)
                ws, problem = await asyncio.to_thread(self._workspace)
        finally:
            if not _cancelled():
                self.waiting(False)
            self.feed.unlisten(queue)

    async def _next(self, queue: asyncio.Queue[Event | None]) -> None:
        """Until an event about this run arrives (a decision, a cancel, a supersession)."""
        while True:
            event = await queue.get()
            if event is None or event.run_id == self.run["id"] or event.kind == "deployment":
                return

    async def _open(self, policy: Policy) -> int:
        repo_dir = self.ws.repo_dir(self.ws.repo(self.run["repo"]))
        base = await self.db.call(
            approvals.deployed_now, self.db.store, self.run["repo"], self.environment
        )
        head = self.run["commit_sha"]
        commits, diffstat, people = await asyncio.to_thread(change_contents, repo_dir, base, head)
        run = await self.db.call(
            self.db.store.query_one, "SELECT * FROM runs WHERE id = ?", (self.run["id"],)
        )
        assert run is not None
        return await self.db.call(
            approvals.open_change,
            self.db.store,
            policy,
            run=run,
            stage_id=self.stage_row["id"],
            base=base,
            commits=commits,
            diffstat=diffstat,
            people=people,
        )

    def _cancel(self) -> None:
        with self.db.store.transaction():
            approvals.cancel_open(self.db.store, self.run["id"], "engine")


def _cancelled() -> bool:
    """Whether the current task is being cancelled (the engine is stopping)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def change_contents(
    repo_dir: Path, base: str | None, head: str
) -> tuple[list[dict[str, Any]], str, dict[str, dict[str, str]]]:
    """(worker thread) The commits in base..head (the newest 200, for people to read), the diff
    stat, and every author and committer email of the whole range with a commit of theirs (for
    the policy: a long range must not hide an author)."""
    commits = gitio.log_range(repo_dir, base, head, limit=200)
    people = gitio.range_people(repo_dir, base, head)
    empty_tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    stat = gitio.git(
        repo_dir, "diff", "--stat=100", "--end-of-options", base or empty_tree, head, check=False
    )
    lines = stat.splitlines()
    if len(lines) > 60:
        lines = lines[:59] + [f" ... {len(lines) - 60} more files", lines[-1]]
    return (
        [
            {
                "sha": c.sha,
                "author": c.author,
                "email": c.email,
                "committer_email": c.committer_email,
                "subject": c.subject,
                "time": c.time,
            }
            for c in commits
        ],
        "\n".join(lines),
        people,
    )
