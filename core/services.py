"""What clients ask of the engine: trigger, cancel, retry, and the read models (status, runs,
a run's detail, logs, pending commits).

Each call acts on the store directly and answers at once; the engine sees the new state through
the event feed and acts on it. Blocking (git and SQLite): the CLI calls it directly, async code
through a thread. Depends on core.store, core.gitio, core.runstate, core.workspace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import gitio, runstate, states
from core.errors import GitError, InvalidRequest, NotFound, PermissionDenied
from core.store.db import Row, Store
from core.workspace import RepoConfig, Workspace, WorkspaceWatch, current_os_user


@dataclass(frozen=True)
class Actor:
    """Who is acting: an operator of the workspace, with their roles.

    Locally the operator is the one whose `os_users` lists the current OS user; `--as NAME` is
    allowed only when NAME's entry lists the current OS user. No match: read-only (`viewer`).
    A workspace that lists no operators at all is a single-user workspace: the OS user may
    trigger, cancel and retry (but, with no approvers, never approve).
    """

    name: str
    roles: tuple[str, ...] = ("operator",)
    os_user: str | None = None  # locally: the OS user (from the uid) the operator was found by

    @classmethod
    def local(cls, ws: Workspace, as_name: str | None = None) -> Actor:
        user = current_os_user()
        if as_name is not None:
            operator = ws.operator(as_name)
            if operator is None:
                raise PermissionDenied(
                    f"--as {as_name}: no operator named {as_name!r} in {ws.file}"
                )
            if user not in operator.os_users:
                raise PermissionDenied(
                    f"--as {as_name}: {as_name}'s os_users in {ws.file} do not "
                    f"list the OS user {user!r}"
                )
            return cls(operator.name, operator.roles, user)
        operator = ws.operator_for_os_user(user)
        if operator is not None:
            return cls(operator.name, operator.roles, user)
        if not ws.operators:
            return cls(f"os:{user}", ("operator",), user)
        return cls(f"os:{user}", ("viewer",), user)

    def refreshed(self, ws: Workspace) -> Actor:
        """This actor as `ws` (ahead.yml as it says now) sees them: the operator's current roles.

        A workspace that lists no operators keeps the actor as it started (single-user); an OS
        user who is no operator is read-only, as in `local`.

        Raises:
            Revoked: the operator is gone from ahead.yml, or (locally) their entry no longer
                lists the OS user they were found by.
        """
        if not ws.operators:
            return self
        operator = ws.operator(self.name)
        if operator is None:
            if self.name.startswith("os:"):
                return Actor(self.name, ("viewer",), self.os_user)
            raise Revoked(
                f"{self.name}: you are no longer an operator of this workspace ({ws.file}); "
                "nothing more is done as you (ask an admin to add you again)"
            )
        if self.os_user is not None and self.os_user not in operator.os_users:
            raise Revoked(
                f"{self.name}: you are no longer an operator of this workspace: {ws.file} "
                f"no longer lists the OS user {self.os_user!r} in {self.name}'s os_users"
            )
        return Actor(operator.name, operator.roles, self.os_user)

    def may(self, action: str) -> bool:
        """Whether the actor's roles grant `action` (a `states.Capability` value: trigger,
        cancel, retry, reconcile, acknowledge and check drift need the operator or admin role;
        unlock the admin or approver role). Default deny: an unknown action is refused."""
        try:
            capability = states.Capability(action)
        except ValueError:
            return False
        return capability in states.capabilities(self.roles)

    def require(self, action: str) -> None:
        if not self.may(action):
            needs = "the admin or approver role" if action == "unlock" else "the operator role"
            raise PermissionDenied(
                f"{self.name} may not {action}: needs {needs} "
                f"(has: {', '.join(self.roles) or 'none'}; read-only)"
            )


class Revoked(PermissionDenied):
    """The operator was removed from ahead.yml (or lost the OS user they acted as)."""


class Services:
    def __init__(self, ws: Workspace, store: Store) -> None:
        self.ws = ws
        self.store = store
        self.watch = WorkspaceWatch(ws)
        # (repo, base, head) -> (count, oldest commit time): history never changes for a pair
        self._pending_cache: dict[tuple[str, str | None, str], tuple[int, float | None]] = {}

    # -- commands ------------------------------------------------------------------------------

    # Role checks are the door's (core.api.Api): these act for an actor it has checked.

    def acting(self, actor: Actor) -> Actor:
        """`actor` with the roles ahead.yml gives them now (re-read when it changed), checked
        before every command: a removed operator or role stops working without a restart.

        Raises:
            Revoked: the operator is gone. PermissionDenied: ahead.yml is broken (fail closed).
        """
        return actor.refreshed(self.watch.current())

    def trigger(
        self, repo_name: str, actor: Actor, ref: str | None = None, commit: str | None = None
    ) -> int:
        """Queue a run of `repo_name` at `ref` (a branch or tag), `commit`, or the head of main.

        A commit reachable from main runs the main stages; anything else runs the branch stages.

        Raises:
            NotFound: no such repo or commit.
        """
        repo = self.ws.repo(repo_name)
        path = self.ws.repo_dir(repo)
        _, common = self._dirs(repo)
        branches = gitio.read_branches(common)
        main_sha = branches.get(repo.branch)
        try:
            if commit is not None:
                sha = gitio.resolve(path, commit)
                branch = (
                    repo.branch
                    if main_sha and gitio.is_ancestor(path, sha, main_sha)
                    else "(commit)"
                )
                ref_name = sha
            elif ref is not None and ref in branches and gitio.valid_branch(ref):
                sha, branch, ref_name = branches[ref], ref, f"refs/heads/{ref}"
            elif ref is not None:
                sha = gitio.resolve(path, ref)
                branch = (
                    repo.branch if main_sha and gitio.is_ancestor(path, sha, main_sha) else "(ref)"
                )
                ref_name = ref
            else:
                if main_sha is None:
                    raise NotFound(f"{repo_name} has no branch {repo.branch!r}")
                sha, branch, ref_name = main_sha, repo.branch, f"refs/heads/{repo.branch}"
        except GitError as exc:
            raise NotFound(str(exc)) from None
        return self.queue(repo, branch, ref_name, sha, "manual", actor.name)

    def queue(
        self,
        repo: RepoConfig,
        branch: str,
        ref: str,
        sha: str,
        trigger: str,
        actor: str,
        retry_of: int | None = None,
        environment: str | None = None,
    ) -> int:
        info = gitio.commit(self.ws.repo_dir(repo), sha)
        return runstate.queue_run(
            self.store,
            repo=repo.name,
            branch=branch,
            ref=ref,
            sha=sha,
            on_main=branch == repo.branch,
            trigger=trigger,
            actor=actor,
            author=info.author,
            author_email=info.email,
            subject=info.subject,
            committed_at=info.time,
            retry_of=retry_of,
            supersede=trigger == "commit",
            environment=environment,
        )

    def cancel(self, run_id: int, actor: Actor) -> str:
        return runstate.request_cancel(self.store, run_id, actor.name)

    def retry(self, run_id: int, actor: Actor) -> int:
        run = self.run(run_id)
        if run["status"] not in runstate.TERMINAL:
            raise InvalidRequest(f"run {run_id} is still {run['status']}; cancel it first")
        repo = self.ws.repo(run["repo"])
        return self.queue(
            repo,
            run["branch"],
            run["ref"],
            run["commit_sha"],
            "retry",
            actor.name,
            retry_of=run_id,
            environment=run["environment"],
        )

    def reconcile(self, repo_name: str, environment: str, actor: Actor) -> int:
        """Queue a run of `environment`'s deploy stage at its deployed commit, so the live state
        is put back through the pipeline (a gated environment waits at its gate like any
        change). Audited as run.trigger with trigger "reconcile".

        Raises:
            PermissionDenied, NotFound, InvalidRequest (nothing deployed, or a reconcile of it is
            already queued or running).
        """
        repo = self.ws.repo(repo_name)
        if environment not in self.ws.environments:
            raise NotFound(
                f"no environment named {environment!r} (known: {', '.join(self.ws.environments)})"
            )
        row = self.deployed(repo.name, environment)
        if row is None:
            raise InvalidRequest(
                f"nothing was ever deployed to {environment} from {repo.name}: "
                "nothing to reconcile to"
            )
        busy = self.store.query_one(
            "SELECT id FROM runs WHERE repo = ? AND environment = ? AND status IN "
            "('queued', 'running', 'waiting')",
            (repo.name, environment),
        )
        if busy is not None:
            raise InvalidRequest(f"run {busy['id']} already reconciles {repo.name}/{environment}")
        try:
            return self.queue(
                repo,
                repo.branch,
                f"refs/heads/{repo.branch}",
                row["commit_sha"],
                "reconcile",
                actor.name,
                environment=environment,
            )
        except GitError as exc:
            raise NotFound(str(exc)) from None

    def unlock(self, repo: str, environment: str, actor: Actor, reason: str) -> Row:
        """Resolve an environment locked after an interrupted deploy (audited with `reason`)."""
        self.ws.repo(repo)
        return runstate.unlock(self.store, repo, environment, actor.name, reason)

    def locks(self) -> list[Row]:
        """Environment locks: deploys in progress and environments waiting for an operator."""
        return self.store.query("SELECT * FROM env_locks ORDER BY repo, environment")

    # -- reads ---------------------------------------------------------------------------------

    def run(self, run_id: int) -> Row:
        row = self.store.query_one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFound(f"no run {run_id} (see: ahead runs)")
        return row

    def show(self, run_id: int) -> dict[str, Any]:
        run = self.run(run_id)
        stages = self.store.query("SELECT * FROM stages WHERE run_id = ? ORDER BY idx", (run_id,))
        steps = self.store.query(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY stage_id, idx", (run_id,)
        )
        artifacts = self.store.query(
            "SELECT step_id, path, size, sha256 FROM artifacts WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        for stage in stages:
            stage["steps"] = [s for s in steps if s["stage_id"] == stage["id"]]
        return {**run, "stages": stages, "artifacts": artifacts}

    def runs(
        self,
        repo: str | None = None,
        status: str | None = None,
        branch: str | None = None,
        limit: int = 50,
    ) -> list[Row]:
        sql = "SELECT * FROM runs WHERE 1 = 1"
        params: list[Any] = []
        for column, value in (("repo", repo), ("status", status), ("branch", branch)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return self.store.query(sql, tuple(params))

    def logs(self, run_id: int, after: tuple[int, int] = (0, -1), limit: int = 10_000) -> list[Row]:
        """Log lines of a run after (step_id, seq), in step order."""
        return self.store.query(
            "SELECT l.step_id, l.seq, l.ts, l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.run_id = ? AND (l.step_id > ? OR (l.step_id = ? AND l.seq > ?)) "
            "ORDER BY l.step_id, l.seq LIMIT ?",
            (run_id, after[0], after[0], after[1], limit),
        )

    def deployed(self, repo: str, environment: str) -> Row | None:
        return self.store.query_one(
            "SELECT * FROM deployments WHERE repo = ? AND environment = ? ORDER BY id DESC LIMIT 1",
            (repo, environment),
        )

    def pending(
        self, repo_name: str, environment: str, limit: int | None = 300
    ) -> list[gitio.Commit]:
        repo = self.ws.repo(repo_name)
        head = self._main_sha(repo)
        if head is None:
            return []
        dep = self.deployed(repo_name, environment)
        return gitio.log_range(
            self.ws.repo_dir(repo), dep["commit_sha"] if dep else None, head, limit
        )

    def pending_count(
        self, repo: RepoConfig, base: str | None, head: str
    ) -> tuple[int, float | None]:
        """(count, oldest commit time) of base..head, cached: a pair of commits never changes."""
        key = (repo.name, base, head)
        found = self._pending_cache.get(key)
        if found is None:
            found = gitio.pending_summary(self.ws.repo_dir(repo), base, head)
            if len(self._pending_cache) > 50_000:
                self._pending_cache.clear()
            self._pending_cache[key] = found
        return found

    def status(self, only: list[str] | None = None, pending: bool = True) -> dict[str, Any]:
        """Each repo: head of main, last run, and per environment deployed, pending and lag.

        Args:
            only: just these repos.
            pending: count pending commits (one git call per environment not at head, cached);
                without it, pending and lag are None (a console fills them in afterwards).
        """
        now = time.time()
        last_runs = {
            row["repo"]: row
            for row in self.store.query(
                "SELECT r.* FROM runs r JOIN (SELECT repo, MAX(id) AS id FROM runs GROUP BY repo) m "
                "ON m.id = r.id"
            )
        }
        deployed: dict[tuple[str, str], Row] = {}
        for row in self.store.query(
            "SELECT d.* FROM deployments d JOIN (SELECT MAX(id) AS id FROM deployments "
            "GROUP BY repo, environment) m ON m.id = d.id"
        ):
            deployed[(row["repo"], row["environment"])] = row
        # The environments each repo's pipeline deploys to, as planned by its latest main run
        # (no runs yet: unknown, so every environment counts).
        targets: dict[str, set[str]] = {}
        for row in self.store.query(
            "SELECT r.repo, s.environment FROM stages s JOIN runs r ON r.id = s.run_id JOIN "
            "(SELECT repo, MAX(r2.id) AS id FROM runs r2 WHERE on_main = 1 AND EXISTS "
            "(SELECT 1 FROM stages s2 WHERE s2.run_id = r2.id) GROUP BY repo) m ON m.id = r.id "
            "WHERE s.environment IS NOT NULL"
        ):
            targets.setdefault(row["repo"], set()).add(row["environment"])
        locks = {(row["repo"], row["environment"]): row for row in self.locks()}
        planned = {
            row["repo"]
            for row in self.store.query(
                "SELECT DISTINCT r.repo FROM runs r JOIN stages s ON s.run_id = r.id WHERE r.on_main = 1"
            )
        }
        repos = []
        for repo in self.ws.repos:
            if only is not None and repo.name not in only:
                continue
            entry: dict[str, Any] = {
                "name": repo.name,
                "branch": repo.branch,
                "head": None,
                "error": None,
                "last_run": None,
                "environments": {},
            }
            last = last_runs.get(repo.name)
            if last:
                entry["last_run"] = {
                    "id": last["id"],
                    "status": last["status"],
                    "commit": last["commit_sha"],
                    "branch": last["branch"],
                }
            try:
                head = self._main_sha(repo)
            except GitError as exc:
                head, entry["error"] = None, str(exc)
            entry["head"] = head
            for env in self.ws.environments:
                dep = deployed.get((repo.name, env))
                deploys = repo.name not in planned or env in targets.get(repo.name, set())
                env_entry: dict[str, Any] = {
                    "deploys": deploys,
                    "deployed": dep["commit_sha"] if dep else None,
                    "deployed_at": dep["deployed_at"] if dep else None,
                    "pending": 0,
                    "lag_seconds": 0.0,
                    "oldest_pending_at": None,
                    "lock": None,
                }
                lock = locks.get((repo.name, env))
                if lock is not None:
                    env_entry["lock"] = {
                        "state": lock["state"],
                        "run": lock["run_id"],
                        "reason": lock["reason"],
                    }
                if not deploys and dep is None:
                    pass  # the pipeline does not deploy here: nothing is pending
                elif not pending:
                    env_entry["pending"] = env_entry["lag_seconds"] = None
                elif head is not None and (dep is None or dep["commit_sha"] != head):
                    try:
                        count, oldest = self.pending_count(
                            repo, dep["commit_sha"] if dep else None, head
                        )
                    except GitError as exc:
                        entry["error"] = str(exc)
                        count, oldest = 0, None
                    env_entry["pending"] = count
                    env_entry["lag_seconds"] = round(now - oldest, 1) if oldest else 0.0
                    env_entry["oldest_pending_at"] = oldest
                entry["environments"][env] = env_entry
            repos.append(entry)
        return {
            "workspace": str(self.ws.file),
            "environments": list(self.ws.environments),
            "repos": repos,
        }

    # -- helpers -------------------------------------------------------------------------------

    def _dirs(self, repo: RepoConfig) -> tuple[Path, Path]:
        try:
            return gitio.git_dirs(self.ws.repo_dir(repo))
        except (GitError, OSError) as exc:
            raise NotFound(f"repo {repo.name}: {exc}") from None

    def _main_sha(self, repo: RepoConfig) -> str | None:
        try:
            _, common = gitio.git_dirs(self.ws.repo_dir(repo))
        except OSError as exc:
            raise GitError(f"repo {repo.name}: {exc}") from None
        return gitio.read_branches(common).get(repo.branch)
