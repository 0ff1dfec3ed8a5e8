"""The engine: the one process of a workspace that executes.

Lifecycle: `Engine(ws)`, `await start()`, `await aclose()` (or `async with`). On start it takes
the workspace lease, recovers what a dead engine left running (marked `interrupted`, leftover
step processes killed), records or compares every branch of every repo, and then:
- notices new commits (inotify on ref files, stat-poll safety net) and queues runs per the
  pipeline's `on:` rules, one run for the newest commit of a burst;
- starts queued runs under a concurrency cap, one at a time per (repo, branch);
- follows the event feed for commands from other processes (cancel, notify);
- fetches remote repos on their interval.
All long-lived tasks are owned by the engine and stopped by `aclose()`. SQLite runs on the
store thread, git in worker threads; nothing blocks the event loop.

The parts, one module each (none of them imports this one at run time):
- this module: `Engine`'s lifecycle, the lease and fence, recovery, the feed's commands and
  log retention;
- scan.py: refs, inotify, polling, fetching remotes, queueing commits (a mixin of Engine);
- schedule.py: picking queued runs (a mixin of Engine);
- execute.py: `RunExecution`, one run: checkout, stages, steps, artifacts;
- deploy.py: the verified deploy checkout made after a gate passed;
- gate.py: `Gate`, the approval gate, given what it needs by the run's execution;
- stepenv.py: a step's environment (secrets hidden, metadata capped) and its secrets;
- common.py: the engine's logger.
The names other modules used from core/engine.py are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from core import gitio, lease, retention, runstate, secrets
from core.aio import wait_at_most
from core.drift import DriftChecker
from core.engine.common import ContextLog, log
from core.engine.deploy import DEPLOY_DIR, CheckoutChanged, verify_deploy_checkout
from core.engine.execute import RunExecution
from core.engine.gate import Gate, change_contents
from core.engine.scan import RefScanning, RepoState
from core.engine.schedule import Scheduling
from core.engine.stepenv import METADATA_CAP, capped
from core.errors import CoreError, GitError, LeaseLost
from core.feed import Event, EventFeed
from core.runner import kill_leftovers
from core.store.db import AsyncStore, Row, Store
from core.watch import Inotify
from core.workspace import Workspace

__all__ = [
    "DEPLOY_DIR",
    "HEARTBEAT_SECONDS",
    "LEASE_STALE_SECONDS",
    "METADATA_CAP",
    "RETENTION_EVERY",
    "RETENTION_FIRST_DELAY",
    "CheckoutChanged",
    "ContextLog",
    "Engine",
    "Gate",
    "RepoState",
    "RunExecution",
    "capped",
    "change_contents",
    "verify_deploy_checkout",
]

HEARTBEAT_SECONDS = 2.0
LEASE_STALE_SECONDS = lease.STALE_SECONDS
RETENTION_FIRST_DELAY = 60.0
RETENTION_EVERY = 3600.0
T = TypeVar("T")


class Engine(RefScanning, Scheduling):
    """The workspace's executor. See the module docstring."""

    def __init__(
        self,
        ws: Workspace,
        *,
        only_runs: set[int] | None = None,
        watch: bool = True,
        name: str | None = None,
    ) -> None:
        self.ws = ws
        self.name = name or f"engine pid {os.getpid()} on {socket.gethostname()}"
        self.only_runs = only_runs
        self._watch = watch and only_runs is None
        # The engine may make the store on its first start; every write it makes is fenced by
        # its lease token (Store.fence) once it holds the lease.
        self.db = AsyncStore(Store(ws.db_path, session=f"engine:{os.getpid()}", create=True))
        self.feed = EventFeed(self.db)
        self._token = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[int, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._repos: dict[str, RepoState] = {r.name: RepoState(r) for r in ws.repos}
        self._dirty: set[str] = set()
        self._noted: dict[int, int] = {}  # queued run -> the run it was recorded waiting behind
        self._inotify: Inotify | None = None
        self._started = False
        self._closing = False
        self.lost_lease = asyncio.Event()
        self.lost_reason: str | None = (
            None  # why this engine was fenced out (lease lost, store replaced)
        )
        self._secret_env: dict[str, str] = {}
        self.drift: DriftChecker | None = DriftChecker(ws, self.db) if self._watch else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the lease, recover, scan repos and start the background tasks.

        Raises:
            LeaseHeld: another engine runs this workspace.
            StoreError: the store cannot be opened.
        """
        self.ws.state_dir.mkdir(parents=True, exist_ok=True)
        await self.db.open()
        try:
            await self.db.call(self.db.store.require_intact)  # PRAGMA quick_check
            await self.db.call(
                lease.acquire, self.db.store, self.name, self._token, self.ws.settings.lease_timeout
            )
        except BaseException:
            await self.db.aclose()
            raise
        loop = asyncio.get_running_loop()

        def fence_lost(reason: str) -> None:  # (store thread)
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
                loop.call_soon_threadsafe(self._fenced_out, reason)

        self.db.store.on_fence_lost = fence_lost
        self.db.store.fence = self._token  # from now on every write checks the lease is still ours
        self._started = True
        # env-sourced secrets: read once, out of os.environ and /proc/<pid>/environ from now on
        self._secret_env = secrets.capture(self.ws.secrets.values())
        try:
            await self._recover()
        except LeaseLost:
            await self.aclose()
            raise
        await self.feed.start()
        self._spawn(self._follow_feed(), "feed-follower")
        self._spawn(self._heartbeat(), "heartbeat")
        if self._watch:
            await self._scan_all()
            self._start_inotify()
            self._spawn(self._poll(), "ref-poll")
            if any(r.is_remote for r in self.ws.repos):
                self._spawn(self._fetch_remotes(), "fetch-remotes")
        if self.drift is not None:
            self._spawn(self.drift.run(), "drift")
        waiting = await self.db.call(
            self.db.store.query, "SELECT id FROM runs WHERE status = 'waiting'"
        )
        for row in waiting:  # runs at an approval gate survive a restart: pick them up again
            if self.only_runs is None or row["id"] in self.only_runs:
                cancel = asyncio.Event()
                self._runs[row["id"]] = cancel
                self._spawn(self._execute(row["id"], cancel, resume=True), f"run-{row['id']}")
        self._spawn(self._schedule(), "scheduler")
        self._spawn(self._retention(), "log-retention")
        log.info("engine started for %s", self.ws.file)

    async def aclose(self) -> None:
        """Stop: running steps are stopped and their runs marked interrupted; lease released."""
        if not self._started or self._closing:
            return
        self._closing = True
        if self._inotify is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.feed.aclose()
        with contextlib.suppress(CoreError):
            await self.db.call(lease.release, self.db.store, self._token)
        await self.db.aclose()
        secrets.release(self._secret_env)
        log.info("engine stopped")

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"ahead-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and isinstance(task.exception(), LeaseLost):
            self._fenced_out(str(task.exception()))
        elif not task.cancelled() and task.exception() is not None:
            log.error("engine task %s failed", task.get_name(), exc_info=task.exception())

    def subscribe(self) -> AsyncIterator[Event]:
        """Every event from now on (runs, stages, steps, logs, deployments, refs)."""
        return self.feed.subscribe()

    async def wait_run(self, run_id: int, timeout: float | None = None) -> Row:
        """Wait until run `run_id` is finished; returns its row."""

        async def done() -> Row:
            async for _ in _ticks(self.feed, 0.5):
                row = await self.db.call(
                    self.db.store.query_one, "SELECT * FROM runs WHERE id = ?", (run_id,)
                )
                if row is None or row["status"] in runstate.TERMINAL:
                    return row or {}
            return {}

        async with asyncio.timeout(timeout):
            return await done()

    # -- recovery and lease -------------------------------------------------------------------

    @property
    def fenced_out(self) -> bool:
        """This engine lost the lease or its store: it writes nothing more and cleans up nothing
        (what it ran now belongs to the engine that took over)."""
        return self.lost_lease.is_set() or self.db.store.fence_lost is not None

    def _fenced_out(self, reason: str) -> None:
        """(event loop) Stop work at once: like a lost heartbeat."""
        if self.lost_reason is None:
            self.lost_reason = reason
            log.error("%s", reason)
        self.lost_lease.set()
        for cancel in self._runs.values():
            cancel.set()
        self._wake.set()

    def under_fence(self, fn: Callable[..., T], *args: Any) -> T:
        """(store thread) Run `fn` inside a fenced write transaction: the lease is checked and the
        write lock held while it runs, so no other engine can take over half-way (cleanups of
        files and processes, which the store cannot roll back). Raises LeaseLost."""
        with self.db.store.transaction():
            return fn(*args)

    async def _recover(self) -> None:
        steps = await self.db.call(runstate.recover, self.db.store, self.name)
        for step in steps:
            if step["token"]:
                killed = await self.db.call(self.under_fence, kill_leftovers, step["token"])
                if killed:
                    log.warning("killed %d leftover process(es) of step %s", killed, step["id"])
        await self.db.call(self.under_fence, self._remove_stale_checkouts)

    def _remove_stale_checkouts(self) -> None:
        """(store thread, under the fence) Delete checkouts a dead engine left and prune their worktree entries,
        running git only in repos that have worktree entries at all."""
        shutil.rmtree(self.ws.state_dir / "work", ignore_errors=True)
        shutil.rmtree(self.ws.state_dir / DEPLOY_DIR, ignore_errors=True)
        for repo in self.ws.repos:
            try:
                _, common = gitio.git_dirs(self.ws.repo_dir(repo))
            except (GitError, OSError):
                continue
            if (common / "worktrees").is_dir():
                with contextlib.suppress(GitError):
                    gitio.git(self.ws.repo_dir(repo), "worktree", "prune")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(min(HEARTBEAT_SECONDS, self.ws.settings.lease_timeout / 5))
            try:
                held = await self.db.call(lease.heartbeat, self.db.store, self._token)
            except LeaseLost as exc:  # taken over, or the store file deleted or replaced
                self._fenced_out(str(exc))
                return
            except CoreError:
                log.exception("heartbeat failed")
                continue
            if not held:
                self._fenced_out(
                    "this engine lost the workspace lease to another engine; stopping work"
                )
                return

    async def _retention(self) -> None:
        """Delete the log lines of runs that ended more than keep_logs_days ago: a minute after
        start, then hourly, a few runs per store call so other writes never wait long. The
        watermark (highest run id pruned) lives in memory: after a restart the first pass looks
        at every ended run once (an indexed read each)."""
        await asyncio.sleep(RETENTION_FIRST_DELAY)
        after = 0
        while True:
            try:
                total = 0
                while True:
                    deleted, last = await self.db.call(
                        retention.prune_logs,
                        self.db.store,
                        self.ws.settings.keep_logs_days,
                        after,
                        max_runs=20,
                    )
                    total += deleted
                    if last == after:
                        break
                    after = last
                if total:
                    log.info(
                        "removed %d log lines of runs older than %d days",
                        total,
                        self.ws.settings.keep_logs_days,
                    )
            except LeaseLost:
                return  # fenced out: the heartbeat stops the engine
            except CoreError:
                log.exception("log retention failed; trying again in an hour")
            await asyncio.sleep(RETENTION_EVERY)

    # -- commands from the feed ------------------------------------------------------------------

    async def _follow_feed(self) -> None:
        async for event in self.feed.subscribe():
            if event.kind == "run.queued":
                self._wake.set()
            elif event.kind == "run.cancel_requested" and event.run_id in self._runs:
                self._runs[event.run_id].set()
            elif event.kind == "deployment" and self.drift is not None:
                self.drift.request(event.repo, event.data.get("environment"), None, "deploy")
            elif event.kind == "notify" and event.repo in self._repos:
                state = self._repos[event.repo]
                if state.config.is_remote:
                    self._spawn(self._fetch(state), f"fetch-{event.repo}")
                else:
                    self._on_ref_change(event.repo)

    async def _execute(self, run_id: int, cancel: asyncio.Event, resume: bool = False) -> None:
        try:
            if resume or await self.db.call(runstate.claim_run, self.db.store, run_id, self.name):
                await RunExecution(self, run_id, cancel, resume).execute()
        finally:
            self._runs.pop(run_id, None)
            self._wake.set()


async def _ticks(feed: EventFeed, every: float) -> AsyncIterator[None]:
    """Yield now, then after every event or `every` seconds, whichever comes first."""
    yield None
    queue = feed.listen()
    try:
        while True:
            await wait_at_most(queue.get(), every)
            yield None
    finally:
        feed.unlisten(queue)
