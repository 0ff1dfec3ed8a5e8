"""Small asyncio helpers the engine relies on. Stdlib only.

`asyncio.wait_for` in Python 3.11 can swallow a cancellation that arrives as its inner
awaitable finishes (gh-86296), which left a stopping engine waiting forever on a run parked at
an approval gate. `asyncio.timeout` has no such race; every bounded wait goes through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_at_most(awaitable: Awaitable[T], seconds: float) -> T | None:
    """Await `awaitable` for at most `seconds`; None when time ran out. Cancellation passes."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        return None
