"""Who may try to log in: failed-login lockout by source address, kept in the store; and the
process's file descriptors, which the server shares with the engine.

A connection that ends without completing authentication counts one failure for its source
address. `LOCK_AFTER` failures within `WINDOW` lock the address out for `LOCK_FOR`; the counters
live in SQLite, so restarting `ahead serve` does not lift a lockout. Each failure is written to
the audit log. Blocking (SQLite): call through AsyncStore.

Floods are logged once per burst (BurstLog, BurstFilter), never a line or a traceback per
connection; `raise_fd_limit` and `open_fds` let the server keep headroom for the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
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


def record_failure(
    store: Store, source: str, username: str, reason: str, policy: LockoutPolicy, session: str
) -> float | None:
    """Count a failed login from `source` (audited); returns the lockout's end if this locks it."""
    now = time.time()
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM login_failures WHERE source = ?", (source,)).fetchone()
        if row is None or now - row["first_at"] > policy.window:
            failures, first = 1, now
        else:
            failures, first = row["failures"] + 1, row["first_at"]
        until = now + policy.lock_for if failures >= policy.lock_after else None
        conn.execute(
            "INSERT OR REPLACE INTO login_failures (source, failures, first_at, last_at, locked_until) "
            "VALUES (?, ?, ?, ?, ?)",
            (source, failures, first, now, until),
        )
        store.audit(
            username[:64] or "-",
            "ssh.login_failed",
            source,
            {"reason": reason, "failures": failures, "locked_until": until},
            session=session,
        )
    return until


def clear_failures(store: Store, source: str) -> None:
    """A successful login from `source` starts its count again."""
    with store.transaction() as conn:
        conn.execute(
            "DELETE FROM login_failures WHERE source = ? AND locked_until IS NULL", (source,)
        )


# -- file descriptors and floods ------------------------------------------------------------------

BURST_WINDOW = 10.0


def raise_fd_limit() -> int:
    """Raise this process's open-file limit (RLIMIT_NOFILE) to its hard limit where allowed;
    returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. an unlimited hard limit above the kernel's nr_open
        return soft
    return hard


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_fds() -> int | None:
    """How many file descriptors this process has open (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class BurstLog:
    """Refusals logged once per burst: the first of a kind, then one "N more refused in the last
    10 s" line when the burst's window ends; never a line per refused connection."""

    def __init__(self, logger: logging.Logger, window: float = BURST_WINDOW) -> None:
        self.logger = logger
        self.window = window
        self._more: dict[str, int] = {}  # kind → refusals since the first, in the open window

    def refused(
        self, kind: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        if kind in self._more:
            self._more[kind] += 1
            return
        self._more[kind] = 0
        self.logger.warning(message, *args, exc_info=exc_info)
        try:
            asyncio.get_running_loop().call_later(self.window, self.flush, kind)
        except RuntimeError:  # no loop: the next refusal after a flush logs again
            pass

    def flush(self, kind: str) -> None:
        more = self._more.pop(kind, 0)
        if more:
            self.logger.warning("%d more refused in the last %.0f s (%s)", more, self.window, kind)


class BurstFilter(logging.Filter):
    """For other libraries' loggers (asyncio's accept errors, asyncssh): the first record of a
    kind in a window passes, the rest are counted and summed up on the next one that passes;
    a record repeated within the window never carries its traceback again."""

    def __init__(self, window: float = BURST_WINDOW) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.levelno}:{str(record.msg)[:200]}"
        now = time.monotonic()
        started, more = self._seen.get(key, (0.0, -1))
        if more >= 0 and now - started < self.window:
            self._seen[key] = (started, more + 1)
            return False
        self._seen[key] = (now, 0)
        if len(self._seen) > 1000:
            self._seen = {key: (now, 0)}
        if more > 0:
            record.msg = f"{record.msg} (and {more} more like it in the last {self.window:g} s)"
        return True
