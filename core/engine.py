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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import approvals, gitio, lease, remote, runstate, safepath, secrets, workspace
from core.aio import wait_at_most
from core.drift import REVISION, DriftChecker
from core.errors import ConfigError, CoreError, GitError, StoreError
from core.faults import fault
from core.feed import Event, EventFeed
from core.pipeline import PIPELINE_PATH, Pipeline, Stage, Step
from core.pipeline import parse as parse_pipeline
from core.policy import Policy
from core.runner import kill_leftovers, run_step
from core.secrets import Masker
from core.store.db import AsyncStore, Row, Store
from core.watch import Inotify
from core.workspace import RepoConfig, Workspace

log = logging.getLogger("ahead.engine")
HEARTBEAT_SECONDS = 2.0
LEASE_STALE_SECONDS = lease.STALE_SECONDS


class ContextLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines that carry repo and run."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        prefix = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"[{prefix}] {msg}", kwargs


@dataclass
class RepoState:
    config: RepoConfig
    common_dir: Path | None = None
    refs: dict[str, str] = field(default_factory=dict)
    stamp: tuple[int, ...] = ()
    stamp_paths: list[str] = field(default_factory=list)
    error: str | None = None
    fetched_at: float = 0.0


class Engine:
    """The workspace's executor. See the module docstring."""

    def __init__(self, ws: Workspace, *, only_runs: set[int] | None = None,
                 watch: bool = True, name: str | None = None) -> None:
        self.ws = ws
        self.name = name or f"engine pid {os.getpid()} on {socket.gethostname()}"
        self.only_runs = only_runs
        self._watch = watch and only_runs is None
        self.db = AsyncStore(Store(ws.db_path, session=f"engine:{os.getpid()}"))
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
            await self.db.call(lease.acquire, self.db.store, self.name, self._token,
                               LEASE_STALE_SECONDS)
        except BaseException:
            await self.db.aclose()
            raise
        self._started = True
        await self._recover()
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
        waiting = await self.db.call(self.db.store.query, "SELECT id FROM runs WHERE status = 'waiting'")
        for row in waiting:  # runs at an approval gate survive a restart: pick them up again
            if self.only_runs is None or row["id"] in self.only_runs:
                cancel = asyncio.Event()
                self._runs[row["id"]] = cancel
                self._spawn(self._execute(row["id"], cancel, resume=True), f"run-{row['id']}")
        self._spawn(self._schedule(), "scheduler")
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
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task %s failed", task.get_name(), exc_info=task.exception())

    def subscribe(self) -> AsyncIterator[Event]:
        """Every event from now on (runs, stages, steps, logs, deployments, refs)."""
        return self.feed.subscribe()

    async def wait_run(self, run_id: int, timeout: float | None = None) -> Row:
        """Wait until run `run_id` is finished; returns its row."""
        async def done() -> Row:
            async for _ in _ticks(self.feed, 0.5):
                row = await self.db.call(self.db.store.query_one, "SELECT * FROM runs WHERE id = ?", (run_id,))
                if row is None or row["status"] in runstate.TERMINAL:
                    return row or {}
            return {}
        async with asyncio.timeout(timeout):
            return await done()

    # -- recovery and lease -------------------------------------------------------------------

    async def _recover(self) -> None:
        steps = await self.db.call(runstate.recover, self.db.store, self.name)
        for step in steps:
            if step["token"]:
                killed = await asyncio.to_thread(kill_leftovers, step["token"])
                if killed:
                    log.warning("killed %d leftover process(es) of step %s", killed, step["id"])
        await asyncio.to_thread(self._remove_stale_checkouts)

    def _remove_stale_checkouts(self) -> None:
        """(worker thread) Delete checkouts a dead engine left and prune their worktree entries,
        running git only in repos that have worktree entries at all."""
        shutil.rmtree(self.ws.state_dir / "work", ignore_errors=True)
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
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                held = await self.db.call(lease.heartbeat, self.db.store, self._token)
            except CoreError:
                log.exception("heartbeat failed")
                continue
            if not held:
                log.error("lost the workspace lease to another engine; stopping work")
                self.lost_lease.set()
                for cancel in self._runs.values():
                    cancel.set()
                return

    # -- refs ---------------------------------------------------------------------------------

    async def _scan_all(self) -> None:
        """First look at every repo: record first-seen branches, queue runs for the ones that
        moved while no engine was watching. One thread hop and one transaction for all repos
        (1,000 repos start in a fraction of a second)."""
        known = await self.db.call(runstate.known_refs, self.db.store)
        for state in self._repos.values():
            if state.config.is_remote:
                await self._ensure_repo(state)  # clones a missing mirror
        read = await asyncio.to_thread(self._read_all)
        changes: dict[str, tuple[dict[str, str], list[str]]] = {}
        to_queue: list[tuple[RepoConfig, str, str]] = []
        for name, branches in read.items():
            state = self._repos[name]
            before = known.get(name, {})
            moved = {b: sha for b, sha in branches.items() if before.get(b) != sha}
            removed = [b for b in before if b not in branches]
            state.refs = dict(branches)
            if moved or removed:
                changes[name] = (moved, removed)
            if name in known:  # a repo's existing branches are recorded, not run, when first tracked
                to_queue += [(state.config, b, sha) for b, sha in moved.items() if self._safe(name, b)]
        if changes:
            await self.db.call(runstate.save_refs_many, self.db.store, changes)
        for repo, branch, sha in to_queue:
            await self._queue_commit(repo, branch, sha)

    def _read_all(self) -> dict[str, dict[str, str]]:
        """(worker thread) Locate every repo's git dir and read its branches."""
        result: dict[str, dict[str, str]] = {}
        for name, state in self._repos.items():
            if state.common_dir is None:
                try:
                    _, state.common_dir = gitio.git_dirs(self.ws.repo_dir(state.config))
                    state.error = None
                except (GitError, OSError) as exc:
                    state.error = str(exc)
                    log.warning("repo %s unavailable: %s", name, exc)
                    continue
            result[name] = self._read(state)
        return result

    def _read(self, state: RepoState) -> dict[str, str]:
        """Read a repo's branches and remember the stamp that says when to read them again."""
        assert state.common_dir is not None
        heads = state.common_dir / "refs" / "heads"
        subdirs = [d for d, _, _ in os.walk(heads) if d != str(heads)]
        state.stamp_paths = gitio.stamp_paths(state.common_dir) + subdirs
        state.stamp = gitio.ref_stamp(state.stamp_paths)
        return gitio.read_branches(state.common_dir)

    def _safe(self, repo: str, branch: str) -> bool:
        if gitio.valid_branch(branch):
            return True
        log.warning("repo %s: ignoring branch with an unsafe name %r", repo, branch)
        return False

    async def _ensure_repo(self, state: RepoState) -> None:
        repo = state.config
        try:
            if repo.is_remote and not (self.ws.repo_dir(repo) / "HEAD").exists():
                assert repo.url is not None
                await asyncio.to_thread(gitio.mirror, repo.url, self.ws.repo_dir(repo))
                state.fetched_at = time.monotonic()
            _, state.common_dir = await asyncio.to_thread(gitio.git_dirs, self.ws.repo_dir(repo))
            state.error = None
        except (GitError, OSError) as exc:
            state.error = str(exc)
            log.warning("repo %s unavailable: %s", repo.name, exc)

    async def _scan(self, name: str, force: bool = False) -> None:
        """Re-read a repo's branches (when its stamp moved, or `force`) and queue runs for the
        ones that moved."""
        state = self._repos[name]
        if state.common_dir is None:
            await self._ensure_repo(state)
            if state.common_dir is None:
                return
        if not force and state.stamp_paths and gitio.ref_stamp(state.stamp_paths) == state.stamp:
            return
        branches = self._read(state)
        moved = {b: sha for b, sha in branches.items() if state.refs.get(b) != sha}
        removed = [b for b in state.refs if b not in branches]
        if not moved and not removed:
            return
        previous, state.refs = state.refs, dict(branches)  # before awaiting: a scan running
        try:                                                # meanwhile must not see these moves
            await self.db.call(runstate.save_refs_many, self.db.store, {name: (moved, removed)})
            for branch, sha in moved.items():
                if self._safe(name, branch):
                    await self._queue_commit(state.config, branch, sha)
        except CoreError as exc:  # e.g. the disk is full: the next sweep sees the moves again
            log.error("repo %s: cannot record moved branches, will retry: %s", name, exc)
            state.refs, state.stamp = previous, ()

    async def _queue_commit(self, repo: RepoConfig, branch: str, sha: str) -> None:
        try:
            info = await asyncio.to_thread(gitio.commit, self.ws.repo_dir(repo), sha)
        except GitError as exc:
            log.warning("repo %s: cannot read commit %s: %s", repo.name, sha[:7], exc)
            return
        run_id = await self.db.call(
            runstate.queue_run, self.db.store, repo=repo.name, branch=branch,
            ref=f"refs/heads/{branch}", sha=sha, on_main=branch == repo.branch, trigger="commit",
            actor=f"git:{info.email}", author=info.author, author_email=info.email,
            subject=info.subject, committed_at=info.time, supersede=True)
        ContextLog(log, {"repo": repo.name, "run": run_id}).info("queued for %s %s", branch, sha[:7])
        self._wake.set()
        if branch == repo.branch and self.drift is not None:  # main moved: revision drift changed
            self.drift.request(repo.name, None, REVISION, "commit")

    def _start_inotify(self) -> None:
        try:
            notify = Inotify(self._on_ref_change, self._on_overflow)
        except (OSError, AttributeError) as exc:
            log.info("inotify unavailable (%s); polling refs every %.1fs", exc,
                     self.ws.settings.poll_interval)
            return
        for name, state in self._repos.items():
            if state.common_dir is not None:
                notify.watch_repo(name, state.common_dir)
        asyncio.get_running_loop().add_reader(notify.fd, notify.read)
        self._inotify = notify

    def _on_ref_change(self, name: str) -> None:
        if name not in self._dirty:
            self._dirty.add(name)
            self._spawn(self._rescan(name), f"scan-{name}")

    async def _rescan(self, name: str) -> None:
        self._dirty.discard(name)
        await self._scan(name, force=True)

    def _on_overflow(self) -> None:
        for name in self._repos:
            self._on_ref_change(name)

    async def _poll(self) -> None:
        """The safety net under inotify (and the detector where inotify is missing): a few
        `stat` calls per repo, reading refs only where a stamp moved."""
        sweeps = 0
        while True:
            interval = self.ws.settings.poll_interval
            if self._inotify is not None:
                interval = max(10 * interval, 5.0)  # inotify does the work; this only covers gaps
            await asyncio.sleep(interval)
            sweeps += 1
            await self.sweep(force=sweeps % 30 == 0)  # now and then re-read every ref file

    async def sweep(self, force: bool = False) -> None:
        """One detection sweep over every repo."""
        for name, state in self._repos.items():
            if force or state.common_dir is None or gitio.ref_stamp(state.stamp_paths) != state.stamp:
                await self._scan(name, force=True)

    async def _fetch_remotes(self) -> None:
        while True:
            now = time.monotonic()
            for state in self._repos.values():
                repo = state.config
                if repo.is_remote and now - state.fetched_at >= repo.fetch_interval:
                    await self._fetch(state)
            await asyncio.sleep(1.0)

    async def _fetch(self, state: RepoState) -> None:
        assert state.config.url is not None
        try:
            await asyncio.to_thread(gitio.mirror, state.config.url, self.ws.repo_dir(state.config))
            state.error = None
        except GitError as exc:
            state.error = str(exc)
            log.warning("fetch of %s failed: %s", state.config.name, exc)
        state.fetched_at = time.monotonic()
        await self._scan(state.config.name, force=True)

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

    # -- scheduling and execution ---------------------------------------------------------------

    async def _schedule(self) -> None:
        cap = self.ws.settings.max_parallel_runs
        while True:
            self._wake.clear()
            if not self.lost_lease.is_set() and len(self._runs) < cap:
                queued = await self.db.call(self.db.store.query,
                                            "SELECT id, repo, branch, on_main FROM runs "
                                            "WHERE status = 'queued' ORDER BY id LIMIT 200")
                busy = await self.db.call(self.db.store.query, "SELECT id, repo, branch FROM runs "
                                          "WHERE status IN ('running', 'waiting')")
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
            await self.db.call(runstate.note, self.db.store, run_id,
                               f"queued behind run #{ahead} of {branch} (one run per branch at a time)")

    async def _execute(self, run_id: int, cancel: asyncio.Event, resume: bool = False) -> None:
        try:
            if resume or await self.db.call(runstate.claim_run, self.db.store, run_id, self.name):
                await RunExecution(self, run_id, cancel, resume).execute()
        finally:
            self._runs.pop(run_id, None)
            self._wake.set()


class RunExecution:
    """One run: read the pipeline at its commit, check it out, run its stages in order."""

    def __init__(self, engine: Engine, run_id: int, cancel: asyncio.Event, resume: bool = False) -> None:
        self.resume = resume
        # Waiting for approval (or resuming a run that was): an engine stop leaves it waiting.
        self.at_gate = resume
        self.engine = engine
        self.db = engine.db
        self.store = engine.db.store
        self.run_id = run_id
        self.cancel = cancel
        self.log = ContextLog(log, {"run": run_id})
        self.workdir: Path | None = None
        self.remote = remote.RemoteSteps(engine.ws)  # stages with `runner:` on a remote host

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.db.call(fn, self.store, *args, **kwargs)

    async def execute(self) -> None:
        run = await self.db.call(self.store.query_one, "SELECT * FROM runs WHERE id = ?", (self.run_id,))
        assert run is not None, f"run {self.run_id} vanished"
        repo = self.engine.ws.repo(run["repo"])
        repo_dir = self.engine.ws.repo_dir(repo)
        self.log = ContextLog(log, {"repo": repo.name, "run": self.run_id})
        status, error = "failed", None
        workdir = self.engine.ws.state_dir / "work" / repo.name / str(self.run_id)
        # The checkout (~10 ms of git) runs while the pipeline is read and planned.
        checkout = asyncio.ensure_future(
            asyncio.to_thread(gitio.worktree_add, repo_dir, workdir, run["commit_sha"]))
        try:
            try:
                pipeline = await self._pipeline(repo, repo_dir, run)
                if self.resume:  # a run that waited at a gate when the last engine stopped
                    stages = await self.db.call(self.store.query, "SELECT * FROM stages WHERE run_id = ? "
                                                "ORDER BY idx", (self.run_id,))
                else:
                    chosen = pipeline.selected(bool(run["on_main"]))
                    if run["environment"]:  # a reconcile deploys to its environment only
                        chosen = [s for s in chosen if s.environment in (None, run["environment"])]
                    plan = [(s.name, s.environment, s in chosen,
                             [(step.name, step.display) for step in s.steps]) for s in pipeline.stages]
                    stages = await self.call(runstate.create_plan, self.run_id, pipeline.digest, plan)
                run = await self.db.call(self.store.query_one, "SELECT * FROM runs WHERE id = ?",
                                         (self.run_id,))
                assert run is not None
            finally:
                try:
                    await asyncio.shield(checkout)
                except asyncio.CancelledError:  # the engine is stopping: let git finish first,
                    await asyncio.wait({checkout})  # so the checkout can be removed below
                    if workdir.exists():
                        self.workdir = workdir
                    raise
                except (GitError, OSError):
                    pass
                if workdir.exists():
                    self.workdir = workdir
            checkout.result()  # a failed checkout fails the run (GitError below)
            if self.resume:
                await asyncio.to_thread(self._restore_artifacts)
            selected = [(row, stage) for row, stage in zip(stages, pipeline.stages, strict=True)
                        if row["status"] in ("queued", "waiting")]
            if not selected:
                status = "succeeded"
                return
            status = "failed"  # until every stage passed: an unexpected error never reads as success
            for row, stage in selected:
                if self.cancel.is_set():
                    status = "cancelled"
                    break
                outcome = await self._stage(run, pipeline, row, stage)
                if outcome != "succeeded":
                    status = outcome
                    break
            else:
                status = "succeeded"
        except ConfigError as exc:
            status, error = "failed", str(exc)
            self.log.warning("pipeline invalid: %s", exc)
        except GitError as exc:
            status, error = "failed", str(exc)
            self.log.warning("git failed: %s", exc)
        except StoreError as exc:  # e.g. the disk is full: what the run did is not all recorded
            status, error = "failed", f"stopped: {exc}"
            self.log.error("store write failed: %s", exc)
        except OSError as exc:  # the state directory (artifacts, checkouts) could not be written
            status, error = "failed", f"stopped: {exc}"
            self.log.error("file system error: %s", exc)
        except asyncio.CancelledError:
            status, error = "interrupted", "the engine stopped while this run was in progress"
            raise
        finally:
            if self.cancel.is_set() and status != "succeeded" and not self.engine.lost_lease.is_set():
                status = "cancelled"
            if self.at_gate and status == "interrupted":
                self.log.info("engine stopping: the run stays waiting at its approval gate")
            elif not self.engine.lost_lease.is_set():  # else the new holder has recovered this run
                await self._record_end(status, error)
            if self.workdir is not None:
                with contextlib.suppress(GitError, OSError):
                    await asyncio.shield(asyncio.to_thread(gitio.worktree_remove, repo_dir, self.workdir))
            await asyncio.shield(self.remote.aclose())  # directories on remote runners, connections
            self.log.info("finished: %s", status)

    async def _record_end(self, status: str, error: str | None) -> None:
        """Record how the run ended, retrying while the store cannot be written (a full disk),
        so the run does not stay `running` once space is back. Stops when the engine stops (the
        next engine's recovery marks the run interrupted)."""
        delay = 0.2
        while True:
            try:
                await asyncio.shield(self.call(runstate.finish_run, self.run_id, status, error))
                return
            except CoreError as exc:
                self.log.error("cannot record the end of the run, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _pipeline(self, repo: RepoConfig, repo_dir: Path, run: Row) -> Pipeline:
        sha = run["commit_sha"]
        label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
        text = await asyncio.to_thread(gitio.read_file, repo_dir, sha, PIPELINE_PATH)
        if text is None:
            raise ConfigError(label, None, "", "no pipeline file at this commit",
                              f"commit a {PIPELINE_PATH} to the repo")
        return await asyncio.to_thread(parse_pipeline, text, label, self.engine.ws.environments,
                                       tuple(self.engine.ws.secrets),
                                       self.engine.ws.runner_names)

    async def _stage(self, run: Row, pipeline: Pipeline, row: Row, stage: Stage) -> str:
        if stage.environment is not None:
            blocked = await self.call(runstate.deploy_blocked, run["repo"], stage.environment, self.run_id)
            outcome, reason = ("failed", blocked[1]) if blocked and blocked[0] == "locked" else (
                await Gate(self, run, row, stage.environment).wait())
            if outcome == "pass":
                fault("gate.pass.after_commit")
                outcome, reason = await self._take_environment(row, stage.environment)
            if outcome != "pass":
                await self.call(runstate.set_stage, row["id"], outcome, reason)
                await self.db.call(self._set_error, reason)
                return outcome
        else:
            await self.call(runstate.set_stage, row["id"], "running")
        steps = await self.call(runstate.steps_of, row["id"])
        for step_row, step in zip(steps, stage.steps, strict=True):
            if self.cancel.is_set():
                await self.call(runstate.set_stage, row["id"], "cancelled")
                return "cancelled"
            result = await self._step(run, pipeline, stage, step_row, step)
            if result != "succeeded":
                await self.call(runstate.set_stage, row["id"], result, f"step {step.name!r} {result}")
                return result
        if stage.environment is not None:
            await self.call(runstate.record_deployment, row["id"])
        else:
            await self.call(runstate.set_stage, row["id"], "succeeded")
        return "succeeded"

    async def _take_environment(self, row: Row, environment: str) -> tuple[str, str]:
        """Take the environment lock and start the deploying stage (one transaction): ('pass',
        '') once started; waits while another run deploys there; ('failed', why) when the
        environment is locked for an operator, ('cancelled', ...) on cancel."""
        gated = environment in self.engine.ws.policies
        queue = self.engine.feed.listen()
        shown = ""
        try:
            while True:
                blocked = await self.call(runstate.start_deploy, row["id"], gated)
                if blocked is None:
                    if shown:
                        await self.db.call(self._set_error, None)
                    return "pass", ""
                kind, reason = blocked
                if kind == "locked":
                    return "failed", reason
                if kind == "moved":  # a reconcile overtaken by a newer deploy
                    return "skipped", reason
                if self.cancel.is_set():
                    return "cancelled", f"cancelled while waiting: {reason}"
                if reason != shown:
                    shown = reason
                    self.log.info("waiting: %s", reason)
                    await self.call(runstate.note, self.run_id, f"waiting: {reason}")
                await wait_at_most(queue.get(), 1.0)
        finally:
            self.engine.feed.unlisten(queue)

    def _set_error(self, reason: str | None) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE runs SET error = ? WHERE id = ?", (reason, self.run_id))

    def _restore_artifacts(self) -> None:
        """(worker thread) A resumed run gets its earlier stages' artifacts back in its checkout."""
        assert self.workdir is not None
        for row in self.store_rows("SELECT path, stored_path FROM artifacts WHERE run_id = ?"):
            # the checkout may hold links (committed ones too): never write through them
            try:
                safepath.write_inside(self.workdir, row["path"], Path(row["stored_path"]).read_bytes())
            except safepath.OutsideCheckout as exc:
                self.log.warning("artifact not restored: %s", exc)

    def store_rows(self, sql: str) -> list[Row]:
        """(worker thread) A read on a short-lived connection of its own."""
        with Store(self.engine.ws.db_path, session=self.store.session) as store:
            return store.query(sql, (self.run_id,))

    def _env(self, run: Row, pipeline: Pipeline, stage: Stage, step: Step, token: str,
             secret_values: dict[str, str] | None = None) -> dict[str, str]:
        hidden = secrets.hidden_sources(self.engine.ws.secrets.values())  # secret sources never leak through
        env = {k: v for k, v in os.environ.items() if not k.startswith("AHEAD_") and k not in hidden}
        env.update(pipeline.env)
        env.update(stage.env)
        env.update(step.env)
        env.update({
            "AHEAD_REPO": run["repo"],
            "AHEAD_COMMIT": run["commit_sha"],
            "AHEAD_REF": run["ref"],
            "AHEAD_BRANCH": run["branch"],
            "AHEAD_AUTHOR": f"{run['author']} <{run['author_email']}>",
            "AHEAD_SUBJECT": run["subject"],
            "AHEAD_ENVIRONMENT": stage.environment or "",
            "AHEAD_STAGE": stage.name,
            "AHEAD_RUN_ID": str(self.run_id),
            "AHEAD_WORKSPACE": str(self.engine.ws.root),
            "AHEAD_STEP_TOKEN": token,
        })
        env.update(secret_values or {})
        return {k: v.replace("\x00", "") for k, v in env.items()}

    def _secrets(self, stage: Stage, step: Step) -> tuple[dict[str, str], Masker]:
        """(worker thread) The values of the secrets this step declares, and a masker for every
        readable secret of the workspace (a step may print one it was not given).

        Raises:
            SecretError: a declared secret cannot be read (the message holds no value).
        """
        wanted = set(stage.secrets) | set(step.secrets)
        values: dict[str, str] = {}
        readable: list[str] = []
        for name, source in self.engine.ws.secrets.items():
            try:
                value = secrets.read(source)
            except secrets.SecretError:
                if name in wanted:
                    raise
                continue
            readable.append(value)
            if name in wanted:
                values[name] = value
        return values, Masker(readable)

    async def _step(self, run: Row, pipeline: Pipeline, stage: Stage, row: Row, step: Step) -> str:
        assert self.workdir is not None
        token = uuid.uuid4().hex
        step_id = row["id"]
        settings = self.engine.ws.settings
        timeout = step.timeout or stage.timeout or settings.step_timeout

        async def sink(lines: list[tuple[int, float, str]]) -> None:
            await self.call(runstate.append_logs, self.run_id, run["repo"], step_id, lines)

        async def on_start(pid: int) -> None:
            await self.call(runstate.start_step, step_id, pid, token)

        try:  # read only now: a gated stage's steps start after its gate passed
            secret_values, masker = await asyncio.to_thread(self._secrets, stage, step)
        except secrets.SecretError as exc:
            await sink([(0, time.time(), f"[ahead] {exc}")])
            await self.call(runstate.finish_step, step_id, "failed", None, str(exc))
            return "failed"
        env = self._env(run, pipeline, stage, step, token, secret_values)
        if self.remote.wants(stage.runner):  # on a remote runner over SSH: core/remote.py
            result = await self.remote.run(run, pipeline, stage, step, self.workdir, env, sink, timeout,
                                           self.cancel, settings.cancel_grace, on_start, masker)
        else:
            result = await run_step(list(step.argv), self.workdir, env, sink, timeout, self.cancel,
                                    settings.cancel_grace, on_start, masker)
        if result.status == "succeeded" and step.artifacts:
            problem = await self._keep_artifacts(step_id, step)
            if problem:
                await sink([(10**9, time.time(), f"[ahead] {problem}")])
                result.status, result.error = "failed", problem
        await self.call(runstate.finish_step, step_id, result.status, result.exit_code, result.error)
        return result.status

    async def _keep_artifacts(self, step_id: int, step: Step) -> str | None:
        assert self.workdir is not None
        keep = self.engine.ws.state_dir / "artifacts" / str(self.run_id)
        for index, rel in enumerate(step.artifacts):
            try:
                data = await asyncio.to_thread(safepath.read_inside, self.workdir, rel)
            except safepath.OutsideCheckout:
                return f"artifact {rel!r} is not a file inside the checkout"
            except (OSError, RuntimeError):
                return f"artifact {rel!r} was not produced"
            dest = keep / f"{step_id}-{index}-{Path(rel).name[:100]}"  # unique, and short enough
            keep.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(dest.write_bytes, data)
            await self.call(runstate.add_artifact, self.run_id, step_id, rel, str(dest), len(data),
                            hashlib.sha256(data).hexdigest())
        return None


class Gate:
    """An approval gate in front of a stage that deploys to an environment with a policy.

    Opens (or, after a restart, finds) the change request, then re-checks it whenever a
    decision or cancel arrives and every few seconds (expiry, freeze): pass, or end the run.
    The policy is read fresh from ahead.yml at every check; a broken file keeps the gate shut.
    """

    RECHECK_SECONDS = 5.0

    def __init__(self, execution: RunExecution, run: Row, stage_row: Row, environment: str) -> None:
        self.x = execution
        self.run = run
        self.stage_row = stage_row
        self.environment = environment

    def _workspace(self) -> tuple[Workspace | None, str]:
        try:
            return workspace.read(self.x.engine.ws.file), ""
        except ConfigError as exc:
            return None, f"gate shut: {exc}"

    async def wait(self) -> tuple[str, str]:
        """('pass', reason) or the stage's final status ('failed', 'cancelled', 'skipped')."""
        ws, problem = await asyncio.to_thread(self._workspace)
        # After a restart the run's latest request stands, whatever happened to it meanwhile
        # (decided, superseded, cancelled); a voided one is replaced.
        change = await self.x.db.call(self.x.store.query_one, "SELECT * FROM change_requests WHERE "
                                      "run_id = ? AND stage_id = ? AND status != 'voided' "
                                      "ORDER BY id DESC LIMIT 1", (self.run["id"], self.stage_row["id"]))
        if ws is not None and self.environment not in ws.policies and change is None:
            return "pass", "no policy"
        queue = self.x.engine.feed.listen()
        self.x.at_gate = True
        try:
            change_id = change["id"] if change else None
            shown = ""
            while True:
                if self.x.cancel.is_set():
                    await self.x.db.call(self._cancel)
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
                    outcome, reason, row = await self.x.db.call(approvals.check_gate, self.x.store, ws, change_id)
                    if outcome == "pass":
                        await self.x.db.call(self.x._set_error, None)  # no longer waiting
                        return "pass", reason
                    if outcome == "stale":  # reopen under the policy as it is now, not as last read
                        change_id = None
                        ws, problem = await asyncio.to_thread(self._workspace)
                        continue
                    if outcome == "fail":
                        status = {"superseded": "skipped", "cancelled": "cancelled"}.get(row["status"], "failed")
                        return status, f"change {row['id']} {row['status']}: {reason}"
                if reason != shown:
                    shown = reason
                    await self.x.db.call(self.x._set_error, f"waiting for approval: {reason}")
                await wait_at_most(self._next(queue), self.RECHECK_SECONDS)
                ws, problem = await asyncio.to_thread(self._workspace)
        finally:
            self.x.at_gate = False if not _cancelled() else self.x.at_gate
            self.x.engine.feed.unlisten(queue)

    async def _next(self, queue: asyncio.Queue[Event | None]) -> None:
        """Until an event about this run arrives (a decision, a cancel, a supersession)."""
        while True:
            event = await queue.get()
            if event is None or event.run_id == self.run["id"] or event.kind == "deployment":
                return

    async def _open(self, policy: Policy) -> int:
        repo_dir = self.x.engine.ws.repo_dir(self.x.engine.ws.repo(self.run["repo"]))
        base = await self.x.db.call(approvals.deployed_now, self.x.store, self.run["repo"], self.environment)
        head = self.run["commit_sha"]
        commits, diffstat, people = await asyncio.to_thread(change_contents, repo_dir, base, head)
        run = await self.x.db.call(self.x.store.query_one, "SELECT * FROM runs WHERE id = ?", (self.run["id"],))
        assert run is not None
        return await self.x.db.call(approvals.open_change, self.x.store, policy, run=run,
                                    stage_id=self.stage_row["id"], base=base, commits=commits,
                                    diffstat=diffstat, people=people)

    def _cancel(self) -> None:
        with self.x.store.transaction():
            approvals.cancel_open(self.x.store, self.run["id"], "engine")


def _cancelled() -> bool:
    """Whether the current task is being cancelled (the engine is stopping)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def change_contents(repo_dir: Path, base: str | None, head: str
                    ) -> tuple[list[dict[str, Any]], str, dict[str, dict[str, str]]]:
    """(worker thread) The commits in base..head (the newest 200, for people to read), the diff
    stat, and every author and committer email of the whole range with a commit of theirs (for
    the policy: a long range must not hide an author)."""
    commits = gitio.log_range(repo_dir, base, head, limit=200)
    people = gitio.range_people(repo_dir, base, head)
    empty_tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    stat = gitio.git(repo_dir, "diff", "--stat=100", "--end-of-options", base or empty_tree, head,
                     check=False)
    lines = stat.splitlines()
    if len(lines) > 60:
        lines = lines[:59] + [f" ... {len(lines) - 60} more files", lines[-1]]
    return ([{"sha": c.sha, "author": c.author, "email": c.email, "committer_email": c.committer_email,
              "subject": c.subject, "time": c.time} for c in commits], "\n".join(lines), people)


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


