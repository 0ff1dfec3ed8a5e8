"""Damaged stores fail with one clear line, never a traceback, and take no new writes: a corrupt
page, a file that is not a database, a truncated WAL (an emptied store), a dropped table; and
`ahead serve` on a port in use says so. Real files, real CLI processes."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from core.store.db import Store, marker_path
from core.workspace import Workspace
from tests.core.crash import ahead, engine_process, make_ws, store, trigger

PAGE = 4096


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def raw(ws: Workspace) -> sqlite3.Connection:
    return sqlite3.connect(ws.db_path, isolation_level=None)


def open_change(ws: Workspace) -> int:
    """A prod run waiting at its gate with an open change request (the engine then stopped)."""
    with engine_process(ws) as proc:
        trigger(ws)
        deadline = time.monotonic() + 20
        while True:
            with store(ws) as db:
                change = db.query_one("SELECT id FROM change_requests WHERE status = 'open'")
            if change:
                return int(change["id"])
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)


def smash_table(ws: Workspace, table: str) -> None:
    """Overwrite the root page of `table` in the main file with garbage (checkpointed first)."""
    conn = raw(ws)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with open(ws.db_path, "r+b") as fh:
        fh.seek((root - 1) * PAGE)
        fh.write(b"\xa5" * PAGE)


def test_a_corrupt_page_fails_clearly_and_approve_writes_nothing(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("prod",))
    change = open_change(ws)
    smash_table(ws, "log_lines")  # a table approving never touches
    approve = ahead(ws, "--as", "bob", "approve", str(change))
    one_line_error(approve, "is damaged", "nothing was written", "restore it from a backup")
    conn = raw(ws)
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0
    conn.close()
    one_line_error(ahead(ws, "logs", "1"), "is damaged")  # a read of the bad page: one line
    checked = ahead(ws, "check")
    assert (
        checked.returncode == 1
        and "damaged" in checked.stdout
        and "Traceback" not in checked.stderr
    )
    one_line_error(ahead(ws, "audit", "verify"), "is damaged")
    engine = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    one_line_error(engine, "is damaged")  # the engine checks the store when it opens it


def test_a_file_that_is_not_a_database_fails_clearly(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    trigger(ws)
    with open(ws.db_path, "r+b") as fh:
        fh.write(b"this is not an sqlite file" * 4)
    for suffix in ("-wal", "-shm"):
        Path(str(ws.db_path) + suffix).unlink(missing_ok=True)
    one_line_error(ahead(ws, "status"), "file is not a database")
    one_line_error(ahead(ws, "--as", "alice", "trigger", "app"), "file is not a database")
    checked = ahead(ws, "check")
    assert checked.returncode == 1 and "file is not a database" in checked.stdout, checked.stdout


def test_a_truncated_wal_leaves_no_empty_store_that_verifies(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    db = Store(ws.db_path, session="test").open()  # held open: nothing is checkpointed
    with db.transaction():
        for i in range(5):
            db.audit("alice", "test.entry", f"thing/{i}")
    verified = ahead(ws, "audit", "verify")
    assert verified.returncode == 0 and "5 entries" in verified.stdout, verified.stderr
    # the host dies with the store's contents still in the WAL, and the WAL is lost
    saved = tmp_path / "saved.db"
    shutil.copy(ws.db_path, saved)
    db.close()
    shutil.copy(saved, ws.db_path)
    Path(str(ws.db_path) + "-wal").write_bytes(b"")
    Path(str(ws.db_path) + "-shm").unlink(missing_ok=True)
    for args in (["audit", "verify"], ["status"]):
        one_line_error(ahead(ws, *args), "is not the one this workspace made", "lost its contents")
    # adopting the emptied store (as the message offers) still does not verify: the chain is short
    marker_path(ws.db_path).unlink()
    short = ahead(ws, "audit", "verify")
    one_line_error(short, "the chain has 0 entries but was 5 entries long at")


def test_a_store_rolled_back_to_an_older_copy_reports_a_shorter_chain(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    with store(ws) as db, db.transaction():
        db.audit("alice", "test.entry", "first")
    old = tmp_path / "old.db"
    shutil.copy(ws.db_path, old)  # closed: everything is in the main file
    with store(ws) as db, db.transaction():
        for i in range(3):
            db.audit("alice", "test.entry", f"later/{i}")
    assert ahead(ws, "audit", "verify").returncode == 0
    shutil.copy(old, ws.db_path)
    one_line_error(ahead(ws, "audit", "verify"), "the chain has 1 entries but was 4 entries long")


def test_a_dropped_table_fails_clearly_and_takes_no_writes(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    trigger(ws)
    conn = raw(ws)
    conn.execute("DROP TABLE audit")
    runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    conn.close()
    for args in (["audit", "verify"], ["status"], ["--as", "alice", "trigger", "app"]):
        one_line_error(ahead(ws, *args), "table(s) audit missing", "restore it from a backup")
    conn = raw(ws)
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == runs
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit'").fetchone()
    conn.close()


def test_serve_on_a_port_in_use_names_it(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", envs=("dev",))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "core.cli",
                "--workspace",
                str(ws.root),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    one_line_error(
        done,
        f"port {port} on 127.0.0.1 is in use (by pid {os.getpid()})",
        "choose another with --listen",
    )
