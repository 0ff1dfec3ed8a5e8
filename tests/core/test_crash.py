"""Crash recovery: an engine (or CLI) killed at every named commit point of the approve,
gate, deploy-start, deploy-end, run-end, recover and unlock paths, and by real SIGKILLs at
random moments; after each restart the invariants of tests.core.crash.check_invariants hold,
and an environment with a policy whose deploy was interrupted stays locked until an operator
unlocks it (audited) while other environments recover on their own."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from core.faults import EXIT_CODE
from core.store.db import Store
from core.workspace import Workspace
from tests.core.crash import (
    ahead,
    check_invariants,
    drive,
    engine_process,
    ledger,
    make_ws,
    settle,
    store,
    trigger,
)

# point -> whether the interrupted deploy leaves the environment in an unknown state (a lock
# taken and not released in a committed transaction)
ENGINE_POINTS = {
    "deploy.start.before_commit": False,
    "deploy.start.after_commit": True,
    "deploy.end.before_commit": True,
    "deploy.end.after_commit": False,
    "run.end.before_commit": False,
    "run.end.after_commit": False,
}


def crash_once(ws: Workspace, point: str, acknowledged: list[int]) -> int:
    with engine_process(ws, fault=point) as proc:
        run_id = trigger(ws)
        drive(ws, proc, run_id, acknowledged)
        proc.wait(timeout=20)
        assert proc.returncode == EXIT_CODE, f"the engine did not stop at {point}"
    return run_id


@pytest.mark.parametrize("env", ["dev", "prod"])
@pytest.mark.parametrize("point", list(ENGINE_POINTS))
def test_engine_killed_at_a_commit_point_recovers(tmp_path: Path, point: str, env: str) -> None:
    ws = make_ws(tmp_path / "ws", envs=(env,))
    acknowledged: list[int] = []
    run_id = crash_once(ws, point, acknowledged)
    settle(ws, acknowledged)
    locks = check_invariants(ws, acknowledged)
    with store(ws) as db:
        run = db.query_one("SELECT * FROM runs WHERE id = ?", (run_id,))
        stage = db.query_one("SELECT * FROM stages WHERE run_id = ?", (run_id,))
    assert run is not None and stage is not None
    if point == "run.end.after_commit":
        assert run["status"] == "succeeded"
    else:
        assert run["status"] == "interrupted", run  # never re-run on its own, never succeeded
    assert stage["status"] == (
        "succeeded" if point.startswith(("deploy.end.after", "run.end")) else "interrupted"
    )
    assert len(ledger(ws, env, "started")) == (0 if point.startswith("deploy.start") else 1)
    unknown = ENGINE_POINTS[point] and env == "prod"
    assert set(locks) == ({"prod"} if unknown else set())
    if not unknown:
        return
    # prod stays locked: the next run deploys nothing there and says why, without asking for approval
    again = ahead(ws, "--as", "alice", "trigger", "app")
    assert again.returncode == 0, again.stderr
    settle(ws, acknowledged)
    with store(ws) as db:
        refused = db.query_one("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        assert (
            refused is not None
            and refused["status"] == "failed"
            and "prod is locked" in refused["error"]
        )
        assert not db.query("SELECT 1 FROM change_requests WHERE run_id = ?", (refused["id"],))
    listing = ahead(ws, "locks")
    assert "needs_operator" in listing.stdout and f"#{run_id}" in listing.stdout
    assert "LOCKED" in ahead(ws, "status").stdout
    # only an admin or approver may unlock, with a reason, and it is audited
    denied = ahead(ws, "--as", "alice", "unlock", "app", "prod", "--reason", "checked")
    assert denied.returncode == 3 and "admin or approver" in denied.stderr
    done = ahead(
        ws, "--as", "admin", "unlock", "app", "prod", "--reason", "checked prod by hand: v1 live"
    )
    assert done.returncode == 0, done.stderr
    assert ahead(ws, "--as", "alice", "trigger", "app").returncode == 0
    settle(ws, acknowledged)
    check_invariants(ws, acknowledged)
    with store(ws) as db:
        last = db.query_one("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        assert last is not None and last["status"] == "succeeded"
        entry = db.query_one("SELECT * FROM audit WHERE action = 'env.unlock'")
        assert (
            entry is not None
            and entry["actor"] == "admin"
            and "checked prod by hand" in entry["detail"]
        )
        assert db.query_one("SELECT 1 FROM audit WHERE action = 'env.locked'")


@pytest.mark.parametrize("point", ["gate.pass.before_commit", "gate.pass.after_commit"])
def test_engine_killed_as_the_gate_passes(tmp_path: Path, point: str) -> None:
    ws = make_ws(tmp_path / "ws", envs=("prod",))
    acknowledged: list[int] = []
    run_id = crash_once(ws, point, acknowledged)
    assert acknowledged, "the approval was not acknowledged"
    settle(ws, acknowledged)
    locks = check_invariants(ws, acknowledged)
    with store(ws) as db:
        run = db.query_one("SELECT * FROM runs WHERE id = ?", (run_id,))
    assert run is not None
    if point.endswith(
        "before_commit"
    ):  # still waiting at the gate: resumed, approval kept, deployed
        assert run["status"] == "succeeded" and ledger(ws, "prod", "done") == [run_id]
    else:  # the gate passed but nothing ran: interrupted, prod untouched and not locked
        assert run["status"] == "interrupted" and ledger(ws, "prod", "started") == []
    assert locks == {}


@pytest.mark.parametrize("point", ["approve.before_commit", "approve.after_commit"])
def test_cli_killed_while_approving(tmp_path: Path, point: str) -> None:
    ws = make_ws(tmp_path / "ws", envs=("prod",))
    acknowledged: list[int] = []
    with engine_process(ws) as proc:
        run_id = trigger(ws)
        with store(ws) as db:
            deadline = time.monotonic() + 20
            while not (
                change := db.query_one("SELECT id FROM change_requests WHERE status = 'open'")
            ):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        killed = ahead(ws, "--as", "bob", "approve", str(change["id"]), fault=point)
        assert killed.returncode == EXIT_CODE and killed.stdout == ""  # never acknowledged
        with store(ws) as db:
            stored = db.query("SELECT * FROM decisions WHERE change_id = ?", (change["id"],))
        assert len(stored) == (1 if point.endswith("after_commit") else 0)
        drive(ws, proc, run_id, acknowledged)  # approves again when the first never landed
    settle(ws, acknowledged)
    check_invariants(ws, acknowledged)
    with store(ws) as db:
        assert (
            db.query_one("SELECT status FROM runs WHERE id = ?", (run_id,))["status"] == "succeeded"
        )


def test_crash_during_recovery_and_unlock(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("prod",))
    acknowledged: list[int] = []
    crash_once(ws, "deploy.start.after_commit", acknowledged)
    for point in ("recover.before_commit", "recover.after_commit"):
        with engine_process(ws, fault=point) as proc:
            proc.wait(timeout=20)
            assert proc.returncode == EXIT_CODE
    settle(ws, acknowledged)
    assert set(check_invariants(ws, acknowledged)) == {"prod"}
    killed = ahead(
        ws, "--as", "bob", "unlock", "app", "prod", "--reason", "x", fault="unlock.before_commit"
    )
    assert killed.returncode == EXIT_CODE
    assert set(check_invariants(ws, acknowledged)) == {"prod"}
    killed = ahead(
        ws, "--as", "bob", "unlock", "app", "prod", "--reason", "x", fault="unlock.after_commit"
    )
    assert killed.returncode == EXIT_CODE
    assert check_invariants(ws, acknowledged) == {}
    with store(ws) as db:
        assert len(db.query("SELECT 1 FROM audit WHERE action = 'env.unlock'")) == 1


def kill_loop(ws: Workspace, iterations: int, seed: int) -> dict[str, int]:
    """Real SIGKILLs at random moments of a dev+prod deploy, restart, check, unlock if needed."""
    rng = random.Random(seed)
    acknowledged: list[int] = []
    locked = 0
    for _ in range(iterations):
        with engine_process(ws) as proc:
            run_id = trigger(ws)
            deadline = time.monotonic() + rng.uniform(0.0, 1.5)
            while time.monotonic() < deadline:
                drive(ws, proc, run_id, acknowledged, timeout=0.05)
            proc.kill()
        settle(ws, acknowledged)
        locks = check_invariants(ws, acknowledged)
        if locks:
            locked += 1
            with store(ws) as db:
                from core.services import Actor, Services

                Services(ws, db).unlock(
                    "app", "prod", Actor("bob", ("approver",)), "checked after kill -9"
                )
    with Store(ws.db_path) as db:
        runs = db.query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
    return {"locked": locked, **{r["status"]: r["n"] for r in runs}}


def test_kill_9_at_random_moments_ci(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", sleep=0.3)
    counts = kill_loop(ws, 3, seed=7)
    assert sum(v for k, v in counts.items() if k != "locked") >= 3


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_at_random_moments_100_times(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", sleep=0.3)
    counts = kill_loop(ws, 100, seed=20261126)
    print("kill -9 loop:", counts)
    assert counts.get("interrupted", 0) > 10  # the kills did land mid-run
