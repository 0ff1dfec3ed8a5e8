"""Who may try to log in: failed-login lockout by source address, kept in the store.

A connection that ends without completing authentication counts one failure for its source
address. `LOCK_AFTER` failures within `WINDOW` lock the address out for `LOCK_FOR`; the counters
live in SQLite, so restarting `ahead serve` does not lift a lockout. Each failure is written to
the audit log. Blocking (SQLite): call through AsyncStore.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.store.db import Store


@dataclass(frozen=True)
class LockoutPolicy:
    lock_after: int = 10  # failed logins from one address ...
    window: float = 900.0  # ... within this many seconds ...
    lock_for: float = 900.0  # ... lock it out for this long


def locked_until(store: Store, source: str, now: float | None = None) -> float | None:
    """When the lockout of `source` ends, or None when it may try."""
    now = time.time() if now is None else now
    row = store.query_one("SELECT locked_until FROM login_failures WHERE source = ?", (source,))
    until = row["locked_until"] if row else None
    return until if until is not None and until > now else None


def record_failure(store: Store, source: str, username: str, reason: str,
                   policy: LockoutPolicy, session: str) -> float | None:
    """Count a failed login from `source` (audited); returns the lockout's end if this locks it."""
    now = time.time()
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM login_failures WHERE source = ?", (source,)).fetchone()
        if row is None or now - row["first_at"] > policy.window:
            failures, first = 1, now
        else:
            failures, first = row["failures"] + 1, row["first_at"]
        until = now + policy.lock_for if failures >= policy.lock_after else None
        conn.execute("INSERT OR REPLACE INTO login_failures (source, failures, first_at, last_at, locked_until) "
                     "VALUES (?, ?, ?, ?, ?)", (source, failures, first, now, until))
        store.audit(username[:64] or "-", "ssh.login_failed", source,
                    {"reason": reason, "failures": failures, "locked_until": until}, session=session)
    return until


def clear_failures(store: Store, source: str) -> None:
    """A successful login from `source` starts its count again."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM login_failures WHERE source = ? AND locked_until IS NULL", (source,))
