"""State transitions of runs, stages and steps, as store transactions.

Every function here is one `BEGIN IMMEDIATE` transaction that writes the new state, its event
row and, where a person or a deployment is involved, its audit entry. Used by the engine (via
AsyncStore) and by the services that clients call. Blocking; no asyncio here.
"""

from __future__ import annotations

import time

from core import states
from core.store.db import Row, Store

ACTIVE = states.IN_PROGRESS
TERMINAL = states.TERMINAL
ENGINE = "engine"


def queue_run(
    store: Store,
    *,
    repo: str,
    branch: str,
    ref: str,
    sha: str,
    on_main: bool,
    trigger: str,
    actor: str,
    author: str = "",
    author_email: str = "",
    subject: str = "",
    committed_at: float | None = None,
    retry_of: int | None = None,
    supersede: bool = False,
    environment: str | None = None,
) -> int:
    """Queue a run. With `supersede`, queued runs of the same branch (not yet started) are
    skipped in its favour: a burst of commits on one branch runs only the newest. With
    `environment`, the run deploys only there (a drift reconcile): stages of other
    environments are skipped."""
    now = time.time()
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO runs (repo, branch, ref, commit_sha, on_main, status, trigger, actor, "
            "author, author_email, subject, committed_at, created_at, retry_of, environment) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                repo,
                branch,
                ref,
                sha,
                int(on_main),
                trigger,
                actor,
                author,
                author_email,
                subject,
                committed_at,
                now,
                retry_of,
                environment,
            ),
        )
        run_id = int(cur.lastrowid or 0)
        if supersede:
            from core.approvals import supersede as supersede_changes

            supersede_changes(store, repo, branch, run_id)
            older = conn.execute(
                "SELECT id FROM runs WHERE repo = ? AND branch = ? AND status = 'queued' "
                "AND trigger = 'commit' AND id < ?",
                (repo, branch, run_id),
            ).fetchall()
            for row in older:
                conn.execute(
                    "UPDATE runs SET status = 'skipped', finished_at = ?, error = ? WHERE id = ?",
                    (now, f"superseded by run {run_id}", row["id"]),
                )
                store.event("run.finished", repo, row["id"], status="skipped")
        store.audit(
            actor,
            "run.trigger",
            f"run/{run_id}",
            {
                "repo": repo,
                "branch": branch,
                "ref": ref,
                "commit": sha,
                "trigger": trigger,
                "retry_of": retry_of,
                **({"environment": environment} if environment else {}),
            },
        )
        store.event("run.queued", repo, run_id, branch=branch, commit=sha)
    return run_id


def claim_run(store: Store, run_id: int, engine: str) -> bool:
    """queued -> running; False when someone else got there first (e.g. cancelled)."""
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE runs SET status = 'running', started_at = ?, engine = ?, error = NULL "
            "WHERE id = ? AND status = 'queued'",
            (time.time(), engine, run_id),
        )
        if cur.rowcount != 1:
            return False
        row = conn.execute("SELECT repo FROM runs WHERE id = ?", (run_id,)).fetchone()
        store.event("run.started", row["repo"], run_id)
    return True


def note(store: Store, run_id: int, reason: str) -> None:
    """Record why a run waits (behind another run of its branch, for an environment lock) in
    runs.error and as a `run.note` event that stays in the feed."""
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT repo FROM runs WHERE id = ? AND status IN ('queued', 'running')", (run_id,)
        ).fetchone()
        if row is not None:
            conn.execute("UPDATE runs SET error = ? WHERE id = ?", (reason, run_id))
            store.event("run.note", row["repo"], run_id, reason=reason)


def create_plan(
    store: Store,
    run_id: int,
    digest: str,
    stages: list[tuple[str, str | None, bool, list[tuple[str, str]]]],
) -> list[Row]:
    """Record the run's stages and steps. Each stage is (name, environment, selected, steps),
    steps are (name, command); stages not selected for this branch are `skipped`."""
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET pipeline_digest = ? WHERE id = ?", (digest, run_id))
        for idx, (name, env, selected, steps) in enumerate(stages):
            status = "queued" if selected else "skipped"
            cur = conn.execute(
                "INSERT INTO stages (run_id, idx, name, environment, status) VALUES (?, ?, ?, ?, ?)",
                (run_id, idx, name, env, status),
            )
            stage_id = cur.lastrowid
            for sidx, (step_name, command) in enumerate(steps):
                conn.execute(
                    "INSERT INTO steps (run_id, stage_id, idx, name, command, status) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, stage_id, sidx, step_name, command, status),
                )
        row = conn.execute("SELECT repo FROM runs WHERE id = ?", (run_id,)).fetchone()
        store.event("run.planned", row["repo"], run_id)
    return store.query("SELECT * FROM stages WHERE run_id = ? ORDER BY idx", (run_id,))


def steps_of(store: Store, stage_id: int) -> list[Row]:
    return store.query("SELECT * FROM steps WHERE stage_id = ? ORDER BY idx", (stage_id,))


def set_stage(store: Store, stage_id: int, status: str, error: str | None = None) -> None:
    now = time.time()
    with store.transaction(None if status == "running" else "stage.end") as conn:
        if status == "running":
            conn.execute(
                "UPDATE stages SET status = ?, started_at = ? WHERE id = ?", (status, now, stage_id)
            )
        else:
            conn.execute(
                "UPDATE stages SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, now, error, stage_id),
            )
            run_id = conn.execute("SELECT run_id FROM stages WHERE id = ?", (stage_id,)).fetchone()[
                "run_id"
            ]
            settle_locks(store, run_id, interrupted=status == "interrupted")
        row = conn.execute(
            "SELECT s.run_id, r.repo, s.name FROM stages s JOIN runs r "
            "ON r.id = s.run_id WHERE s.id = ?",
            (stage_id,),
        ).fetchone()
        store.event(
            "stage." + ("started" if status == "running" else "finished"),
            row["repo"],
            row["run_id"],
            stage_id=stage_id,
            stage=row["name"],
            status=status,
        )


def record_deployment(store: Store, stage_id: int) -> None:
    """Mark a deploying stage succeeded and move its environment's deployed commit, audited."""
    now = time.time()
    with store.transaction("deploy.end") as conn:
        row = conn.execute(
            "SELECT s.run_id, s.environment, s.name, r.repo, r.commit_sha, r.actor FROM stages s "
            "JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
            (stage_id,),
        ).fetchone()
        before = conn.execute(
            "SELECT commit_sha FROM deployments WHERE repo = ? AND environment = ? "
            "ORDER BY id DESC LIMIT 1",
            (row["repo"], row["environment"]),
        ).fetchone()
        conn.execute(
            "UPDATE stages SET status = 'succeeded', finished_at = ? WHERE id = ?", (now, stage_id)
        )
        conn.execute(
            "INSERT INTO deployments (repo, environment, commit_sha, run_id, stage_id, deployed_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row["repo"], row["environment"], row["commit_sha"], row["run_id"], stage_id, now),
        )
        store.audit(
            ENGINE,
            "deploy",
            f"{row['repo']}/{row['environment']}",
            {
                "run": row["run_id"],
                "stage": row["name"],
                "commit": row["commit_sha"],
                "before": before["commit_sha"] if before else None,
                "on_behalf_of": row["actor"],
            },
        )
        store.event(
            "stage.finished",
            row["repo"],
            row["run_id"],
            stage_id=stage_id,
            stage=row["name"],
            status="succeeded",
        )
        store.event(
            "deployment",
            row["repo"],
            row["run_id"],
            environment=row["environment"],
            commit=row["commit_sha"],
        )
        settle_locks(store, row["run_id"], interrupted=False)


def start_step(store: Store, step_id: int, pid: int, token: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "UPDATE steps SET status = 'running', started_at = ?, pid = ?, token = ? WHERE id = ?",
            (time.time(), pid, token, step_id),
        )
        row = conn.execute(
            "SELECT s.run_id, r.repo FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
            (step_id,),
        ).fetchone()
        store.event("step.started", row["repo"], row["run_id"], step_id=step_id)


def finish_step(
    store: Store, step_id: int, status: str, exit_code: int | None, error: str | None = None
) -> None:
    with store.transaction() as conn:
        conn.execute(
            "UPDATE steps SET status = ?, exit_code = ?, finished_at = ?, error = ? WHERE id = ?",
            (status, exit_code, time.time(), error, step_id),
        )
        row = conn.execute(
            "SELECT s.run_id, r.repo FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
            (step_id,),
        ).fetchone()
        store.event(
            "step.finished",
            row["repo"],
            row["run_id"],
            step_id=step_id,
            status=status,
            exit_code=exit_code,
        )


def append_logs(
    store: Store, run_id: int, repo: str, step_id: int, lines: list[tuple[int, float, str]]
) -> None:
    """Write a batch of (seq, ts, line) log lines in one transaction, with one event."""
    if not lines:
        return
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO log_lines (step_id, seq, ts, line) VALUES (?, ?, ?, ?)",
            [(step_id, seq, ts, line) for seq, ts, line in lines],
        )
        store.event("log", repo, run_id, step_id=step_id, first=lines[0][0], last=lines[-1][0])


def add_artifact(
    store: Store, run_id: int, step_id: int, path: str, stored: str, size: int, sha256: str
) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO artifacts (run_id, step_id, path, stored_path, size, sha256) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, step_id, path, stored, size, sha256),
        )


def finish_run(store: Store, run_id: int, status: str, error: str | None = None) -> None:
    now = time.time()
    with store.transaction("run.end") as conn:
        row = conn.execute(
            "SELECT repo, status, cancel_requested FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        conn.execute(
            "UPDATE runs SET status = ?, finished_at = ?, error = COALESCE(?, error) WHERE id = ?",
            (status, now, error, run_id),
        )
        remaining = (
            "cancelled"
            if status == "cancelled"
            else ("interrupted" if status == "interrupted" else "skipped")
        )
        conn.execute(
            "UPDATE steps SET status = ?, finished_at = COALESCE(finished_at, ?) "
            "WHERE run_id = ? AND status IN ('queued', 'running', 'waiting')",
            (remaining, now, run_id),
        )
        conn.execute(
            "UPDATE stages SET status = ?, finished_at = COALESCE(finished_at, ?) "
            "WHERE run_id = ? AND status IN ('queued', 'running', 'waiting')",
            (remaining, now, run_id),
        )
        if status == "cancelled":
            store.audit(ENGINE, "run.cancelled", f"run/{run_id}", {"repo": row["repo"]})
        settle_locks(store, run_id, interrupted=status == "interrupted")
        store.event("run.finished", row["repo"], run_id, status=status)


def recover(store: Store, engine: str) -> list[Row]:
    """After an engine died: runs, stages and steps left running become `interrupted` (never
    succeeded), audited; runs waiting at an approval gate stay waiting (their approvals are in
    the store). Returns the steps that were running (their process groups may live)."""
    now = time.time()
    with store.transaction("recover") as conn:
        steps = conn.execute(
            "SELECT id, run_id, pid, token FROM steps WHERE status = 'running'"
        ).fetchall()
        # Runs waiting at an approval gate run nothing: they survive and the engine resumes them.
        runs = conn.execute("SELECT id, repo, engine FROM runs WHERE status = 'running'").fetchall()
        for run in runs:
            conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, "
                "error = 'the engine stopped while this run was in progress' WHERE id = ?",
                (now, run["id"]),
            )
            conn.execute(
                "UPDATE steps SET status = 'interrupted', finished_at = ? "
                "WHERE run_id = ? AND status IN ('running', 'waiting', 'queued')",
                (now, run["id"]),
            )
            conn.execute(
                "UPDATE stages SET status = 'interrupted', finished_at = ? "
                "WHERE run_id = ? AND status IN ('running', 'waiting', 'queued')",
                (now, run["id"]),
            )
            store.audit(
                ENGINE,
                "run.interrupted",
                f"run/{run['id']}",
                {"repo": run["repo"], "previous_engine": run["engine"], "recovered_by": engine},
            )
            store.event("run.finished", run["repo"], run["id"], status="interrupted")
        # Locks of runs no longer active (e.g. a crash between a stage's end and the release).
        for lock in conn.execute(
            "SELECT l.run_id, r.status FROM env_locks l JOIN runs r ON r.id = l.run_id "
            "WHERE l.state = 'held' AND r.status NOT IN ('running', 'waiting')"
        ).fetchall():
            settle_locks(store, lock["run_id"], interrupted=lock["status"] == "interrupted")
    return steps


def request_cancel(store: Store, run_id: int, actor: str) -> str:
    """Cancel a run: a queued one at once, a running one by asking its engine. Returns the new
    status ('cancelled' or 'cancelling')."""
    from core.errors import InvalidRequest, NotFound

    with store.transaction() as conn:
        row = conn.execute("SELECT repo, status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        if row["status"] in TERMINAL:
            raise InvalidRequest(f"run {run_id} is already {row['status']}")
        store.audit(
            actor, "run.cancel", f"run/{run_id}", {"repo": row["repo"], "status": row["status"]}
        )
        if row["status"] == "queued":
            now = time.time()
            conn.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, cancel_requested = 1 "
                "WHERE id = ?",
                (now, run_id),
            )
            conn.execute(
                "UPDATE steps SET status = 'cancelled', finished_at = ? WHERE run_id = ? "
                "AND status = 'queued'",
                (now, run_id),
            )
            conn.execute(
                "UPDATE stages SET status = 'cancelled', finished_at = ? WHERE run_id = ? "
                "AND status = 'queued'",
                (now, run_id),
            )
            store.event("run.finished", row["repo"], run_id, status="cancelled", by=actor)
            return "cancelled"
        conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
        from core.approvals import cancel_open

        cancel_open(store, run_id, actor)
        store.event("run.cancel_requested", row["repo"], run_id, by=actor)
        return "cancelling"


def save_refs(store: Store, repo: str, refs: dict[str, str], removed: list[str]) -> None:
    """Record one repo's moved and removed branches."""
    save_refs_many(store, {repo: (refs, removed)})


def save_refs_many(store: Store, changes: dict[str, tuple[dict[str, str], list[str]]]) -> None:
    """Record moved and removed branches of many repos in one transaction: {repo: (moved,
    removed)}."""
    now = time.time()
    with store.transaction() as conn:
        for repo, (refs, removed) in changes.items():
            conn.executemany(
                "INSERT INTO refs (repo, ref, sha, seen_at) VALUES (?, ?, ?, ?) ON CONFLICT (repo, ref) "
                "DO UPDATE SET sha = excluded.sha, seen_at = excluded.seen_at",
                [(repo, ref, sha, now) for ref, sha in refs.items()],
            )
            conn.executemany(
                "DELETE FROM refs WHERE repo = ? AND ref = ?", [(repo, r) for r in removed]
            )
            if refs or removed:
                store.event("refs", repo, None, updated=sorted(refs), removed=removed)


def known_refs(store: Store) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for row in store.query("SELECT repo, ref, sha FROM refs"):
        result.setdefault(row["repo"], {})[row["ref"]] = row["sha"]
    return result


# -- environment locks ---------------------------------------------------------------------------

HELD, NEEDS_OPERATOR = "held", "needs_operator"


def env_lock(store: Store, repo: str, environment: str) -> Row | None:
    return store.query_one(
        "SELECT * FROM env_locks WHERE repo = ? AND environment = ?", (repo, environment)
    )


def deploy_blocked(
    store: Store, repo: str, environment: str, run_id: int
) -> tuple[str, str] | None:
    """Why run `run_id` may not deploy to (repo, environment) now: ('locked', why) when an
    operator must resolve it first, ('busy', why) while another live run deploys there; None
    when free (or left by a run that ended without releasing it: taken over)."""
    lock = env_lock(store, repo, environment)
    if lock is None or lock["run_id"] == run_id:
        return None
    if lock["state"] == NEEDS_OPERATOR:
        return "locked", (
            f"{environment} is locked: {lock['reason']}; nothing deploys there until an "
            f"operator checks it and runs: ahead unlock {repo} {environment} --reason TEXT"
        )
    holder = store.query_one("SELECT status FROM runs WHERE id = ?", (lock["run_id"],))
    if holder is not None and holder["status"] in ACTIVE:
        return "busy", f"run #{lock['run_id']} is deploying to {environment}"
    return None


def start_deploy(store: Store, stage_id: int, gated: bool) -> tuple[str, str] | None:
    """Take the (repo, environment) lock and mark the deploying stage running, in one
    transaction, audited. Returns None when started, or why not (see deploy_blocked).
    `gated`: the environment has a policy, so an interrupted deploy locks it for an operator."""
    now = time.time()
    with store.transaction("deploy.start") as conn:
        row = conn.execute(
            "SELECT s.run_id, s.environment, s.name, r.repo, r.commit_sha, r.environment AS target FROM stages s "
            "JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
            (stage_id,),
        ).fetchone()
        repo, env, run_id = row["repo"], row["environment"], row["run_id"]
        blocked = deploy_blocked(store, repo, env, run_id)
        if blocked is not None:
            return blocked
        if row["target"]:  # a reconcile re-deploys what is deployed: never over a newer deploy
            last = conn.execute(
                "SELECT commit_sha FROM deployments WHERE repo = ? AND environment = ? "
                "ORDER BY id DESC LIMIT 1",
                (repo, env),
            ).fetchone()
            if last is not None and last["commit_sha"] != row["commit_sha"]:
                return "moved", (
                    f"{env} moved on to {last['commit_sha'][:7]} since this reconcile was queued; "
                    f"re-deploying {row['commit_sha'][:7]} would roll it back"
                )
        conn.execute(
            "INSERT OR REPLACE INTO env_locks (repo, environment, run_id, stage_id, gated, state, "
            "reason, acquired_at) VALUES (?, ?, ?, ?, ?, 'held', NULL, ?)",
            (repo, env, run_id, stage_id, int(gated), now),
        )
        conn.execute(
            "UPDATE stages SET status = 'running', started_at = COALESCE(started_at, ?) "
            "WHERE id = ?",
            (now, stage_id),
        )
        store.audit(
            ENGINE,
            "deploy.start",
            f"{repo}/{env}",
            {"run": run_id, "stage": row["name"], "commit": row["commit_sha"]},
        )
        store.event(
            "stage.started", repo, run_id, stage_id=stage_id, stage=row["name"], status="running"
        )
        store.event("lock", repo, run_id, environment=env, state=HELD)
    return None


def settle_locks(store: Store, run_id: int, interrupted: bool) -> None:
    """(inside a transaction) Release the locks run `run_id` holds; after an interruption, an
    environment with a policy stays locked for an operator instead (its state is unknown)."""
    conn = store.conn
    for lock in conn.execute(
        "SELECT * FROM env_locks WHERE run_id = ? AND state = 'held'", (run_id,)
    ).fetchall():
        key = (lock["repo"], lock["environment"])
        if interrupted and lock["gated"]:
            reason = f"the deploy of run #{run_id} was interrupted (state unknown)"
            conn.execute(
                "UPDATE env_locks SET state = 'needs_operator', reason = ? WHERE repo = ? "
                "AND environment = ?",
                (reason, *key),
            )
            store.audit(ENGINE, "env.locked", "/".join(key), {"run": run_id, "reason": reason})
            store.event(
                "lock", lock["repo"], run_id, environment=lock["environment"], state=NEEDS_OPERATOR
            )
        else:
            conn.execute("DELETE FROM env_locks WHERE repo = ? AND environment = ?", key)
            store.event("lock", lock["repo"], run_id, environment=lock["environment"], state="free")


def unlock(store: Store, repo: str, environment: str, actor: str, reason: str) -> Row:
    """An operator resolves a locked environment, audited with their reason. Returns the lock.

    Raises:
        NotFound: the environment is not locked.
        InvalidRequest: no reason, or a live run holds the lock (cancel it instead).
    """
    from core.errors import InvalidRequest, NotFound

    if not reason.strip():
        raise InvalidRequest("unlocking needs a reason (--reason TEXT): what you checked")
    with store.transaction("unlock") as conn:
        lock = env_lock(store, repo, environment)
        if lock is None:
            raise NotFound(f"{repo}/{environment} is not locked")
        if lock["state"] == HELD and deploy_blocked(store, repo, environment, -1) is not None:
            raise InvalidRequest(
                f"run #{lock['run_id']} is deploying to {environment} now; cancel it instead"
            )
        conn.execute(
            "DELETE FROM env_locks WHERE repo = ? AND environment = ?", (repo, environment)
        )
        store.audit(
            actor,
            "env.unlock",
            f"{repo}/{environment}",
            {
                "run": lock["run_id"],
                "state": lock["state"],
                "lock_reason": lock["reason"],
                "reason": reason,
            },
        )
        store.event("lock", repo, lock["run_id"], environment=environment, state="free", by=actor)
    return lock
