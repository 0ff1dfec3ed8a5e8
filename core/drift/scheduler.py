"""The drift checker: runs checks (at most settings.drift_parallel at once, one at a time per
target across processes: a file lock) and records each finding; in the engine, also its
schedule: every `every:` (settings.drift_interval by default) for files and command targets,
when refs or the deployed commit move for revision targets, and right after each deploy.

The CLI and consoles use it on demand (`check`), the engine runs `run()` as one of its tasks.
May not depend on the engine: requests come in through `request()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from core.aio import wait_at_most
from core.drift.checks import check_command, check_files_local, check_revision
from core.drift.mirror import mirror_remote
from core.drift.records import record, record_many
from core.drift.targets import (
    REVISION,
    Finding,
    PipelineCache,
    Target,
    deployed_commits,
    discover,
    unknown,
)
from core.errors import CoreError, NotFound
from core.store.db import AsyncStore, Row
from core.workspace import Workspace

log = logging.getLogger("ahead.drift")


class DriftChecker:
    """Runs checks and records them. One per engine (scheduled) or per client (on demand)."""

    def __init__(self, ws: Workspace, db: AsyncStore, parallel: int | None = None) -> None:
        self.ws = ws
        self.db = db
        self.limit = asyncio.Semaphore(parallel or ws.settings.drift_parallel)
        self.root = ws.state_dir / "drift"
        self._requests: asyncio.Queue[tuple[str | None, str | None, str | None, str]] = (
            asyncio.Queue()
        )
        self._pipelines: PipelineCache = {}

    async def targets(
        self, repo: str | None = None, environment: str | None = None, name: str | None = None
    ) -> list[Target]:
        if repo is not None:
            self.ws.repo(repo)  # NotFound names the known repos
        if environment is not None and environment not in self.ws.environments:
            raise NotFound(
                f"no environment named {environment!r} (known: {', '.join(self.ws.environments)})"
            )
        deployed = await self.db.call(deployed_commits, self.db.store)
        found = await asyncio.to_thread(discover, self.ws, deployed, self._pipelines)
        chosen = [
            t
            for t in found
            if (repo is None or t.repo == repo)
            and (environment is None or t.environment == environment)
            and (name is None or t.name == name)
        ]
        if name is not None and not chosen:
            raise NotFound(f"no drift target {name!r} for {repo}/{environment}")
        return chosen

    async def check(self, targets: list[Target], reason: str) -> list[tuple[Target, Finding]]:
        """Check targets in parallel (capped); each records its finding. Never raises for a
        target: a failure is that target's `unknown`. Revision targets (a ref read and at most
        one `git rev-list` each) are checked together and recorded in one transaction."""
        revisions = [t for t in targets if t.spec is None]
        others = [t for t in targets if t.spec is not None]
        results = list(await asyncio.gather(*(self._check_one(t, reason) for t in others)))
        if revisions:
            started = time.time()
            found = await asyncio.to_thread(
                lambda: [(t, check_revision(self.ws, t)) for t in revisions]
            )
            await self.db.call(record_many, self.db.store, found, reason, started, time.time())
            results += found
        return results

    async def _check_one(self, target: Target, reason: str) -> tuple[Target, Finding]:
        spec = target.spec
        timeout = (
            spec.timeout if spec and spec.timeout else None
        ) or self.ws.settings.drift_timeout
        async with self.limit:
            started = time.time()
            try:
                async with asyncio.timeout(timeout + 5):
                    finding = await self._run(target, timeout)
            except TimeoutError:
                finding = unknown(f"the check took longer than {timeout:.0f}s")
            except CoreError as exc:
                finding = unknown(str(exc))
            except OSError as exc:
                finding = unknown(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "))
            except Exception as exc:  # a bug: recorded as unknown (never in sync), and logged
                log.exception(
                    "drift check of %s/%s/%s failed", target.repo, target.environment, target.name
                )
                finding = unknown(f"the check failed: {type(exc).__name__}")
            finished = time.time()
        await self.db.call(record, self.db.store, target, finding, reason, started, finished)
        return target, finding

    async def _run(self, target: Target, timeout: float) -> Finding:
        spec = target.spec
        if spec is None:
            return await asyncio.to_thread(check_revision, self.ws, target)
        if target.commit is None:
            return unknown("nothing deployed yet")
        base = self.root / target.key
        base.mkdir(parents=True, exist_ok=True)
        repo_dir = self.ws.repo_dir(self.ws.repo(target.repo))
        async with _Lock(base / "lock"):
            if spec.kind == "files":
                unreadable: list[str] = []
                live = Path(spec.live) if os.path.isabs(spec.live) else self.ws.root / spec.live
                if spec.host:
                    live = base / "mirror"
                    unreadable = await mirror_remote(
                        self.ws.state_dir, spec.host, spec.live, live, timeout
                    )
                finding = await asyncio.to_thread(
                    check_files_local,
                    repo_dir,
                    base / "git",
                    target.commit,
                    spec.path,
                    live,
                    timeout,
                    unreadable,
                )
                if spec.host:
                    finding.detail["live"] = f"{spec.host}:{spec.live}"
                return finding
            return await check_command(self.ws, target, spec, repo_dir, base, timeout)

    # -- the engine's loop --------------------------------------------------------------------

    def request(
        self, repo: str | None, environment: str | None, name: str | None, reason: str
    ) -> None:
        self._requests.put_nowait((repo, environment, name, reason))

    async def run(self) -> None:
        """(engine task) Check what is due, what was asked for, and after each deploy."""
        targets: list[Target] = []
        refreshed = time.time() - 25  # the first look 5 s after start: not in the engine's start-up
        running: dict[str, asyncio.Task[Any]] = {}

        def start(chosen: list[Target], reason: str) -> None:
            for t in chosen:
                key = f"{t.repo}\0{t.environment}\0{t.name}"
                if key not in running:
                    running[key] = asyncio.create_task(self.check([t], reason), name=key)
                    running[key].add_done_callback(done)

        def done(task: asyncio.Task[Any]) -> None:
            running.pop(task.get_name(), None)

        try:
            while True:
                now = time.time()
                if now - refreshed > 30 or not self._requests.empty():
                    with contextlib.suppress(CoreError, OSError):
                        targets = await self.targets()
                        refreshed = now
                while not self._requests.empty():
                    repo, env, name, reason = self._requests.get_nowait()
                    start(
                        [
                            t
                            for t in targets
                            if (repo is None or t.repo == repo)
                            and t.spec is not None
                            and (env is None or t.environment == env)
                            and (name is None or t.name == name)
                        ],
                        reason,
                    )
                    # revision targets of the repo are due by the rule below once the refs moved
                try:
                    rows = await self.db.call(
                        self.db.store.query,
                        "SELECT repo, environment, target, "
                        "checked_at, commit_sha, fingerprint FROM drift",
                    )
                except CoreError as exc:  # e.g. the store is unreadable for a moment: try again
                    log.warning("drift: cannot read the last checks: %s", exc)
                    rows = []
                    targets = []
                last = {(r["repo"], r["environment"], r["target"]): r for r in rows}
                due = [
                    t
                    for t in targets
                    if self._due(t, last.get((t.repo, t.environment, t.name)), now)
                ]
                start([t for t in due if t.spec is not None], "schedule")
                revisions = [t for t in due if t.spec is None and REVISION not in running]
                if revisions:  # one batch: with many repos, one transaction instead of thousands
                    running[REVISION] = asyncio.create_task(
                        self.check(revisions, "refs moved"), name=REVISION
                    )
                    running[REVISION].add_done_callback(done)
                item = await wait_at_most(self._requests.get(), 5.0)
                if item is not None:
                    self._requests.put_nowait(item)
        finally:
            for task in running.values():
                task.cancel()

    def _due(self, target: Target, row: Row | None, now: float) -> bool:
        """Files and command targets: every `every:` (settings.drift_interval by default).
        Revision: when the deployed commit or main moved since its last check (nothing else can
        change it), and at least every settings.drift_revision_interval."""
        if row is None:
            return True
        if target.spec is None:
            moved = row["commit_sha"] != target.commit or (
                target.main is not None and row["fingerprint"] != f"rev:{target.main}"
            )
            return bool(
                moved or now - row["checked_at"] >= self.ws.settings.drift_revision_interval
            )
        every = target.spec.every or self.ws.settings.drift_interval
        return bool(now - row["checked_at"] >= every)


class _Lock:
    """An exclusive flock on a file: two checks of one target never overlap (any process). Taken
    without blocking the event loop: while another process checks the target, this one waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    async def __aenter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                await asyncio.sleep(0.2)
            except BaseException:
                os.close(self.fd)
                raise

    async def __aexit__(self, *exc: object) -> None:
        os.close(self.fd)
