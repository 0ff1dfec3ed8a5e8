"""Helpers for engine tests: wait on the real store, never sleep blindly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from core.engine import Engine
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


async def wait_for(engine: Engine, sql: str, params: tuple[Any, ...] = (),
                   check: Callable[[list[Row]], bool] = bool, timeout: float = 15.0) -> list[Row]:
    """Poll `sql` until `check(rows)` holds; fail with the last rows after `timeout`."""
    deadline = time.monotonic() + timeout
    rows: list[Row] = []
    while time.monotonic() < deadline:
        rows = await query(engine, sql, params)
        if check(rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {sql!r} {params}: last rows {rows}")


async def wait_run_done(engine: Engine, run_id: int, timeout: float = 20.0) -> Row:
    rows = await wait_for(engine, "SELECT * FROM runs WHERE id = ?", (run_id,),
                          lambda r: bool(r) and r[0]["status"] in TERMINAL, timeout)
    return rows[0]


async def store_rows(holder: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """Read the store of an engine or a console session directly (tests only: a session's own
    reads go through the door, core.api)."""
    rows: list[Row] = await holder.db.call(holder.db.store.query, sql, params)
    return rows
