"""Noticing commits: the engine's view of every repo's branches and how it keeps it current.

Reads each repo's refs at start (`_scan_all`), then re-reads a repo when inotify reports a
change to its ref files or when the stat-poll safety net sees a stamp move (`_poll`, `sweep`);
fetches remote repos on their interval; queues one run per moved branch (`_queue_commit`,
superseding older queued runs of that branch) and wakes the scheduler.

`RefScanning` is a mixin of `Engine` (core/engine/__init__.py): the engine's state it uses is
declared at the top of the class. It may not depend on the execution of runs (execute.py,
gate.py) nor on the scheduler: its only outputs are rows in the store (refs, queued runs),
the scheduler's wake-up event and drift requests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import gitio, runstate
from core.drift import REVISION, DriftChecker
from core.engine.common import ContextLog, log
from core.errors import CoreError, GitError
from core.store.db import AsyncStore
from core.watch import Inotify
from core.workspace import RepoConfig, Workspace


@dataclass
class RepoState:
    config: RepoConfig
    common_dir: Path | None = None
    refs: dict[str, str] = field(default_factory=dict)
    stamp: tuple[int, ...] = ()
    stamp_paths: list[str] = field(default_factory=list)
    error: str | None = None
    fetched_at: float = 0.0


class RefScanning:
    """The engine's ref scanning (see the module docstring)."""

    ws: Workspace
    db: AsyncStore
    drift: DriftChecker | None
    _repos: dict[str, RepoState]
    _dirty: set[str]
    _inotify: Inotify | None
    _wake: asyncio.Event
    _spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]

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
            if (
                name in known
            ):  # a repo's existing branches are recorded, not run, when first tracked
                to_queue += [
                    (state.config, b, sha) for b, sha in moved.items() if self._safe(name, b)
                ]
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
        try:  # meanwhile must not see these moves
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
            runstate.queue_run,
            self.db.store,
            repo=repo.name,
            branch=branch,
            ref=f"refs/heads/{branch}",
            sha=sha,
            on_main=branch == repo.branch,
            trigger="commit",
            actor=f"git:{info.email}",
            author=info.author,
            author_email=info.email,
            subject=info.subject,
            committed_at=info.time,
            supersede=True,
        )
        ContextLog(log, {"repo": repo.name, "run": run_id}).info(
            "queued for %s %s", branch, sha[:7]
        )
        self._wake.set()
        if branch == repo.branch and self.drift is not None:  # main moved: revision drift changed
            self.drift.request(repo.name, None, REVISION, "commit")

    def _start_inotify(self) -> None:
        try:
            notify = Inotify(self._on_ref_change, self._on_overflow)
        except (OSError, AttributeError) as exc:
            log.info(
                "inotify unavailable (%s); polling refs every %.1fs",
                exc,
                self.ws.settings.poll_interval,
            )
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
            if (
                force
                or state.common_dir is None
                or gitio.ref_stamp(state.stamp_paths) != state.stamp
            ):
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
