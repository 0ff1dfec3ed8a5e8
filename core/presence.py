"""Who is connected: one row per open console (local or over SSH) in the store's `sessions`.

Every change writes a `presence` event, so each console follows who else is here through the
event feed like any other state. A row belongs to a process (`pid` on `host`): rows whose
process is gone (a console killed with SIGKILL, a server that crashed) are left out of `who`
and removed by the next `sweep`. Blocking (SQLite): call through AsyncStore.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from core.lease import pid_alive
from core.store.db import Store

SCREEN_MAX = 40


@dataclass(frozen=True)
class Presence:
    id: int
    operator: str
    kind: str  # "ssh" or "local"
    source: str  # the client's address for ssh
    screen: str
    started_at: float


def open_session(
    store: Store, operator: str, kind: str, source: str = "", pid: int | None = None
) -> int:
    """Record a console opening; returns its id (the console's handle for `set_screen`)."""
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO sessions (operator, kind, source, host, pid, started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (operator, kind, source, socket.gethostname(), pid or os.getpid(), time.time()),
        )
        session_id = int(cur.lastrowid or 0)
        store.event("presence", None, None, session=session_id, operator=operator, state="open")
    return session_id


def set_screen(store: Store, session_id: int, screen: str) -> None:
    """Note which screen the console shows (written only when it changed)."""
    screen = screen[:SCREEN_MAX]
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE sessions SET screen = ? WHERE id = ? AND screen != ?",
            (screen, session_id, screen),
        )
        if cur.rowcount:
            store.event("presence", None, None, session=session_id, screen=screen, state="screen")


def close_session(store: Store, session_id: int) -> None:
    with store.transaction() as conn:
        cur = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        if cur.rowcount:
            store.event("presence", None, None, session=session_id, state="closed")


def who(store: Store) -> list[Presence]:
    """Open consoles, oldest first; rows of processes that are gone are left out."""
    here = socket.gethostname()
    rows = store.query("SELECT * FROM sessions ORDER BY started_at, id")
    return [
        Presence(r["id"], r["operator"], r["kind"], r["source"], r["screen"], r["started_at"])
        for r in rows
        if r["host"] != here or pid_alive(r["pid"])
    ]


def sweep(store: Store) -> int:
    """Remove rows of this host's processes that are gone (after a crash); returns how many."""
    here = socket.gethostname()
    gone = [
        r["id"]
        for r in store.query("SELECT id, pid, host FROM sessions")
        if r["host"] == here and not pid_alive(r["pid"])
    ]
    if gone:
        with store.transaction() as conn:
            conn.executemany("DELETE FROM sessions WHERE id = ?", [(i,) for i in gone])
            store.event("presence", None, None, state="swept", sessions=gone)
    return len(gone)
