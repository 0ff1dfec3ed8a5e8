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
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from core import faults
from core.errors import LeaseLost, StoreError, StoreReplaced
from core.store.schema import MIGRATIONS

P = ParamSpec("P")
T = TypeVar("T")
Row = dict[str, Any]
GENESIS = "0" * 64
DatabaseError = (
    sqlite3.DatabaseError
)  # the CLI's last net for a damaged store (it never imports sqlite3)
# What in a state directory shows that an engine already ran there (a missing store there was
# deleted, not never made): checkouts, artifacts, mirrors. Not keys or known_hosts: `ahead runner
# trust` and `ahead drift trust` write those before the first store is made.
STATE_ENTRIES = ("work", "artifacts", "mirrors")


def marker_path(db: Path) -> Path:
    """The file beside the store that holds the store's id (written when the store is made)."""
    return db.parent / ("store-id" if db.name == "state.db" else f"{db.name}.store-id")


def expected_tables(version: int) -> set[str]:
    """The tables the migrations up to `version` leave (an open store must have them all)."""
    tables: set[str] = set()
    for script in MIGRATIONS[:version]:
        for verb, name in re.findall(
            r"\b(CREATE TABLE|DROP TABLE)\s+(?:IF (?:NOT )?EXISTS\s+)?(\w+)", script, re.IGNORECASE
        ):
            if verb.upper().startswith("CREATE"):
                tables.add(name)
            else:
                tables.discard(name)
        for old, new in re.findall(
            r"ALTER TABLE\s+(\w+)\s+RENAME TO\s+(\w+)", script, re.IGNORECASE
        ):
            tables.discard(old)
            tables.add(new)
    return tables


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Store:
    """A connection to the workspace's state database.

    Args:
        path: the database file (created with its directory if missing, unless the directory
            already holds a workspace's state: see `open`).
        session: names the process or operator session in audit entries.
        create: may make a new store even where the state directory holds other state (`ahead
            init`, the engine's first start, the demo). Never where the store's id file
            (`marker_path`) or its `-wal` file shows that a store was there.

    Attributes:
        fence: the engine's lease token. When set, every write transaction first checks, inside
            its `BEGIN IMMEDIATE`, that the lease row still holds this token and that the file at
            `path` is still the one opened, and raises LeaseLost / StoreReplaced when not (and
            refuses every later write: `fence_lost` keeps the reason).
    """

    def __init__(self, path: Path, session: str = "local", create: bool = False) -> None:
        self.path = path
        self.session = session
        self.create = create
        self.store_id = ""
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self.fence: str | None = None
        self.fence_lost: str | None = None
        self.on_fence_lost: Callable[[str], None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._in_tx = False
        self.on_commit: Callable[[], None] | None = None
        self._wrote_event = False
        self.owner_thread: int | None = None  # when set, only this thread may use the connection

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Store:
        """Open (or make) the store: checks that it is the store this workspace made (its id
        file), migrates, and checks every table of its schema version is there.

        Raises:
            StoreError: a missing store where the workspace has state (deleted), a replaced or
                emptied store, a damaged file, a missing table, a newer schema.
        """
        if not self.path.exists():
            self._refuse_to_create()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        conn.row_factory = _dict_row
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode and mode["journal_mode"].lower() != "wal":
                raise StoreError(
                    f"{self.path}: the store needs WAL mode, got {mode['journal_mode']}"
                )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            self._check_id()
            self._migrate()
            self._check_tables()
            self._claim_id()
            st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._conn = None
            raise StoreError(
                f"{self.path} is not a usable store: {exc} (it is damaged: restore it "
                f"from a backup; `ahead check` says more)"
            ) from None
        except (StoreError, OSError) as exc:
            conn.close()
            self._conn = None
            if isinstance(exc, OSError):
                raise StoreError(f"cannot open the store {self.path}: {exc}") from None
            raise
        return self

    # -- identity and damage ---------------------------------------------------------------

    def _refuse_to_create(self) -> None:
        """A missing store is made only where no store was (see the class docstring)."""
        marker = marker_path(self.path)
        wal = self.path.with_name(self.path.name + "-wal")
        if marker.exists() or wal.exists():
            shown = marker if marker.exists() else wal
            raise StoreError(
                f"the store {self.path} is missing but {shown} shows one was there "
                f"(deleted?): restore it from a backup, or remove {shown} to start "
                f"over with an empty store"
            )
        if self.create or not self.path.parent.is_dir():
            return
        held = sorted(e for e in STATE_ENTRIES if (self.path.parent / e).exists())
        if held:
            raise StoreError(
                f"the store {self.path} is missing but {self.path.parent} holds this "
                f"workspace's state ({', '.join(held)}): restore it from a backup, or "
                f"start the engine (`ahead engine`) to make a new empty store"
            )

    def _read_marker(self) -> str | None:
        try:
            return marker_path(self.path).read_text("utf-8").strip()
        except FileNotFoundError:
            return None

    def _check_id(self) -> None:
        """The store must carry the id its id file holds: else it was replaced, or emptied (a
        truncated WAL leaves a fresh, empty file)."""
        stored = int(self.conn.execute("PRAGMA user_version").fetchone()["user_version"])
        self.store_id = f"{stored:08x}" if stored else ""
        expected = self._read_marker()
        if expected is not None and expected != self.store_id:
            found = f"id {self.store_id}" if self.store_id else "no id (an empty or foreign file)"
            raise StoreError(
                f"the store {self.path} is not the one this workspace made (it has "
                f"{found}, {marker_path(self.path)} says {expected}): it was replaced or "
                f"lost its contents; restore it from a backup, or remove "
                f"{marker_path(self.path)} to adopt this store"
            )

    def _claim_id(self) -> None:
        """Give a store without an id one, and write the id file beside it."""
        if self.store_id and self._read_marker() == self.store_id:
            return  # the usual open: no write
        with self.transaction():
            stored = int(self.conn.execute("PRAGMA user_version").fetchone()["user_version"])
            if not stored:
                stored = secrets.randbelow(2**31 - 2) + 1
                self.conn.execute(f"PRAGMA user_version = {stored:d}")
            self.store_id = f"{stored:08x}"
            if self._read_marker() != self.store_id:
                marker = marker_path(self.path)
                tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
                tmp.write_text(self.store_id + "\n", "utf-8")
                os.replace(tmp, marker)

    def _check_tables(self) -> None:
        row = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        version = int(row["v"] or 0)
        have = {
            r["name"]
            for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        missing = sorted(expected_tables(version) - have)
        if missing:
            raise StoreError(
                f"the store {self.path} is damaged: schema version {version} but table(s) "
                f"{', '.join(missing)} missing; restore it from a backup"
            )

    def quick_check(self) -> str:
        """`PRAGMA quick_check` (0.13 s on a 100 MB store): "" when intact, else the first problem."""
        try:
            rows = self.conn.execute("PRAGMA quick_check(5)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        problems = [str(r["quick_check"]) for r in rows if r["quick_check"] != "ok"]
        return "; ".join(problems)

    def require_intact(self) -> None:
        """Raise StoreError when quick_check finds damage (before a person's decision is written)."""
        problem = self.quick_check()
        if problem:
            raise StoreError(
                f"the store {self.path} is damaged ({problem.splitlines()[0][:200]}): "
                f"nothing was written; restore it from a backup"
            )

    def damaged(self, exc: sqlite3.DatabaseError) -> StoreError:
        return StoreError(
            f"the store {self.path} is damaged ({exc}): restore it from a backup; "
            f"`ahead check` says more"
        )

    def _check_fence(self, conn: sqlite3.Connection) -> None:
        """(inside BEGIN IMMEDIATE) Still the same file, and the lease still ours."""
        if self.fence_lost is None:
            try:
                st = os.stat(self.path)
                same = (st.st_dev, st.st_ino) == self.identity
            except OSError:
                same = False
            if not same:
                self.fence_lost = (
                    f"the store {self.path} was deleted or replaced while this engine ran; "
                    f"stopping (nothing more is written)"
                )
            elif (
                conn.execute(
                    "SELECT 1 FROM lease WHERE name = 'engine' AND token = ?", (self.fence,)
                ).fetchone()
                is None
            ):
                self.fence_lost = (
                    "this engine lost the workspace lease to another engine (it was "
                    "paused or cut off too long); stopping (nothing more is written)"
                )
            if self.fence_lost is not None and self.on_fence_lost is not None:
                self.on_fence_lost(self.fence_lost)
        if self.fence_lost is not None:
            error = StoreReplaced if "deleted or replaced" in self.fence_lost else LeaseLost
            raise error(self.fence_lost)

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
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        current = row["v"] or 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this ahead "
                f"understands ({len(MIGRATIONS)}); upgrade ahead"
            )
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
        if self.fence is not None and self.fence_lost is not None:
            self._check_fence(conn)  # fenced out already: not even a BEGIN
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise self.damaged(exc) from None
        self._in_tx = True
        try:
            if self.fence is not None:
                self._check_fence(conn)
            yield conn
        except BaseException as exc:
            self._in_tx = False
            self._wrote_event = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_FULL,
                sqlite3.SQLITE_IOERR,
            ):
                raise StoreError(self._unsaved(exc)) from None  # a full disk mid-transaction
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                exc, sqlite3.OperationalError
            ):
                raise self.damaged(exc) from None  # "database disk image is malformed"
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
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise
            raise self.damaged(exc) from None

    def query_one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Row | None:
        try:
            row: Row | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise
            raise self.damaged(exc) from None
        return row

    # -- events and audit (call inside a transaction) ------------------------------------------

    def event(
        self, kind: str, repo: str | None = None, run_id: int | None = None, **data: Any
    ) -> int:
        """Append an event row to the change feed."""
        assert self._in_tx, "events are written inside a transaction"
        cur = self.conn.execute(
            "INSERT INTO events (ts, kind, repo, run_id, data) VALUES (?, ?, ?, ?, ?)",
            (time.time(), kind, repo, run_id, json.dumps(data, sort_keys=True)),
        )
        self._wrote_event = True
        return int(cur.lastrowid or 0)

    def audit(
        self,
        actor: str,
        action: str,
        subject: str,
        detail: dict[str, Any] | None = None,
        session: str | None = None,
    ) -> str:
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
                return (
                    False,
                    count,
                    f"entry {row['id']}: expected entry {count} here (entries missing or renumbered)",
                )
            if row["prev_hash"] != prev:
                return False, count, f"entry {row['id']}: does not follow the entry before it"
            try:
                expect = audit_hash(
                    prev,
                    row["ts"],
                    row["actor"],
                    row["session"],
                    row["action"],
                    row["subject"],
                    row["detail"],
                )
            except (TypeError, ValueError):  # a value of the wrong type put in by hand
                expect = ""
            if expect != row["hash"]:
                return False, count, f"entry {row['id']}: contents do not match its hash"
            if head is not None and row["id"] == head[0]:
                held = row["hash"]
            prev = row["hash"]
        if head is not None and held != head[1]:
            problem = (
                f"entry {head[0]} is missing (the log was cut off)"
                if held is None
                else f"entry {head[0]} no longer has the recorded hash (the chain was rewritten)"
            )
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


def audit_hash(
    prev: str, ts: float, actor: str, session: str, action: str, subject: str, detail: str
) -> str:
    if not isinstance(ts, float) or not all(
        isinstance(v, str) for v in (actor, session, action, subject, detail)
    ):
        raise TypeError("audit fields have the wrong types")
    body = json.dumps(
        [prev, repr(ts), actor, session, action, subject, detail],
        separators=(",", ":"),
        ensure_ascii=False,
    )
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
