"""The SQLite store: the one source of truth every process shares.

WAL mode, `synchronous=FULL`, a busy timeout, and every write in a `BEGIN IMMEDIATE`
transaction that also appends its event row (the change feed other processes tail by id) and,
for changes made by or for a person, a hash-chained audit entry. The only module (with its
package) that imports sqlite3. The class is synchronous: the CLI uses it directly, the engine
through `AsyncStore`, which runs every call on one dedicated thread so the event loop never
touches SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from core import faults
from core.errors import StoreError
from core.store.schema import MIGRATIONS

P = ParamSpec("P")
T = TypeVar("T")
Row = dict[str, Any]
GENESIS = "0" * 64


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Store:
    """A connection to the workspace's state database.

    Args:
        path: the database file (created with its directory if missing).
        session: names the process or operator session in audit entries.
    """

    def __init__(self, path: Path, session: str = "local") -> None:
        self.path = path
        self.session = session
        self._conn: sqlite3.Connection | None = None
        self._in_tx = False
        self.on_commit: Callable[[], None] | None = None
        self._wrote_event = False
        self.owner_thread: int | None = None  # when set, only this thread may use the connection

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Store:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        conn.row_factory = _dict_row
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode and mode["journal_mode"].lower() != "wal":
                raise StoreError(f"{self.path}: the store needs WAL mode, got {mode['journal_mode']}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._conn = None
            raise StoreError(f"{self.path} is not a usable store: {exc}") from None
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self.open() if self._conn is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        if self.owner_thread is not None and threading.get_ident() != self.owner_thread:
            raise RuntimeError("store used outside its thread (an SQLite call on the event loop?)")
        return self._conn

    def _migrate(self) -> None:
        with self.transaction():
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        current = row["v"] or 0
        if current > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema version {current}, newer than this ahead "
                             f"understands ({len(MIGRATIONS)}); upgrade ahead")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                again = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
                if (again["v"] or 0) >= version:
                    continue  # another process migrated first
                for statement in _split_sql(MIGRATIONS[version - 1]):
                    self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, point: str | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (`BEGIN IMMEDIATE`): all of it lands, or none of it.

        `point` names it for fault injection (core.faults): `point.before_commit` dies with
        the transaction open, `point.after_commit` right after it landed.
        """
        if self._in_tx:
            yield self.conn
            return
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from None
        self._in_tx = True
        try:
            yield conn
        except BaseException as exc:
            self._in_tx = False
            self._wrote_event = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
                raise StoreError(self._unsaved(exc)) from None  # a full disk mid-transaction
            raise
        self._in_tx = False
        if point is not None and faults.ARMED:
            faults.fault(point + ".before_commit")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._wrote_event = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreError(self._unsaved(exc)) from None
        if point is not None and faults.ARMED:
            faults.fault(point + ".after_commit")
        if self._wrote_event:
            self._wrote_event = False
            if self.on_commit is not None:
                self.on_commit()

    def _unsaved(self, exc: BaseException) -> str:
        hint = "; free space on that disk" if "full" in str(exc) else ""
        return f"could not save to the store {self.path}: {exc} (nothing of this was saved{hint})"

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    # -- events and audit (call inside a transaction) ------------------------------------------

    def event(self, kind: str, repo: str | None = None, run_id: int | None = None,
              **data: Any) -> int:
        """Append an event row to the change feed."""
        assert self._in_tx, "events are written inside a transaction"
        cur = self.conn.execute(
            "INSERT INTO events (ts, kind, repo, run_id, data) VALUES (?, ?, ?, ?, ?)",
            (time.time(), kind, repo, run_id, json.dumps(data, sort_keys=True)),
        )
        self._wrote_event = True
        return int(cur.lastrowid or 0)

    def audit(self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None,
              session: str | None = None) -> str:
        """Append a hash-chained audit entry; returns its hash."""
        assert self._in_tx, "audit entries are written inside a transaction"
        last = self.conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev = last["hash"] if last else GENESIS
        ts = time.time()
        detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        sess = session or self.session
        digest = audit_hash(prev, ts, actor, sess, action, subject, detail_text)
        self.conn.execute(
            "INSERT INTO audit (ts, actor, session, action, subject, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, actor, sess, action, subject, detail_text, prev, digest),
        )
        return digest

    def verify_audit(self, head: tuple[int, str] | None = None) -> tuple[bool, int, str]:
        """Check the whole chain. Returns (ok, entries checked, problem with the first bad entry).

        The chain alone shows any edit, deletion, reordering or insertion before its last entry;
        it cannot show a cut-off tail or a chain recomputed from an edited entry onward. `head`
        (a `(seq, hash)` from `audit_head`, kept off this host) closes that gap: the chain must
        still hold entry seq with exactly that hash.
        """
        prev = GENESIS
        count = 0
        held = None
        for row in self.conn.execute("SELECT * FROM audit ORDER BY id"):
            count += 1
            if row["id"] != count:  # ids run 1, 2, 3...: rows are never deleted
                return False, count, f"entry {row['id']}: expected entry {count} here (entries missing or renumbered)"
            if row["prev_hash"] != prev:
                return False, count, f"entry {row['id']}: does not follow the entry before it"
            try:
                expect = audit_hash(prev, row["ts"], row["actor"], row["session"], row["action"],
                                    row["subject"], row["detail"])
            except (TypeError, ValueError):  # a value of the wrong type put in by hand
                expect = ""
            if expect != row["hash"]:
                return False, count, f"entry {row['id']}: contents do not match its hash"
            if head is not None and row["id"] == head[0]:
                held = row["hash"]
            prev = row["hash"]
        if head is not None and held != head[1]:
            problem = (f"entry {head[0]} is missing (the log was cut off)" if held is None else
                       f"entry {head[0]} no longer has the recorded hash (the chain was rewritten)")
            return False, count, problem
        return True, count, ""

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest audit entry: ship it off this host to check the log later."""
        row = self.query_one("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
        return (int(row["id"]), str(row["hash"])) if row else None

    def last_event_id(self) -> int:
        row = self.query_one("SELECT MAX(id) AS id FROM events")
        return int(row["id"] or 0) if row else 0

    def events_after(self, after: int, limit: int = 1000) -> list[Row]:
        return self.query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))


def audit_hash(prev: str, ts: float, actor: str, session: str, action: str, subject: str,
               detail: str) -> str:
    if not isinstance(ts, float) or not all(isinstance(v, str) for v in (actor, session, action, subject, detail)):
        raise TypeError("audit fields have the wrong types")
    body = json.dumps([prev, repr(ts), actor, session, action, subject, detail],
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


class AsyncStore:
    """Runs Store calls on one dedicated thread, so the event loop never blocks on SQLite.

    Every call is serialised on that thread (one connection, used by one thread at a time).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        name = store.session.split(":")[0] or "store"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ahead-store-{name}")
        self.thread_ident: int | None = None

    async def open(self) -> None:
        await self.call(self._open)

    def _open(self) -> None:
        self.thread_ident = threading.get_ident()
        self.store.owner_thread = self.thread_ident
        self.store.open()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.call(self.store.close)
        self._executor.shutdown(wait=True)
