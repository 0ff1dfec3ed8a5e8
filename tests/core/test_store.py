"""The SQLite store: durability settings, migrations, the append-only audit chain, the feed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.errors import StoreError
from core.store.db import Store
from core.store.schema import MIGRATIONS


def test_store_settings_and_schema_version(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        assert store.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
        assert store.query_one("PRAGMA synchronous")["synchronous"] == 2  # FULL
        assert store.query_one("PRAGMA busy_timeout")["timeout"] >= 5000
        assert store.query_one("SELECT MAX(version) AS v FROM schema_version")["v"] == len(
            MIGRATIONS
        )
    with Store(tmp_path / "state.db") as again:  # reopening applies nothing twice
        assert again.query_one("SELECT COUNT(*) AS n FROM schema_version")["n"] == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store, store.transaction() as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    with pytest.raises(StoreError, match="newer than this ahead understands"):
        Store(tmp_path / "state.db").open()


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable store"):
        Store(tmp_path / "state.db").open()


def test_audit_chain_verifies_and_refuses_update_and_delete(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        for i in range(5):
            with store.transaction():
                store.audit("alice", "run.trigger", f"run/{i}", {"n": i})
        assert store.verify_audit() == (True, 5, "")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute("DELETE FROM audit WHERE id = 5")
        # someone with the file drops the trigger and edits a row: verify names the entry
        store.conn.execute("DROP TRIGGER audit_no_update")
        store.conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = 3")
        ok, _, problem = store.verify_audit()
        assert not ok and problem.startswith("entry 3:")


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.audit("alice", "x", "y")
            store.event("x")
            raise RuntimeError("boom")
        assert store.query_one("SELECT COUNT(*) AS n FROM audit")["n"] == 0
        assert store.last_event_id() == 0


def test_events_are_tailed_by_id_from_another_connection(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as writer, Store(tmp_path / "state.db") as reader:
        start = reader.last_event_id()
        with writer.transaction():
            writer.event("run.queued", "app", 1, branch="main")
            writer.event("run.started", "app", 1)
        rows = reader.events_after(start)
        assert [r["kind"] for r in rows] == ["run.queued", "run.started"]
        assert reader.events_after(rows[-1]["id"]) == []
