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

from core.aio import wait_at_most
from core.store.db import AsyncStore
from core.watch import FileWatch

log = logging.getLogger("ahead.feed")
POLL_SECONDS = 0.1  # without inotify
WATCHED_POLL_SECONDS = 1.0  # with inotify on the WAL file, polling only covers missed wakes
MIN_SPACING = 0.02  # at most ~50 reads a second during a flood of writes
CONFIRM_SECONDS = 0.05  # a second look after a wake that found nothing yet


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
        self._watch: FileWatch | None = None
        self._poll = POLL_SECONDS

    async def start(self) -> None:
        if self._after is None:
            self._after = await self._db.call(self._db.store.last_event_id)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self._db.store.on_commit = wake
        try:  # another process's commit touches the WAL file: wake on that instead of polling
            self._watch = FileWatch(
                self._db.store.path.parent, {self._db.store.path.name + "-wal"}, self._wake.set
            )
            loop.add_reader(self._watch.fd, self._watch.read)
            self._poll = WATCHED_POLL_SECONDS
        except (OSError, AttributeError) as exc:
            log.debug("no inotify for the event feed (%s); polling every %.1fs", exc, POLL_SECONDS)
            self._watch = None
        self._task = asyncio.create_task(self._tail(), name="ahead-event-feed")

    @property
    def position(self) -> int:
        return self._after or 0

    async def _tail(self) -> None:
        woken = False
        while True:
            woken = self._wake.is_set()
            self._wake.clear()  # before reading: a write during the read wakes the next round
            try:
                rows = await self._db.call(self._db.store.events_after, self._after or 0)
            except Exception:  # the store may be briefly unavailable; keep tailing
                log.exception("reading events failed")
                rows = []
            for row in rows:
                event = Event(
                    row["id"],
                    row["ts"],
                    row["kind"],
                    row["repo"],
                    row["run_id"],
                    json.loads(row["data"] or "{}"),
                )
                self._after = event.id
                for queue in list(self._subscribers):
                    if queue.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()  # slow consumer: drop its oldest event
                    queue.put_nowait(event)
            if len(rows) >= 1000:
                continue
            await asyncio.sleep(MIN_SPACING)
            if woken:
                # Another process's write wakes us when its WAL frames land, which can be just
                # before its commit is visible to readers: look again shortly.
                await wait_at_most(self._wake.wait(), CONFIRM_SECONDS)
            else:
                await wait_at_most(self._wake.wait(), self._poll)

    def listen(self, maxsize: int = 10_000) -> asyncio.Queue[Event | None]:
        """A queue that receives every event from now on (None when the feed closes); stop with
        `unlisten`. Unlike `subscribe`, waiting on it with a timeout loses nothing."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)

    async def subscribe(self, maxsize: int = 10_000) -> AsyncGenerator[Event, None]:
        """Every event from now on, until the feed closes."""
        queue = self.listen(maxsize)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    async def aclose(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._watch.fd)
            self._watch.close()
            self._watch = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
