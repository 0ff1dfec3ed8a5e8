"""Log retention: the log lines of runs that ended more than `settings.keep_logs_days` ago are
deleted, so the store does not grow without bound with output nobody reads.

Only log lines go: runs, stages, steps (with their exit codes and timings), deployments,
decisions and the audit log are kept for ever, so "what ran where, approved by whom" can always
be answered. A run whose lines were removed says so (`removed_note`). Deletion runs in short
transactions (at most `BATCH_LINES` lines each) so the engine's other writes never wait long.
Blocking; the engine calls it from its store thread. Depends on core.store only.
"""

from __future__ import annotations

import time

from core.store.db import Store

DAY = 86_400.0
BATCH_LINES = 20_000
BATCH_RUNS = 200


def prune_logs(
    store: Store,
    keep_days: int,
    after_run: int = 0,
    now: float | None = None,
    max_runs: int = BATCH_RUNS,
) -> tuple[int, int]:
    """Delete the log lines of up to `max_runs` runs with an id above `after_run` that ended
    before `now - keep_days`. Returns (lines deleted, highest run id looked at; `after_run`
    when there was none). Call again with that id until it stops moving."""
    cutoff = (time.time() if now is None else now) - keep_days * DAY
    runs = store.query(
        "SELECT id FROM runs WHERE id > ? AND finished_at IS NOT NULL AND finished_at < ? "
        "ORDER BY id LIMIT ?",
        (after_run, cutoff, max_runs),
    )
    if not runs:
        return 0, after_run
    ids = [r["id"] for r in runs]
    marks = ",".join("?" * len(ids))
    steps = [
        r["id"]
        for r in store.query(
            f"SELECT id FROM steps WHERE run_id IN ({marks}) ORDER BY id", tuple(ids)
        )
    ]
    deleted = 0
    for step_id in steps:
        while True:
            with store.transaction() as conn:
                # The primary key (step_id, seq) makes this a range delete; LIMIT keeps each
                # transaction short when one step wrote millions of lines.
                cur = conn.execute(
                    "DELETE FROM log_lines WHERE step_id = ? AND seq IN (SELECT seq FROM log_lines "
                    "WHERE step_id = ? ORDER BY seq LIMIT ?)",
                    (step_id, step_id, BATCH_LINES),
                )
            deleted += cur.rowcount
            if cur.rowcount < BATCH_LINES:
                break
    return deleted, ids[-1]


def removed_note(finished_at: float | None, keep_days: int, now: float | None = None) -> str | None:
    """What to show for a run with no log lines: why they are gone, or None when they should
    still be there."""
    if finished_at is None:
        return None
    if (time.time() if now is None else now) - finished_at < keep_days * DAY:
        return None
    return (
        f"log removed: the run ended more than {keep_days} days ago "
        f"(settings.keep_logs_days in ahead.yml keeps logs that long)"
    )
