"""Picking queued runs: which queued run starts next.

Under the concurrency cap (settings.max_parallel_runs), in id order, one run at a time per
(repo, branch) so deploys of a branch stay in order; a run that waits behind another is noted
once (runs.error). Woken by the engine's `_wake` (a new queued run, a run that ended) and
every second.

`Scheduling` is a mixin of `Engine` (core/engine/__init__.py): the engine's state it uses is
declared at the top of the class; it starts a run through the engine's `_execute`. It may not
depend on how runs execute (execute.py, gate.py) nor on ref scanning (scan.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from core import runstate
from core.aio import wait_at_most
from core.store.db import AsyncStore
from core.workspace import Workspace


class Scheduling:
    """The engine's scheduler (see the module docstring)."""

    ws: Workspace
    db: AsyncStore
    only_runs: set[int] | None
    lost_lease: asyncio.Event
    _repos: dict[str, Any]
    _runs: dict[int, asyncio.Event]
    _noted: dict[int, int]
    _wake: asyncio.Event
    _spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]
    _execute: Callable[..., Coroutine[Any, Any, None]]

    async def _schedule(self) -> None:
        cap = self.ws.settings.max_parallel_runs
        while True:
            self._wake.clear()
            if not self.lost_lease.is_set() and len(self._runs) < cap:
                queued = await self.db.call(
                    self.db.store.query,
                    "SELECT id, repo, branch, on_main FROM runs "
                    "WHERE status = 'queued' ORDER BY id LIMIT 200",
                )
                busy = await self.db.call(
                    self.db.store.query,
                    "SELECT id, repo, branch FROM runs WHERE status IN ('running', 'waiting')",
                )
                lanes = {(r["repo"], r["branch"]): r["id"] for r in busy}
                for run in queued:
                    if len(self._runs) >= cap:
                        break
                    if self.only_runs is not None and run["id"] not in self.only_runs:
                        continue
                    if run["repo"] not in self._repos:
                        continue
                    lane = (run["repo"], run["branch"])
                    if lane in lanes:  # one run at a time per (repo, branch): deploys stay in order
                        await self._note_queued(run["id"], lanes[lane], run["branch"])
                        continue
                    lanes[lane] = run["id"]
                    cancel = asyncio.Event()
                    self._runs[run["id"]] = cancel
                    self._spawn(self._execute(run["id"], cancel), f"run-{run['id']}")
            await wait_at_most(self._wake.wait(), 1.0)

    async def _note_queued(self, run_id: int, ahead: int, branch: str) -> None:
        """Record once why a queued run waits (runs.error, shown until it starts)."""
        if self._noted.get(run_id) != ahead:
            self._noted[run_id] = ahead
            if len(self._noted) > 10_000:
                self._noted.clear()
            await self.db.call(
                runstate.note,
                self.db.store,
                run_id,
                f"queued behind run #{ahead} of {branch} (one run per branch at a time)",
            )
