"""Crash-test harness: engines in subprocesses (real SQLite file, real git, real steps), killed
at named fault points (AHEAD_FAULT) or with a real SIGKILL, then restarted and checked.

Every deploy step appends its run id to a ledger file when it starts and when it ends, so a
test can tell whether a deploy ran twice (it never may) from outside the store.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core import approvals
from core.engine import Engine
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace, current_os_user
from core.workspace import read as read_workspace
from tests.conftest import make_repo

ACTIVE = ("queued", "running", "waiting")
STEP = (
    'echo "$AHEAD_RUN_ID" >> "$LEDGER/{env}-started"; sleep {sleep}; '
    'echo "$AHEAD_RUN_ID" >> "$LEDGER/{env}-done"'
)


def pipeline(envs: tuple[str, ...], sleep: float = 0.2) -> str:
    lines = ["stages:"]
    for env in envs:
        lines += [
            f"  - name: deploy-{env}",
            f"    environment: {env}",
            "    steps:",
            f"      - run: '{STEP.format(env=env, sleep=sleep)}'",
        ]
    return "\n".join(lines) + "\n"


def make_ws(root: Path, envs: tuple[str, ...] = ("dev", "prod"), sleep: float = 0.2) -> Workspace:
    """dev has no policy; prod needs one approval from bob (alice triggers and authors)."""
    root.mkdir(parents=True, exist_ok=True)
    make_repo(root / "repos" / "app", pipeline(envs, sleep))
    me = current_os_user()
    (root / "ahead.yml").write_text(f"""\
repos:
  - name: app
    path: repos/app
environments: [dev, prod]
policies:
  prod:
    approvals: 1
    approvers: [bob]
operators:
  - name: alice
    roles: [operator]
    emails: [alice@example.com]
    os_users: [{me}]
  - name: bob
    roles: [approver]
    emails: [bob@example.com]
    os_users: [{me}]
  - name: admin
    roles: [admin]
    os_users: [{me}]
settings:
  cancel_grace: 1s
  poll_interval: 0.2
""")
    (root / "ledger").mkdir()
    return read_workspace(root / "ahead.yml")


def ahead(ws: Workspace, *args: str, fault: str = "") -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process (AHEAD_FAULT armed when `fault` is given)."""
    env = {**os.environ, "AHEAD_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@contextmanager
def engine_process(ws: Workspace, fault: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """`ahead engine` in a subprocess, started once it holds the lease; killed on exit."""
    env = {**os.environ, "AHEAD_FAULT": fault, "LEDGER": str(ws.root / "ledger")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Store(ws.db_path) as store:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                if store.query_one("SELECT 1 FROM lease WHERE pid = ?", (proc.pid,)):
                    break
                time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def store(ws: Workspace) -> Store:
    return Store(ws.db_path, session="test").open()


def trigger(ws: Workspace) -> int:
    with store(ws) as db:
        return Services(ws, db).trigger("app", Actor("alice", ("operator",)))


def approve_open(ws: Workspace, acknowledged: list[int]) -> None:
    """bob approves every open change; the ids of decisions the store acknowledged are kept."""
    with store(ws) as db:
        for change in approvals.changes(db, "open"):
            verdict = approvals.decide(db, ws, change["id"], "bob", "approve")
            if verdict.ok:
                acknowledged.append(change["id"])


def drive(
    ws: Workspace,
    proc: subprocess.Popen[bytes],
    run_id: int,
    acknowledged: list[int],
    timeout: float = 20.0,
) -> None:
    """Approve as needed until the engine process died or the run ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        approve_open(ws, acknowledged)
        with store(ws) as db:
            run = db.query_one("SELECT status FROM runs WHERE id = ?", (run_id,))
        if run is not None and run["status"] not in ACTIVE:
            return
        time.sleep(0.05)


def settle(ws: Workspace, acknowledged: list[int], timeout: float = 30.0) -> None:
    """Restart an engine in this process (recovery) and let every run finish, approving gates."""

    async def run() -> None:
        async with Engine(ws):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                await asyncio.to_thread(approve_open, ws, acknowledged)
                with store(ws) as db:
                    if not db.query(
                        "SELECT id FROM runs WHERE status IN ('queued', 'running', 'waiting')"
                    ):
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("runs did not finish after the restart")

    previous = os.environ.get("LEDGER")
    os.environ["LEDGER"] = str(ws.root / "ledger")  # the steps of this engine write the ledger too
    try:
        asyncio.run(run())
    finally:
        if previous is None:
            del os.environ["LEDGER"]
        else:
            os.environ["LEDGER"] = previous


def ledger(ws: Workspace, env: str, what: str) -> list[int]:
    path = ws.root / "ledger" / f"{env}-{what}"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def check_invariants(ws: Workspace, acknowledged: list[int]) -> dict[str, Any]:
    """What must hold after any crash and recovery. Returns the locks left for an operator."""
    with store(ws) as db:
        assert db.query_one("PRAGMA integrity_check")["integrity_check"] == "ok"
        ok, _, problem = db.verify_audit()
        assert ok, problem
        for table in ("runs", "stages", "steps"):
            left = db.query(f"SELECT id, status FROM {table} WHERE status = 'running'")
            assert left == [], f"{table} left running: {left}"
        for change_id in acknowledged:  # 0 acknowledged approvals lost
            assert db.query_one(
                "SELECT 1 FROM decisions WHERE change_id = ? AND operator = 'bob' "
                "AND verdict = 'approve'",
                (change_id,),
            ), f"approval of change {change_id} lost"
        for stage in db.query("SELECT * FROM stages WHERE environment IS NOT NULL"):
            deployed = db.query("SELECT * FROM deployments WHERE stage_id = ?", (stage["id"],))
            # an interrupted deploy is never marked succeeded; a recorded deploy is a succeeded stage
            assert len(deployed) == (1 if stage["status"] == "succeeded" else 0), (stage, deployed)
        for env in ("dev", "prod"):
            started = ledger(ws, env, "started")
            assert len(started) == len(set(started)), f"a {env} deploy ran twice: {started}"
        for run in db.query("SELECT id FROM runs WHERE status = 'interrupted'"):
            assert not db.query(
                "SELECT 1 FROM stages WHERE run_id = ? AND status IN "
                "('queued', 'running', 'waiting')",
                (run["id"],),
            )
        locks = db.query("SELECT * FROM env_locks")
        assert all(
            lock["state"] == "needs_operator" and lock["environment"] == "prod" for lock in locks
        ), locks
        return {lock["environment"]: lock for lock in locks}
