"""Helpers for engine tests: wait on the engine's events and the real store, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.aio import wait_at_most
from core.engine import Engine
from core.feed import EventFeed
from core.store.db import Row


def alive(pid: int) -> bool:
    """True when `pid` is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


TERMINAL = ("succeeded", "failed", "cancelled", "interrupted", "skipped")


async def query(engine: Engine, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    return await engine.db.call(engine.db.store.query, sql, params)


# Changes that raise no event of the feed (rare: most writes come with one) are still seen
# this often; anything else wakes the wait at once.
FALLBACK_SECONDS = 0.25


async def wait_for(
    engine: Engine,
    sql: str,
    params: tuple[Any, ...] = (),
    check: Callable[[list[Row]], bool] = bool,
    timeout: float = 15.0,
) -> list[Row]:
    """Run `sql` now and again after each burst of the engine's events (see core/feed.py) until
    `check(rows)` holds; fail with the last rows after `timeout`."""
    return await on_events(
        engine.feed, lambda: query(engine, sql, params), check, timeout, f"{sql!r} {params}"
    )


async def on_events(
    feed: EventFeed,
    read: Callable[[], Awaitable[list[Row]]],
    check: Callable[[list[Row]], bool],
    timeout: float,
    what: str,
) -> list[Row]:
    """`read()` now and after each burst of `feed`'s events until `check` holds its rows. No
    polling in a tight loop: the store is read when something happened, not 20 times a second
    while the engine works; once every FALLBACK_SECONDS for changes that raise no event."""
    deadline = time.monotonic() + timeout
    rows: list[Row] = []
    events = feed.listen()
    try:
        while True:
            rows = await read()
            if check(rows):
                return rows
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await wait_at_most(events.get(), min(left, FALLBACK_SECONDS))
            while not events.empty():  # one read for a burst of events (a flood of log lines)
                events.get_nowait()
    finally:
        feed.unlisten(events)
    raise AssertionError(f"timed out waiting for {what}: last rows {rows}")


async def wait_run_done(engine: Engine, run_id: int, timeout: float = 20.0) -> Row:
    rows = await wait_for(
        engine,
        "SELECT * FROM runs WHERE id = ?",
        (run_id,),
        lambda r: bool(r) and r[0]["status"] in TERMINAL,
        timeout,
    )
    return rows[0]


async def store_rows(holder: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """Read the store of an engine or a console session directly (tests only: a session's own
    reads go through the door, core.api)."""
    rows: list[Row] = await holder.db.call(holder.db.store.query, sql, params)
    return rows
