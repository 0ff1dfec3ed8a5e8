"""What the bridge tells the screens: batches of engine events, coalesced per tick."""

from __future__ import annotations

from dataclasses import dataclass

from core.feed import Event


@dataclass(frozen=True)
class EventBatch:
    """Engine events since the last tick (at most ten batches a second)."""

    events: tuple[Event, ...]

    def repos(self) -> set[str]:
        return {e.repo for e in self.events if e.repo}

    def runs(self) -> set[int]:
        return {e.run_id for e in self.events if e.run_id is not None}

    def kinds(self) -> set[str]:
        return {e.kind for e in self.events}
