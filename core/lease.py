"""One engine per workspace: a lease row with a heartbeat.

A second engine refuses to start and names the holder. A lease whose holder stopped
heartbeating, or whose process is gone from this host, is taken over (and the take-over
audited). Blocking; called through AsyncStore.

The lease's token is also the engine's fencing token: once acquired the engine sets
`Store.fence` to it, and every write transaction it makes checks the row still holds it
(core/store/db.py), so an engine that was taken over writes nothing more.
"""

from __future__ import annotations

import os
import socket
import time

from core.errors import LeaseHeld
from core.store.db import Store

NAME = "engine"
STALE_SECONDS = 15.0  # a lease not renewed for this long is free (heartbeat every 2 s)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_text(row: dict[str, object], now: float) -> str:
    age = now - float(row["heartbeat_at"])  # type: ignore[arg-type]
    return f"{row['holder']} (pid {row['pid']} on {row['host']}, last heartbeat {age:.0f}s ago)"


def acquire(store: Store, holder: str, token: str, stale_after: float) -> None:
    """Take the lease or raise LeaseHeld naming who holds it."""
    now = time.time()
    host = socket.gethostname()
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM lease WHERE name = ?", (NAME,)).fetchone()
        if row is not None and row["token"] != token:
            fresh = now - row["heartbeat_at"] < stale_after
            alive = row["host"] != host or pid_alive(row["pid"])
            if fresh and alive:
                raise LeaseHeld(holder_text(row, now))
            store.audit(
                "engine",
                "lease.takeover",
                "engine",
                {
                    "previous": row["holder"],
                    "previous_pid": row["pid"],
                    "holder": holder,
                    "reason": "holder process gone" if not alive else "heartbeat expired",
                },
            )
        conn.execute(
            "INSERT INTO lease (name, holder, pid, host, token, acquired_at, heartbeat_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "pid = excluded.pid, host = excluded.host, token = excluded.token, "
            "acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at",
            (NAME, holder, os.getpid(), host, token, now, now),
        )
        store.event("engine.started", None, None, holder=holder)


def heartbeat(store: Store, token: str) -> bool:
    """Renew the lease; False when it was lost (another engine took it over)."""
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE lease SET heartbeat_at = ? WHERE name = ? AND token = ?",
            (time.time(), NAME, token),
        )
        return cur.rowcount == 1


def release(store: Store, token: str) -> None:
    with store.transaction() as conn:
        cur = conn.execute("DELETE FROM lease WHERE name = ? AND token = ?", (NAME, token))
        if cur.rowcount:
            store.event("engine.stopped", None, None)


def holder(store: Store, stale_after: float) -> str | None:
    """Who holds the lease now, or None when no live engine does."""
    row = store.query_one("SELECT * FROM lease WHERE name = ?", (NAME,))
    if row is None:
        return None
    now = time.time()
    if now - row["heartbeat_at"] >= stale_after:
        return None
    if row["host"] == socket.gethostname() and not pid_alive(row["pid"]):
        return None
    return holder_text(row, now)
