"""Fencing against split brain: an engine that lost the workspace lease (paused with SIGSTOP past
`lease_timeout`, then continued) or its store (state.db deleted or replaced under it) writes
nothing more and removes nothing of the engine that took over; a CLI never makes a new empty
store where a workspace already had one."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from core import lease
from core.engine import Engine
from core.errors import LeaseLost, StoreError
from core.store.db import Store, marker_path
from core.workspace import Workspace
from core.workspace import read as read_workspace
from tests.core.crash import ahead, engine_process, ledger, make_ws, store, trigger
from tests.core.helpers import wait_for


def short_lease(ws: Workspace) -> Workspace:
    text = ws.file.read_text().replace("settings:\n", "settings:\n  lease_timeout: 1s\n")
    ws.file.write_text(text)
    return read_workspace(ws.file)


def start_engine(ws: Workspace) -> subprocess.Popen[str]:
    """`ahead engine` in a subprocess with its stderr kept, started once it holds the lease."""
    env = {**os.environ, "LEDGER": str(ws.root / "ledger")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        if ws.db_path.exists():
            with store(ws) as db:
                if db.query_one("SELECT 1 FROM lease WHERE pid = ?", (proc.pid,)):
                    return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the engine did not start: {proc.communicate()[1]}")


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def pause(ws: Workspace, proc: subprocess.Popen[str]) -> None:
    """SIGSTOP `proc` at a moment it holds no write transaction (a process stopped inside one
    blocks every writer until it continues: what fencing cannot help, see RELIABILITY.md)."""
    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        probe = sqlite3.connect(ws.db_path, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        finally:
            probe.close()
    raise AssertionError("the engine never left its write transaction")


def run_rows(ws: Workspace, run_id: int) -> list[Any]:
    with store(ws) as db:
        return [
            db.query("SELECT * FROM runs WHERE id = ?", (run_id,)),
            db.query("SELECT * FROM stages WHERE run_id = ? ORDER BY id", (run_id,)),
            db.query("SELECT * FROM steps WHERE run_id = ? ORDER BY id", (run_id,)),
            db.query("SELECT * FROM deployments WHERE run_id = ?", (run_id,)),
            db.query("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,)),
        ]


def test_an_engine_paused_past_its_lease_writes_nothing_when_it_continues(tmp_path: Path) -> None:
    """A's deploy step finishes while A is stopped; B takes over and recovers the run as
    interrupted. A, continued, must not record the step, the stage, the deployment or the run."""
    ws = short_lease(make_ws(tmp_path / "ws", envs=("dev",), sleep=0.3))
    first = start_engine(ws)
    try:
        run_id = trigger(ws)
        wait_until(lambda: run_id in ledger(ws, "dev", "started"))
        pause(ws, first)
        stopped = time.monotonic()
        wait_until(
            lambda: run_id in ledger(ws, "dev", "done")
        )  # the deploy ran to its end meanwhile
        time.sleep(max(0.0, 1.2 - (time.monotonic() - stopped)))  # A's lease goes stale
        with engine_process(ws) as second:
            with store(ws) as db:
                assert db.query_one("SELECT pid FROM lease")["pid"] == second.pid
            wait_until(lambda: run_rows(ws, run_id)[0][0]["status"] == "interrupted")
            before = run_rows(ws, run_id)
            os.kill(first.pid, signal.SIGCONT)
            _, err = first.communicate(timeout=10)
            assert run_rows(ws, run_id) == before  # nothing of A's landed: no step end, no deploy
            assert before[3] == []
            assert first.returncode == 1, err
            assert (
                "lost the workspace lease to another engine" in err
                and "nothing more is written" in err
            )
            assert "Traceback" not in err
            with store(ws) as db:
                assert (
                    db.query_one("SELECT pid FROM lease")["pid"] == second.pid
                )  # B still holds it
            assert second.poll() is None
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()


def test_deleting_the_store_stops_the_engine_and_no_cli_makes_a_new_one(tmp_path: Path) -> None:
    ws = short_lease(make_ws(tmp_path / "ws", envs=("dev",)))
    engine = start_engine(ws)
    try:
        ws.db_path.unlink()
        _, err = engine.communicate(timeout=10)
        assert engine.returncode == 1
        assert (
            f"the store {ws.db_path} was deleted or replaced while this engine ran; stopping" in err
        )
        assert "Traceback" not in err
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert not ws.db_path.exists()  # the stopping engine wrote nothing, not even a new file
    for args in (["status"], ["--as", "alice", "trigger", "app"], ["audit", "verify"]):
        done = ahead(ws, *args)
        assert done.returncode == 1, (args, done.stdout)
        assert "is missing but" in done.stderr and "restore it from a backup" in done.stderr, (
            done.stderr
        )
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert not ws.db_path.exists()
    second = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1 and "is missing but" in second.stderr  # no second engine either
    assert not ws.db_path.exists()


def test_a_replaced_store_is_refused(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    trigger(ws)
    other = tmp_path / "other" / "state.db"
    Store(other).open().close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(ws.db_path) + suffix).unlink(missing_ok=True)
    os.replace(other, ws.db_path)
    done = ahead(ws, "status")
    assert done.returncode == 1 and "is not the one this workspace made" in done.stderr, done.stderr
    with pytest.raises(StoreError, match="was replaced"):
        Store(ws.db_path, create=True).open()


def test_a_store_replaced_under_a_running_engine_stops_it(tmp_path: Path, ws: Workspace) -> None:
    async def scenario() -> None:
        engine = Engine(ws, watch=False)
        await engine.start()
        try:
            copy = ws.db_path.with_name("copy.db")
            with Store(ws.db_path) as db:
                db.query("VACUUM INTO ?", (str(copy),))
            os.replace(copy, ws.db_path)  # same contents, same lease row: another file
            with pytest.raises(LeaseLost, match="deleted or replaced"):
                await engine.db.call(lease.heartbeat, engine.db.store, engine._token)
            await asyncio.wait_for(engine.lost_lease.wait(), 2)
            assert engine.lost_reason is not None and "deleted or replaced" in engine.lost_reason
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def take_over(ws: Workspace) -> str:
    """Another engine takes the lease (as after A's heartbeat went stale)."""
    token = uuid.uuid4().hex
    with Store(ws.db_path, session="engine B") as db:
        lease.acquire(db, "engine B", token, stale_after=0.0)
    return token


def test_an_engine_that_lost_the_lease_removes_no_checkouts(tmp_path: Path, ws: Workspace) -> None:
    """The issue's case: A paused in its recovery, B took over and checked out a run; A's
    stale-checkout removal must not delete B's checkout."""

    async def scenario() -> None:
        engine = Engine(ws, watch=False)
        await engine.start()
        try:
            take_over(ws)
            theirs = ws.state_dir / "work" / "app" / "7"
            theirs.mkdir(parents=True)
            (theirs / "deploy.sh").write_text("echo deploying\n")
            with pytest.raises(LeaseLost):
                await engine._recover()
            assert (theirs / "deploy.sh").exists()
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def test_an_engine_that_lost_the_lease_leaves_its_run_and_checkout_to_the_new_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = short_lease(make_ws(tmp_path / "ws", envs=("dev",), sleep=3))
    monkeypatch.setenv("LEDGER", str(ws.root / "ledger"))

    async def scenario() -> None:
        engine = Engine(ws, watch=False)
        await engine.start()
        try:
            run_id = await asyncio.to_thread(trigger, ws)
            engine._wake.set()
            await wait_for(
                engine, "SELECT 1 FROM steps WHERE run_id = ? AND status = 'running'", (run_id,)
            )
            workdir = ws.state_dir / "work" / "app" / str(run_id)
            assert workdir.is_dir()
            await asyncio.to_thread(take_over, ws)
            await asyncio.wait_for(engine.lost_lease.wait(), 3)
            while engine._runs:  # the run task ends (its step is stopped)
                await asyncio.sleep(0.05)
            with Store(ws.db_path) as db:
                assert (
                    db.query_one("SELECT status FROM runs WHERE id = ?", (run_id,))["status"]
                    == "running"
                )
                assert (
                    db.query_one("SELECT status FROM steps WHERE run_id = ?", (run_id,))["status"]
                    == "running"
                )
            assert workdir.is_dir()  # the new holder's recovery deals with it, not A
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def test_only_an_engine_makes_a_store_where_an_engine_ran(tmp_path: Path) -> None:
    """A workspace from before the store id: checkouts but no state.db. A CLI open refuses (and
    makes no file); the engine's open (create=True) makes the store and its id file."""
    state = tmp_path / ".ahead"
    (state / "work" / "app").mkdir(parents=True)
    db = state / "state.db"
    with pytest.raises(StoreError, match=r"holds this workspace's state \(work\)"):
        Store(db).open()
    assert not db.exists()
    made = Store(db, create=True).open()
    made.close()
    assert marker_path(db).read_text().strip() == made.store_id != ""
    Store(db).open().close()  # from now on the CLI opens it as usual
