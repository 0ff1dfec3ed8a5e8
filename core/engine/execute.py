"""Executing one run: read the pipeline at its commit, check it out, run its stages in order.

`RunExecution` checks out the run's commit, plans (or, after a restart, reloads) its stages,
refuses a branch run without a sandbox, passes each deploying stage's approval gate (gate.py)
and environment lock, replaces the checkout by a fresh verified deploy checkout (deploy.py) once
a gated stage's gate passed, runs each step (locally, sandboxed where required, or on a remote runner)
with its environment (stepenv.py), keeps artifacts, and records how the run ended.

Depends on the engine only for what it owns (workspace, store, feed, fence, lease state); may
not depend on ref scanning or scheduling (scan.py, schedule.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import gitio, remote, runstate, safepath, sandbox, secrets
from core.aio import wait_at_most
from core.engine.common import ContextLog, log
from core.engine.deploy import DEPLOY_DIR, make_deploy_checkout
from core.engine.gate import Gate
from core.engine.stepenv import step_env, step_secrets
from core.errors import ConfigError, CoreError, GitError, LeaseLost, StoreError
from core.faults import fault
from core.pipeline import PIPELINE_PATH, Pipeline, Stage, Step
from core.pipeline import parse as parse_pipeline
from core.runner import run_step
from core.store.db import Row, Store
from core.text import one_line
from core.text import size as text_size
from core.workspace import RepoConfig

if TYPE_CHECKING:
    from core.engine import Engine


class RunExecution:
    """One run: read the pipeline at its commit, check it out, run its stages in order."""

    def __init__(
        self, engine: Engine, run_id: int, cancel: asyncio.Event, resume: bool = False
    ) -> None:
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
        run = await self.db.call(
            self.store.query_one, "SELECT * FROM runs WHERE id = ?", (self.run_id,)
        )
        assert run is not None, f"run {self.run_id} vanished"
        repo = self.engine.ws.repo(run["repo"])
        repo_dir = self.engine.ws.repo_dir(repo)
        self.log = ContextLog(log, {"repo": repo.name, "run": self.run_id})
        status, error = "failed", None
        workdir = self.engine.ws.state_dir / "work" / repo.name / str(self.run_id)
        # The checkout (~10 ms of git) runs while the pipeline is read and planned.
        checkout = asyncio.ensure_future(
            asyncio.to_thread(_checkout, repo_dir, workdir, run["commit_sha"])
        )
        try:
            try:
                pipeline = await self._pipeline(repo, repo_dir, run)
                if self.resume:  # a run that waited at a gate when the last engine stopped
                    stages = await self.db.call(
                        self.store.query,
                        "SELECT * FROM stages WHERE run_id = ? ORDER BY idx",
                        (self.run_id,),
                    )
                else:
                    chosen = pipeline.selected(bool(run["on_main"]))
                    if run["environment"]:  # a reconcile deploys to its environment only
                        chosen = [s for s in chosen if s.environment in (None, run["environment"])]
                    plan = [
                        (
                            s.name,
                            s.environment,
                            s in chosen,
                            [(step.name, step.display) for step in s.steps],
                        )
                        for s in pipeline.stages
                    ]
                    stages = await self.call(
                        runstate.create_plan, self.run_id, pipeline.digest, plan
                    )
                run = await self.db.call(
                    self.store.query_one, "SELECT * FROM runs WHERE id = ?", (self.run_id,)
                )
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
            refused = await self._sandbox_refusal(run)
            if refused:
                status, error = "failed", refused
                return
            if self.resume:
                await asyncio.to_thread(self._restore_artifacts)
            selected = [
                (row, stage)
                for row, stage in zip(stages, pipeline.stages, strict=True)
                if row["status"] in ("queued", "waiting")
            ]
            if not selected:
                status = "succeeded"
                return
            status = (
                "failed"  # until every stage passed: an unexpected error never reads as success
            )
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
            if self.cancel.is_set() and status != "succeeded" and not self.engine.fenced_out:
                status = "cancelled"
            if self.at_gate and status == "interrupted":
                self.log.info("engine stopping: the run stays waiting at its approval gate")
            elif not self.engine.fenced_out:  # else the new holder has recovered this run
                await self._record_end(status, error)
            # A fenced-out engine leaves the checkout: the engine that took over owns the state
            # directory now (and removed stale checkouts when it started).
            if self.workdir is not None and not self.engine.fenced_out:
                with contextlib.suppress(CoreError, OSError):
                    await asyncio.shield(
                        self.db.call(
                            self.engine.under_fence, gitio.worktree_remove, repo_dir, self.workdir
                        )
                    )
            await asyncio.shield(self.remote.aclose())  # directories on remote runners, connections
            self.log.info("finished: %s", status)

    async def _record_end(self, status: str, error: str | None) -> None:
        """Record how the run ended, retrying while the store cannot be written (a full disk),
        so the run does not stay `running` once space is back. Stops when the engine stops (the
        next engine's recovery marks the run interrupted)."""
        delay = 0.2
        while True:
            if self.engine.fenced_out:
                return  # the engine that took over recovers this run
            try:
                await asyncio.shield(self.call(runstate.finish_run, self.run_id, status, error))
                return
            except LeaseLost:
                return
            except CoreError as exc:
                self.log.error(
                    "cannot record the end of the run, retrying in %.1fs: %s", delay, exc
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _pipeline(self, repo: RepoConfig, repo_dir: Path, run: Row) -> Pipeline:
        sha = run["commit_sha"]
        label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
        text = await asyncio.to_thread(gitio.read_file, repo_dir, sha, PIPELINE_PATH)
        if text is None:
            raise ConfigError(
                label,
                None,
                "",
                "no pipeline file at this commit",
                f"commit a {PIPELINE_PATH} to the repo",
            )
        return await asyncio.to_thread(
            parse_pipeline,
            text,
            label,
            self.engine.ws.environments,
            tuple(self.engine.ws.secrets),
            self.engine.ws.runner_names,
        )

    async def _stage(self, run: Row, pipeline: Pipeline, row: Row, stage: Stage) -> str:
        if stage.environment is not None:
            blocked = await self.call(
                runstate.deploy_blocked, run["repo"], stage.environment, self.run_id
            )
            outcome, reason = (
                ("failed", blocked[1])
                if blocked and blocked[0] == "locked"
                else (
                    await Gate(
                        ws=self.engine.ws,
                        db=self.db,
                        feed=self.engine.feed,
                        run=run,
                        stage_row=row,
                        environment=stage.environment,
                        cancel=self.cancel,
                        set_error=self._set_error,
                        waiting=self._waiting,
                    ).wait()
                )
            )
            if outcome == "pass":
                fault("gate.pass.after_commit")
                outcome, reason = await self._take_environment(row, stage.environment)
            if outcome == "pass" and stage.environment in self.engine.ws.policies:
                problem = await self._deploy_checkout(run, row)
                if problem:
                    outcome, reason = "failed", problem
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
                await self.call(
                    runstate.set_stage, row["id"], result, f"step {step.name!r} {result}"
                )
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

    async def _sandbox_refusal(self, run: Row) -> str | None:
        """Why this run may not start: a branch run needs a sandbox (or `sandbox: off`)."""
        if run["on_main"] or not self.engine.ws.settings.sandbox:
            return None
        why = await asyncio.to_thread(sandbox.unavailable)
        if why is None:
            return None
        return (
            f"refused: branch runs run in a sandbox and none can be had here ({why}); "
            f"fix user namespaces, or set `settings: sandbox: off` in {self.engine.ws.file.name}"
        )

    def _isolated(self, run: Row, stage: Stage) -> bool:
        """Whether a (local) step of this stage runs in the sandbox: every step of a branch run
        and of a stage that deploys nowhere, unless ahead.yml says `sandbox: off`; a stage with
        `sandbox: true` always."""
        if stage.sandbox:
            return True
        return self.engine.ws.settings.sandbox and (not run["on_main"] or stage.environment is None)

    def _sandbox_plan(self) -> sandbox.Plan:
        """What a sandboxed step sees: its checkout writable; the workspace root and repos
        read-only; the state dir hidden (the mirrors of remote repos shown read-only, for git);
        secret files of ahead.yml empty."""
        assert self.workdir is not None
        ws = self.engine.ws
        state = ws.state_dir

        def inside(path: Path, top: Path) -> bool:
            return path == top or top in path.parents

        repos = [ws.repo_dir(r) for r in ws.repos]
        readonly = [*sandbox.user_config_dirs(), ws.root]  # home first: ws.root may lie inside it
        readonly += [d for d in repos if not inside(d, ws.root) and not inside(d, state)]
        reveal = [state / "mirrors"] if any(r.is_remote for r in ws.repos) else []
        blank = [s.file for s in ws.secrets.values() if s.file is not None]
        return sandbox.Plan(
            workdir=self.workdir,
            hide=(state,),
            readonly=tuple(readonly),
            reveal=tuple(reveal),
            blank=tuple(blank),
        )

    async def _deploy_checkout(self, run: Row, stage_row: Row) -> str | None:
        """Once a gate passed: a fresh checkout of the approved commit in the 0700 deploy dir
        (no sandboxed step can see it), verified against the commit, with the run's kept
        artifacts restored; it replaces the run's checkout. None, or why the stage must fail."""
        ws = self.engine.ws
        repo_dir = ws.repo_dir(ws.repo(run["repo"]))
        dest = ws.state_dir / DEPLOY_DIR / run["repo"] / f"{self.run_id}-{stage_row['id']}"
        try:
            await asyncio.to_thread(
                make_deploy_checkout,
                ws.state_dir / DEPLOY_DIR,
                repo_dir,
                dest,
                run["commit_sha"],
                self.store_rows,
                self.log,
            )
        except (CoreError, OSError) as exc:
            with contextlib.suppress(GitError, OSError):
                await asyncio.shield(asyncio.to_thread(gitio.worktree_remove, repo_dir, dest))
            self.log.error("deploy checkout refused: %s", exc)
            return f"deploy refused: {exc}"
        old, self.workdir = self.workdir, dest
        if old is not None and old != dest:
            with contextlib.suppress(
                GitError, OSError, LeaseLost
            ):  # fenced out: not ours to remove
                await asyncio.shield(
                    self.db.call(self.engine.under_fence, gitio.worktree_remove, repo_dir, old)
                )
        return None

    def _waiting(self, at_gate: bool) -> None:
        """(Gate) Whether the run now waits at its approval gate."""
        self.at_gate = at_gate

    def _set_error(self, reason: str | None) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE runs SET error = ? WHERE id = ?", (reason, self.run_id))

    def _restore_artifacts(self) -> None:
        """(worker thread) A resumed run gets its earlier stages' artifacts back in its checkout."""
        assert self.workdir is not None
        for row in self.store_rows("SELECT path, stored_path FROM artifacts WHERE run_id = ?"):
            # the checkout may hold links (committed ones too): never write through them
            try:
                safepath.copy_inside(
                    self.workdir, row["path"], Path(row["stored_path"])
                )  # in chunks
            except safepath.OutsideCheckout as exc:
                self.log.warning("artifact not restored: %s", exc)

    def store_rows(self, sql: str) -> list[Row]:
        """(worker thread) A read on a short-lived connection of its own."""
        with Store(self.engine.ws.db_path, session=self.store.session) as store:
            return store.query(sql, (self.run_id,))

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
            secret_values, masker = await asyncio.to_thread(
                step_secrets, self.engine.ws, run, stage, step
            )
        except secrets.SecretError as exc:
            await sink([(0, time.time(), f"[ahead] {exc}")])
            await self.call(runstate.finish_step, step_id, "failed", None, str(exc))
            return "failed"
        env = step_env(
            self.engine.ws, run, pipeline, stage, step, self.run_id, token, secret_values
        )
        if self.remote.wants(stage.runner):  # on a remote runner over SSH: core/remote.py
            result = await self.remote.run(
                run,
                pipeline,
                stage,
                step,
                self.workdir,
                env,
                sink,
                timeout,
                self.cancel,
                settings.cancel_grace,
                on_start,
                masker,
            )
        else:
            argv = list(step.argv)
            if self._isolated(run, stage):
                why = await asyncio.to_thread(sandbox.unavailable)
                if why is not None and (stage.sandbox or not run["on_main"]):
                    refusal = f"no sandbox for this step: {why}"
                    await sink([(0, time.time(), f"[ahead] {refusal}")])
                    await self.call(runstate.finish_step, step_id, "failed", None, refusal)
                    return "failed"
                if why is None:
                    argv = sandbox.command(argv, self._sandbox_plan())
            result = await run_step(
                argv,
                self.workdir,
                env,
                sink,
                timeout,
                self.cancel,
                settings.cancel_grace,
                on_start,
                masker,
            )
        if result.status == "succeeded" and step.artifacts:
            problem = await self._keep_artifacts(step_id, step)
            if problem:
                await sink([(10**9, time.time(), f"[ahead] {problem}")])
                result.status, result.error = "failed", problem
        await self.call(
            runstate.finish_step, step_id, result.status, result.exit_code, result.error
        )
        return result.status

    async def _keep_artifacts(self, step_id: int, step: Step) -> str | None:
        assert self.workdir is not None
        keep = self.engine.ws.state_dir / "artifacts" / str(self.run_id)
        cap = self.engine.ws.settings.artifact_max_bytes
        for index, rel in enumerate(step.artifacts):
            dest = keep / f"{step_id}-{index}-{Path(rel).name[:100]}"  # unique, and short enough
            keep.mkdir(parents=True, exist_ok=True)
            try:  # streamed, never whole in memory; refused over the cap before a byte is read
                size, digest = await asyncio.to_thread(
                    safepath.copy_out, self.workdir, rel, dest, cap
                )
            except safepath.OutsideCheckout:
                return f"artifact {rel!r} is not a file inside the checkout"
            except safepath.TooLarge as exc:
                return (
                    f"artifact {one_line(rel)} is {text_size(exc.size)}, over the {text_size(cap)} cap "
                    "(settings.artifact_max_bytes)"
                )
            except (OSError, RuntimeError):
                return f"artifact {rel!r} was not produced"
            await self.call(
                runstate.add_artifact, self.run_id, step_id, rel, str(dest), size, digest
            )
        return None


def _checkout(repo_dir: Path, workdir: Path, sha: str) -> None:
    """(worker thread) The run's checkout of exactly `sha`, verified (see gitio.verify_checkout)."""
    gitio.worktree_add(repo_dir, workdir, sha)
    gitio.verify_checkout(repo_dir, workdir, sha)
