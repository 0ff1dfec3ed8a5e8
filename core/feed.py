"""The event feed: tail the store's events table by id and fan out to subscribers.

This is how every process sees live state: the engine (commands written by a CLI in another
terminal), the console, `ahead logs --follow`. Events are plain frozen dataclasses. Polls every
100 ms, and at once when this process wrote an event itself (`Store.on_commit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from core.store.db import AsyncStore

log = logging.getLogger("ahead.feed")
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    kind: str
    repo: str | None
    run_id: int | None
    data: dict[str, Any]


class EventFeed:
    """Owns one tail task; `subscribe()` gives each consumer its own bounded queue."""

    def __init__(self, db: AsyncStore, start_after: int | None = None) -> None:
        self._db = db
        self._after = start_after
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._after is None:
            self._after = await self._db.call(self._db.store.last_event_id)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self._db.store.on_commit = wake
        self._task = asyncio.create_task(self._tail(), name="ahead-event-feed")

    @property
    def position(self) -> int:
        return self._after or 0

    def poke(self) -> None:
        self._wake.set()

    async def _tail(self) -> None:
        while True:
            try:
                rows = await self._db.call(self._db.store.events_after, self._after or 0)
            except Exception:  # the store may be briefly unavailable; keep tailing
                log.exception("reading events failed")
                rows = []
            for row in rows:
                event = Event(row["id"], row["ts"], row["kind"], row["repo"], row["run_id"],
                              json.loads(row["data"] or "{}"))
                self._after = event.id
                for queue in list(self._subscribers):
                    if queue.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()  # slow consumer: drop its oldest event
                    queue.put_nowait(event)
            if len(rows) >= 1000:
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def subscribe(self, maxsize: int = 10_000) -> AsyncGenerator[Event, None]:
        """Every event from now on, until the feed closes."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
