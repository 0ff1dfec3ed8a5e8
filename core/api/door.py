"""The one door into core: every command and read a front end (the CLI, a console session, the
SSH listings) may ask of the product.

An `Api` wraps a workspace and its store for one caller. Every command re-reads the acting
operator from ahead.yml (`Services.acting`: a removed operator or role stops working at once)
and checks their capability here, once, against `core.states.capabilities`; the domain modules
below (services, runstate, approvals, drift) act for an actor the door has checked. The console's
"may I?" (`may_decide`) is computed by the same code `approvals.decide` refuses with.

Blocking (git and SQLite): the CLI calls it directly; async code on the store's thread
(`AsyncStore.call`). The few async calls (drift checks, host keys) need the `AsyncStore`.
Depends on core's domain modules; never on a front end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from core import approvals, drift, gitio, lease, presence, states, workspace
from core.api.views import (
    AuditEntry,
    AuditVerdict,
    BranchView,
    CommitView,
    DriftCheckView,
    DriftDetail,
    DriftView,
    EngineView,
    EnvCell,
    EnvStatus,
    HostKey,
    LastRun,
    LockRef,
    LockView,
    RepoDetail,
    RepoStatus,
    RepoView,
    RunDetail,
    RunView,
    StageView,
    StatusView,
    StepView,
    TrustTarget,
)
from core.errors import GitError, InvalidRequest, LeaseHeld, NotFound, PermissionDenied
from core.services import Actor, Services
from core.states import Capability
from core.store.db import AsyncStore, Row, Store
from core.workspace import Workspace

T = TypeVar("T")

#: Environment names that are production wherever they sit in the promotion order.
PRODUCTION_NAMES = ("prod", "production")


def is_production(environments: tuple[str, ...] | list[str], environment: str) -> bool:
    """Production: the last environment of the workspace (`environments`, in promotion order),
    and any called prod or production (the console asks for the environment's name typed out
    before a decision there)."""
    return environment.lower() in PRODUCTION_NAMES or (
        bool(environments) and environment == environments[-1]
    )


EngineState = EngineView  # the name core.api exports


class Api:
    """The door for one caller on one store.

    Args:
        ws: the workspace.
        store: its store (the caller's thread owns it).
        db: the same store as an AsyncStore, for the async calls (drift checks, host keys).
        clock: the moment `may_decide` answers for.
    """

    def __init__(
        self,
        ws: Workspace,
        store: Store,
        db: AsyncStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ws = ws
        self.clock = clock  # when `may_decide` asks (decide itself always acts at the wall clock)
        self.store = store
        self.db = db
        self.svc = Services(ws, store)

    @classmethod
    @contextlib.contextmanager
    def open(cls, ws: Workspace, write: bool = False) -> Iterator[Api]:
        """The door on `ws`'s store for one command line. `write`: a person's decision or
        request is about to be written: the store must pass `PRAGMA quick_check` first, so
        nothing is added to a damaged store."""
        with Store(ws.db_path, session=f"cli:{workspace.current_os_user()}:{os.getpid()}") as store:
            if write:
                store.require_intact()
            yield cls(ws, store)

    @classmethod
    @contextlib.asynccontextmanager
    async def open_async(cls, ws: Workspace, session: str) -> AsyncIterator[Api]:
        """The door on `ws`'s store for async callers (`call` runs a blocking read or command on
        the store's thread)."""
        db = AsyncStore(Store(ws.db_path, session=session))
        await db.open()
        try:
            yield cls(ws, db.store, db)
        finally:
            await db.aclose()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one of this door's blocking calls on the store's thread (directly when this door
        was opened without an AsyncStore: the caller's thread owns the store)."""
        if self.db is None:
            return fn(*args)
        result: T = await self.db.call(fn, *args)
        return result

    @staticmethod
    def async_store(ws: Workspace, session: str) -> AsyncStore:
        """A store for a console session (opened by the caller: `await db.open()`)."""
        return AsyncStore(Store(ws.db_path, session=session))

    @staticmethod
    async def embed_engine(ws: Workspace) -> tuple[Any, str | None]:
        """Start the engine in this process: (the engine, None), or (None, the holder) when
        another process holds the workspace's lease."""
        from core.engine import Engine

        engine = Engine(ws)
        try:
            await engine.start()
        except LeaseHeld as exc:
            return None, exc.holder
        return engine, None

    # -- who acts ----------------------------------------------------------------------------------

    def acting(self, actor: Actor) -> Actor:
        """`actor` as ahead.yml says now (see `Services.acting`).

        Raises:
            Revoked: the operator is gone. PermissionDenied: ahead.yml is broken (fail closed).
        """
        return self.svc.acting(actor)

    def require(self, actor: Actor, capability: Capability) -> Actor:
        """Re-read `actor` and check they hold `capability`: the one role check of every command.

        A workspace that lists no operators is single-user: its OS user owns the state directory
        and may also trust host keys (as before the door).

        Raises:
            Revoked, PermissionDenied.
        """
        actor = self.acting(actor)
        if capability == Capability.TRUST_HOST:
            if self.ws.operators and capability not in states.capabilities(actor.roles):
                raise PermissionDenied(
                    f"{actor.name} may not trust a host key: needs the admin role"
                )
            return actor
        actor.require(capability)
        return actor

    # -- commands ----------------------------------------------------------------------------------

    def trigger(
        self, actor: Actor, repo: str, ref: str | None = None, commit: str | None = None
    ) -> int:
        actor = self.require(actor, Capability.TRIGGER)
        return self.svc.trigger(repo, actor, ref=ref, commit=commit)

    def cancel(self, actor: Actor, run_id: int) -> str:
        actor = self.require(actor, Capability.CANCEL)
        return self.svc.cancel(run_id, actor)

    def retry(self, actor: Actor, run_id: int) -> int:
        actor = self.require(actor, Capability.RETRY)
        return self.svc.retry(run_id, actor)

    def reconcile(self, actor: Actor, repo: str, environment: str) -> int:
        actor = self.require(actor, Capability.RECONCILE)
        return self.svc.reconcile(repo, environment, actor)

    def unlock(self, actor: Actor, repo: str, environment: str, reason: str) -> Row:
        actor = self.require(actor, Capability.UNLOCK)
        return self.svc.unlock(repo, environment, actor, reason)

    def decide(
        self, actor: Actor, change_id: int, verdict: str, comment: str = ""
    ) -> approvals.Verdict:
        """Approve or reject as the operator and under the policy ahead.yml says now. Who may
        decide is the environment's policy (approvals.refusal), not a role."""
        actor = self.acting(actor)
        return approvals.decide(
            self.store, self.svc.watch.current(), change_id, actor.name, verdict, comment
        )

    def may_decide(self, actor: Actor, change_id: int, verdict: str = "approve") -> str | None:
        """Why `actor` may not `verdict` change `change_id` now (the words `decide` would refuse
        with), or None. Reads only."""
        try:
            actor = self.acting(actor)
        except PermissionDenied as exc:
            return str(exc)
        ws = self.svc.watch.current()
        change = self.store.query_one("SELECT * FROM change_requests WHERE id = ?", (change_id,))
        if change is None:
            return f"no change {change_id} (see: ahead changes)"
        run = self.store.query_one("SELECT * FROM runs WHERE id = ?", (change["run_id"],))
        try:
            key = approvals.decision_key(ws, create=False)
        except PermissionDenied:
            key = None  # only the key's owner can tell a stored decision is authentic
        found = approvals.refusal(
            self.store, ws, change, run, actor.name, verdict, self.clock(), key
        )
        return None if found is None else found.message

    def notify(self, repo: str) -> None:
        """A repo changed (a git server's post-receive hook): the engine looks at it now."""
        self.ws.repo(repo)
        with self.store.transaction():
            self.store.event(states.EventKind.NOTIFY, repo, None)

    def drift_ack(
        self,
        actor: Actor,
        repo: str,
        environment: str,
        target: str | None,
        reason: str,
        seconds: float,
    ) -> list[str]:
        actor = self.require(actor, Capability.ACKNOWLEDGE)
        return drift.acknowledge(self.store, repo, environment, target, reason, seconds, actor.name)

    async def drift_check(
        self,
        actor: Actor,
        repo: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        on_start: Any = None,
        allow_none: bool = False,
    ) -> list[dict[str, Any]]:
        """Check now, in this process, and record the findings; returns the checked targets'
        latest findings. Checks run commands and reach hosts as this process's user."""
        db = self._async()
        actor = await db.call(self.require, actor, Capability.CHECK_DRIFT)
        checker = drift.DriftChecker(self.ws, db)
        targets = await checker.targets(repo, environment, target)
        if not targets and not allow_none:
            raise NotFound("no drift targets to check: nothing is deployed yet")
        if on_start is not None:
            on_start(len(targets))
        await checker.check(targets, f"asked by {actor.name}")
        keys = {(t.repo, t.environment, t.name) for t in targets}
        found: list[dict[str, Any]] = await db.call(drift.listing, self.store)
        return [i for i in found if (i["repo"], i["environment"], i["target"]) in keys]

    # -- trusting a host (runners and drift hosts: one flow) ----------------------------------------

    def trust_runner_targets(self, actor: Actor, runner_name: str) -> list[TrustTarget]:
        """The host a remote runner logs in to (checked: the admin role)."""
        self.require(actor, Capability.TRUST_HOST)
        runner = self.ws.runner(runner_name)
        if runner.ssh is None:
            raise InvalidRequest(
                f"runner {runner.name!r} runs on this machine; there is no host key to trust"
            )
        return [TrustTarget(f"runner {runner.name}", str(runner.ssh), f"runner/{runner.name}")]

    async def trust_drift_targets(
        self, actor: Actor, repo: str, environment: str, target: str | None = None
    ) -> list[TrustTarget]:
        """The hosts the drift targets of (repo, environment) are checked on (the admin role)."""
        from core import sshclient  # asyncssh is imported only for the commands that use SSH

        db = self._async()
        await db.call(self.require, actor, Capability.TRUST_HOST)
        hosts = sorted(
            {
                t.spec.host
                for t in await drift.DriftChecker(self.ws, db).targets(repo, environment, target)
                if t.spec and t.spec.host
            }
        )
        if not hosts:
            raise InvalidRequest(f"no drift target of {repo}/{environment} is on a host (host:)")
        found = []
        for host in hosts:
            address = sshclient.parse_address(host)
            if address is None:
                raise InvalidRequest(f"{host!r} is not user@host[:port]")
            found.append(
                TrustTarget(
                    f"drift host of {repo}/{environment}",
                    str(address),
                    f"drift/{repo}/{environment}",
                )
            )
        return found

    async def scan_host(self, target: TrustTarget) -> HostKey:
        """The key the host presents now, and the ones pinned for it so far."""
        from core import sshclient

        address = self._address(target)
        key = await sshclient.scan_host_key(address)
        pinned = tuple(
            sshclient.fingerprint(k) for k in sshclient.pinned(self.ws.state_dir, address)
        )
        return HostKey(target, key.get_algorithm(), sshclient.fingerprint(key), pinned, key)

    def trust_host(self, actor: Actor, host: HostKey) -> str:
        """Pin `host`'s key (the admin role), audited as `host.trust`; returns where it is pinned."""
        from core import sshclient

        actor = self.require(actor, Capability.TRUST_HOST)
        address = self._address(host.target)
        sshclient.trust(self.ws.state_dir, address, host.key)
        with self.store.transaction():
            self.store.audit(
                actor.name,
                "host.trust",
                host.target.subject,
                {
                    "address": host.target.address,
                    "fingerprint": host.fingerprint,
                    "replaced": list(host.pinned),
                },
            )
        return str(sshclient.known_hosts_path(self.ws.state_dir))

    def engine_public_key(self) -> str:
        """The line a host's authorized_keys needs for the engine to log in."""
        from core import sshclient

        return sshclient.public_key_line(self.ws.state_dir)

    def _address(self, target: TrustTarget) -> Any:
        from core import sshclient

        address = sshclient.parse_address(target.address)
        if address is None:
            raise InvalidRequest(f"{target.address!r} is not user@host[:port]")
        return address

    # -- reads -------------------------------------------------------------------------------------

    def engine(self) -> EngineView:
        holder = lease.holder(self.store, 15.0)
        return EngineView("running" if holder else "not running", holder)

    def status(self) -> StatusView:
        """Each repo: head of main, last run, and per environment deployed, pending and lag."""
        data = self.svc.status()
        repos = []
        for repo in data["repos"]:
            last = repo["last_run"]
            envs = {}
            for name, e in repo["environments"].items():
                lock = e["lock"]
                envs[name] = EnvStatus(
                    e["deploys"],
                    e["deployed"],
                    e["deployed_at"],
                    e["pending"],
                    e["lag_seconds"],
                    e["oldest_pending_at"],
                    LockRef(lock["state"], lock["run"], lock["reason"]) if lock else None,
                )
            repos.append(
                RepoStatus(
                    repo["name"],
                    repo["branch"],
                    repo["head"],
                    repo["error"],
                    LastRun(last["id"], last["status"], last["commit"], last["branch"])
                    if last
                    else None,
                    envs,
                )
            )
        return StatusView(
            data["workspace"], tuple(data["environments"]), tuple(repos), self.engine()
        )

    def runs(
        self,
        repo: str | None = None,
        status: str | None = None,
        branch: str | None = None,
        limit: int = 50,
    ) -> list[Row]:
        return self.svc.runs(repo=repo, status=status, branch=branch, limit=limit)

    def run(self, run_id: int) -> Row:
        return self.svc.run(run_id)

    def show(self, run_id: int) -> dict[str, Any]:
        return self.svc.show(run_id)

    def logs(self, run_id: int, after: tuple[int, int] = (0, -1), limit: int = 10_000) -> list[Row]:
        return self.svc.logs(run_id, after, limit)

    def step_names(self, run_id: int) -> dict[int, str]:
        """'stage / step' for each step of a run, by step id."""
        return {
            s["id"]: s["name"]
            for s in self.store.query(
                "SELECT s.id, st.name || ' / ' || s.name AS name FROM steps s JOIN stages st "
                "ON st.id = s.stage_id WHERE s.run_id = ?",
                (run_id,),
            )
        }

    def step_log_tail(self, step_id: int, after: int, limit: int) -> tuple[int, list[str]]:
        """The step's log lines after seq `after` as plain strings, and the last seq read
        (`after` when none): a console's hot path during a log flood, free of per-line objects."""
        cursor = self.store.conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            "SELECT seq, line FROM log_lines WHERE step_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (step_id, after, limit),
        ).fetchall()
        if not rows:
            return after, []
        return rows[-1][0], [line for _, line in rows]

    def step_log_start(self, step_id: int, keep: int) -> int | None:
        """The seq after which the step's last `keep` lines begin, or None when it has fewer."""
        rows = self.store.query(
            "SELECT seq FROM log_lines WHERE step_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (step_id, keep),
        )
        return int(rows[0]["seq"]) if rows else None

    def wait_for_run(self, run_id: int) -> Row:
        """The run once it has ended (another process runs it)."""
        while True:
            row = self.store.query_one("SELECT * FROM runs WHERE id = ?", (run_id,)) or {}
            if row.get("status") in states.TERMINAL or not row:
                return row
            time.sleep(0.2)

    def pending(self, repo: str, environment: str) -> list[gitio.Commit]:
        if environment not in self.ws.environments:
            raise NotFound(
                f"no environment {environment!r} (environments: {', '.join(self.ws.environments)})"
            )
        return self.svc.pending(repo, environment, limit=None)

    def deployed(self, repo: str, environment: str) -> Row | None:
        return self.svc.deployed(repo, environment)

    def changes(self, include_decided: bool = False) -> list[Row]:
        rows = approvals.changes(self.store, None if include_decided else "open")
        for row in rows:
            row["commits"] = json.loads(row["commits"])
        return rows

    def change(self, change_id: int) -> dict[str, Any]:
        return approvals.change_detail(self.store, self.ws, change_id)

    def locks(self) -> list[LockView]:
        """Environment locks: deploys in progress and environments waiting for an operator."""
        return [
            LockView(
                r["repo"],
                r["environment"],
                r["state"],
                r["run_id"],
                r["stage_id"],
                bool(r["gated"]),
                r["reason"],
                r["acquired_at"],
            )
            for r in self.svc.locks()
        ]

    def who(self) -> list[presence.Presence]:
        return presence.who(self.store)

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        return [
            AuditEntry.of(r)
            for r in self.store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def audit_head(self) -> tuple[int, str] | None:
        return self.store.audit_head()

    def audit_verify(
        self, head: tuple[int, str] | None = None, remember: bool = True
    ) -> AuditVerdict:
        """The store's pages, the hash chain (and `head`, an entry kept off this host), the chain
        against the head the last verify of this store saw, then every decision's MAC (when this
        user may read the decision key). `remember`: note the head for the next verify."""
        from core.store import heads

        damage = self.store.quick_check()
        if damage:
            return AuditVerdict(
                False,
                0,
                f"the store {self.store.path} is damaged ({damage.splitlines()[0][:200]}); "
                "restore it from a backup",
                damaged=True,
            )
        ok, count, problem = self.store.verify_audit(head)
        if not ok:
            return AuditVerdict(False, count, problem)
        shrunk = heads.compare(self.store, count)
        if shrunk:
            return AuditVerdict(False, count, shrunk, shrunk=True)
        note = None
        try:
            forged = approvals.unauthenticated(self.store, self.ws)
        except PermissionDenied as exc:  # only the decision key's owner can check decisions
            forged, note = [], f"decisions not checked: {exc}"
        if forged:
            return AuditVerdict(
                False,
                count,
                f"{len(forged)} decision(s) do not verify: {forged[0]}",
                unauthenticated=tuple(forged),
                note=note,
            )
        current = self.store.audit_head()
        where = str(heads.save(self.store, current)) if remember else None
        return AuditVerdict(True, count, "", note=note, head=current, remembered_in=where)

    async def drift(self) -> list[dict[str, Any]]:
        """Every drift target's latest finding, and configured targets never checked yet."""
        db = self._async()
        found: list[dict[str, Any]] = await db.call(drift.listing, self.store)
        known = {(i["repo"], i["environment"], i["target"]) for i in found}
        for t in await drift.DriftChecker(self.ws, db).targets():
            if (t.repo, t.environment, t.name) not in known:  # configured, never checked yet
                found.append(
                    {
                        "repo": t.repo,
                        "environment": t.environment,
                        "target": t.name,
                        "kind": t.kind,
                        "state": "not checked",
                        "summary": "",
                        "commit_sha": t.commit,
                        "since": None,
                        "checked_at": None,
                        "acknowledged": None,
                    }
                )
        return found

    def drift_findings(self) -> list[dict[str, Any]]:
        """Every checked drift target's latest finding (no never-checked targets)."""
        return drift.listing(self.store)

    def drift_detail(
        self, repo: str, environment: str, target: str | None = None
    ) -> list[dict[str, Any]]:
        return drift.detail(self.store, repo, environment, target)

    # -- console reads (typed views) -------------------------------------------------------------

    def engine_holder(self) -> str | None:
        return lease.holder(self.store, lease.STALE_SECONDS)

    def open_presence(self, operator: str, kind: str) -> int:
        return presence.open_session(self.store, operator, kind)

    def close_presence(self, presence_id: int) -> None:
        presence.close_session(self.store, presence_id)

    def show_screen(self, presence_id: int, screen: str) -> None:
        presence.set_screen(self.store, presence_id, screen)

    def run_views(
        self,
        repo: str | None = None,
        status: str | None = None,
        branch: str | None = None,
        limit: int = 200,
    ) -> list[RunView]:
        return [run_view(r) for r in self.svc.runs(repo, status, branch, limit)]

    def change_details(self, include_decided: bool = False) -> list[dict[str, Any]]:
        """Change requests (open ones, or all), newest first, each in detail."""
        return [
            self.change(row["id"])
            for row in approvals.changes(self.store, None if include_decided else "open")
        ]

    def audit_rows(self, limit: int = 500) -> list[Row]:
        """The newest audit entries as stored, newest first."""
        return self.store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))

    def audit_chain(self) -> tuple[bool, int, str]:
        """The whole hash chain, then every decision's MAC (when this user may read the
        decision key): (ok, entries checked, the first problem)."""
        ok, count, problem = self.store.verify_audit()
        if ok:
            try:
                forged = approvals.unauthenticated(self.store, self.ws)
            except PermissionDenied:
                forged = []  # only the key's owner (the engine's user) can check decisions
            if forged:
                return False, count, f"{len(forged)} decision(s) do not verify: {forged[0]}"
        return ok, count, problem

    def drift_views(self) -> list[DriftView]:
        return [drift_view(item) for item in drift.listing(self.store)]

    def drift_detail_view(self, repo: str, environment: str, target: str) -> DriftDetail:
        item = drift.detail(self.store, repo, environment, target)[0]
        history = tuple(
            DriftCheckView(
                h["id"], h["state"], h["summary"], h["reason"], h["started_at"], h["finished_at"]
            )
            for h in item["history"]
        )
        return DriftDetail(drift_view(item), item["detail"], history)

    def overview(self, only: list[str] | None = None, pending: bool = True) -> list[RepoView]:
        status = self.svc.status(only, pending)
        store = self.store
        last_ids = [r["last_run"]["id"] for r in status["repos"] if r["last_run"]]
        runs: dict[int, RunView] = {}
        if last_ids:
            marks = ",".join("?" * len(last_ids))
            stages: dict[int, list[Row]] = {}
            for stage in store.query(
                f"SELECT * FROM stages WHERE run_id IN ({marks}) ORDER BY idx", tuple(last_ids)
            ):
                stages.setdefault(stage["run_id"], []).append(stage)
            for row in store.query(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(last_ids)):
                runs[row["id"]] = run_view(row, stages.get(row["id"], []))
        touching: dict[tuple[str, str], Row] = {}
        for row in store.query(
            "SELECT r.repo, s.environment, s.status, s.run_id FROM stages s JOIN runs r ON r.id = s.run_id "
            "JOIN (SELECT MAX(s2.id) AS id FROM stages s2 JOIN runs r2 ON r2.id = s2.run_id "
            "WHERE s2.environment IS NOT NULL AND s2.status != 'skipped' "
            "GROUP BY r2.repo, s2.environment) m ON m.id = s.id"
        ):
            touching[(row["repo"], row["environment"])] = row
        drifts: dict[tuple[str, str], list[DriftView]] = {}
        for item in self.drift_views():
            if item.kind != drift.REVISION:
                drifts.setdefault((item.repo, item.environment), []).append(item)
        views = []
        for repo in status["repos"]:
            cells = []
            for env in self.ws.environments:
                e = repo["environments"][env]
                touch = touching.get((repo["name"], env))
                found = drifts.get((repo["name"], env), [])
                cells.append(
                    EnvCell(
                        env,
                        e["deploys"],
                        e["deployed"],
                        e["deployed_at"],
                        e["pending"],
                        e["oldest_pending_at"],
                        touch["status"] if touch else None,
                        touch["run_id"] if touch else None,
                        drift.worst([d.state for d in found]),
                        all(d.acknowledged for d in found if d.state == "drifted")
                        and any(d.state == "drifted" for d in found),
                        _locked(e.get("lock")),
                    )
                )
            last = repo["last_run"]
            views.append(
                RepoView(
                    repo["name"],
                    repo["branch"],
                    repo["head"],
                    repo["error"],
                    runs.get(last["id"]) if last else None,
                    tuple(cells),
                )
            )
        return views

    def run_detail(self, run_id: int) -> RunDetail:
        detail = self.svc.show(run_id)
        steps = [
            StepView(
                s["id"],
                s["stage_id"],
                s["name"],
                s["command"],
                s["status"],
                s["exit_code"],
                s["started_at"],
                s["finished_at"],
                s["error"],
            )
            for stage in detail["stages"]
            for s in stage["steps"]
        ]
        return RunDetail(run_view(detail, detail["stages"]), tuple(steps))

    def repo_detail(self, name: str, limit: int = 300) -> RepoDetail:
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
                commits.append(
                    CommitView(
                        c.sha,
                        c.author,
                        c.email,
                        c.time,
                        c.subject,
                        tuple(env for env, sha in deployed.items() if sha == c.sha),
                        tuple(env for env in self.ws.environments if c.sha in pending[env]),
                    )
                )
        last_by_branch: dict[str, RunView] = {}
        for row in self.store.query(
            "SELECT r.* FROM runs r JOIN (SELECT MAX(id) AS id FROM runs WHERE repo = ? GROUP BY branch) m "
            "ON m.id = r.id",
            (name,),
        ):
            last_by_branch[row["branch"]] = run_view(row)
        branch_views = [
            BranchView(b, sha, last_by_branch.get(b))
            for b, sha in sorted(branches.items(), key=lambda kv: (kv[0] != repo.branch, kv[0]))
            if gitio.valid_branch(b)
        ]
        return RepoDetail(name, repo.branch, tuple(commits), tuple(branch_views), deployed)

    def environments_with(self, name: str, sha: str) -> dict[str, bool]:
        path = self.ws.repo_dir(self.ws.repo(name))
        result = {}
        for env in self.ws.environments:
            dep = self.svc.deployed(name, env)
            result[env] = (
                bool(dep) and gitio.is_ancestor(path, sha, dep["commit_sha"]) if dep else False
            )
        return result

    def _async(self) -> AsyncStore:
        if self.db is None:
            raise RuntimeError("this call needs the Api's AsyncStore (Api(ws, store, db))")
        return self.db


def run_view(row: Row, stages: list[Row] | None = None) -> RunView:
    return RunView(
        id=row["id"],
        repo=row["repo"],
        branch=row["branch"],
        commit=row["commit_sha"],
        status=row["status"],
        trigger=row["trigger"],
        actor=row["actor"],
        author=row["author"],
        subject=row["subject"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        retry_of=row["retry_of"],
        stages=tuple(stage_view(s) for s in stages or ()),
    )


def stage_view(row: Row) -> StageView:
    return StageView(
        row["id"],
        row["name"],
        row["environment"],
        row["status"],
        row["started_at"],
        row["finished_at"],
        row["error"],
    )


def drift_view(item: dict[str, Any]) -> DriftView:
    ack = item.get("acknowledged")
    return DriftView(
        item["repo"],
        item["environment"],
        item["target"],
        item["kind"],
        item["state"],
        item["summary"],
        item["commit_sha"],
        item["since"],
        item["checked_at"],
        ack["by"] if ack else None,
        ack["reason"] if ack else None,
        ack["until"] if ack else None,
    )


def _locked(lock: dict[str, Any] | None) -> str | None:
    """The reason an environment waits for an operator's unlock, or None."""
    return lock["reason"] if lock and lock["state"] == "needs_operator" else None
