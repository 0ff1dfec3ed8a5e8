"""The drift records in the store: a check's finding kept and audited (`record`), the
overview (`listing`), a target's detail and history (`detail`), acknowledgements
(`acknowledge`) and the overview's state of several targets (`worst`).

Store functions only (run on the store thread): may not depend on git, processes, the checks or
the scheduler.
"""

from __future__ import annotations

import json
import time
from typing import Any

from core import runstate
from core.drift.targets import REVISION, Finding, Target
from core.errors import InvalidRequest, NotFound
from core.store.db import Row, Store

KEEP_CHECKS = 100  # history kept per target


def record_many(
    store: Store, found: list[tuple[Target, Finding]], reason: str, started: float, finished: float
) -> None:
    """(store thread) `record` for many findings, in one transaction."""
    with store.transaction():
        for target, finding in found:
            record(store, target, finding, reason, started, finished)


def record(
    store: Store, target: Target, finding: Finding, reason: str, started: float, finished: float
) -> None:
    """(store thread) Keep a check; move the target's state; audit a change of state or of what
    drifted (the detective control: every drift finding is on record)."""
    detail = json.dumps(finding.detail, default=str)
    with store.transaction() as conn:
        prev = conn.execute(
            "SELECT * FROM drift WHERE repo = ? AND environment = ? AND target = ?",
            (target.repo, target.environment, target.name),
        ).fetchone()
        cur = conn.execute(
            "INSERT INTO drift_checks (repo, environment, target, kind, state, summary, fingerprint, detail, "
            "commit_sha, reason, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                target.repo,
                target.environment,
                target.name,
                target.kind,
                finding.state,
                finding.summary,
                finding.fingerprint,
                detail,
                target.commit,
                reason,
                started,
                finished,
            ),
        )
        check_id = cur.lastrowid
        changed = (
            prev is None
            or prev["state"] != finding.state
            or prev["fingerprint"] != finding.fingerprint
        )
        since = finished if prev is None or prev["state"] != finding.state else prev["since"]
        conn.execute(
            "INSERT INTO drift (repo, environment, target, kind, state, summary, fingerprint, commit_sha, since, "
            "checked_at, last_check) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (repo, environment, target) DO UPDATE SET kind = excluded.kind, state = excluded.state, "
            "summary = excluded.summary, fingerprint = excluded.fingerprint, commit_sha = excluded.commit_sha, "
            "since = excluded.since, checked_at = excluded.checked_at, last_check = excluded.last_check",
            (
                target.repo,
                target.environment,
                target.name,
                target.kind,
                finding.state,
                finding.summary,
                finding.fingerprint,
                target.commit,
                since,
                finished,
                check_id,
            ),
        )
        conn.execute(
            "DELETE FROM drift_checks WHERE repo = ? AND environment = ? AND target = ? AND id <= "
            "(SELECT id FROM drift_checks WHERE repo = ? AND environment = ? AND target = ? "
            "ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (target.repo, target.environment, target.name) * 2 + (KEEP_CHECKS,),
        )
        # Revision drift is the pipeline's own lag (in the run history already): not audited.
        if (
            changed
            and target.kind != REVISION
            and not (prev is None and finding.state == "in_sync")
        ):
            action = {
                "in_sync": "drift.resolved",
                "drifted": "drift.detected",
                "unknown": "drift.unknown",
            }[finding.state]
            if prev is not None and prev["state"] == "drifted" and finding.state == "drifted":
                action = "drift.changed"
            store.audit(
                runstate.ENGINE,
                action,
                f"{target.repo}/{target.environment}/{target.name}",
                {
                    "kind": target.kind,
                    "summary": finding.summary,
                    "commit": target.commit,
                    "before": prev["state"] if prev else None,
                    "check": check_id,
                },
            )
        store.event(
            "drift.checked",
            target.repo,
            None,
            environment=target.environment,
            target=target.name,
            state=finding.state,
            changed=changed,
        )


def listing(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """(store thread) Every target's latest finding with its live acknowledgement, if any."""
    now = time.time() if now is None else now
    rows = store.query(
        "SELECT * FROM drift ORDER BY repo, environment, target = 'revision' DESC, target"
    )
    acks = _acks(store, now)
    return [_item(row, acks.get((row["repo"], row["environment"], row["target"]))) for row in rows]


def _acks(store: Store, now: float) -> dict[tuple[str, str, str], Row]:
    found: dict[tuple[str, str, str], Row] = {}
    for row in store.query(
        "SELECT a.* FROM drift_acks a JOIN drift d ON d.repo = a.repo AND "
        "d.environment = a.environment AND d.target = a.target AND "
        "d.fingerprint = a.fingerprint AND d.state = 'drifted' WHERE a.expires_at > ? "
        "ORDER BY a.id",
        (now,),
    ):
        found[(row["repo"], row["environment"], row["target"])] = row
    return found


def _item(row: Row, ack: Row | None) -> dict[str, Any]:
    item = {
        k: row[k]
        for k in (
            "repo",
            "environment",
            "target",
            "kind",
            "state",
            "summary",
            "commit_sha",
            "since",
            "checked_at",
        )
    }
    item["acknowledged"] = (
        None
        if ack is None
        else {
            "by": ack["actor"],
            "reason": ack["reason"],
            "at": ack["created_at"],
            "until": ack["expires_at"],
        }
    )
    return item


def detail(
    store: Store, repo: str, environment: str, target: str | None = None
) -> list[dict[str, Any]]:
    """(store thread) Each target of (repo, environment) (or the one named): latest finding, the
    detail of its last check, and its history (newest first)."""
    rows = store.query(
        "SELECT * FROM drift WHERE repo = ? AND environment = ? AND (? IS NULL OR target = ?) "
        "ORDER BY target = 'revision' DESC, target",
        (repo, environment, target, target),
    )
    if not rows:
        raise NotFound(
            f"no drift check recorded for {repo}/{environment}"
            + (f" target {target!r}" if target else "")
            + " (run: ahead drift check)"
        )
    acks = _acks(store, time.time())
    result = []
    for row in rows:
        item = _item(row, acks.get((row["repo"], row["environment"], row["target"])))
        last = store.query_one("SELECT detail FROM drift_checks WHERE id = ?", (row["last_check"],))
        item["detail"] = json.loads(last["detail"]) if last else {}
        item["history"] = [
            dict(h)
            for h in store.query(
                "SELECT id, state, summary, reason, started_at, finished_at, commit_sha FROM drift_checks "
                "WHERE repo = ? AND environment = ? AND target = ? ORDER BY id DESC LIMIT 50",
                (repo, environment, row["target"]),
            )
        ]
        result.append(item)
    return result


def acknowledge(
    store: Store,
    repo: str,
    environment: str,
    target: str | None,
    reason: str,
    seconds: float,
    actor: str,
) -> list[str]:
    """(store thread) Acknowledge the current drift of the target(s): valid until it expires or
    the drift changes. Returns the targets acknowledged.

    Raises:
        InvalidRequest: no reason, or nothing drifted to acknowledge.
    """
    if not reason.strip():
        raise InvalidRequest("an acknowledgement needs a reason (--reason TEXT)")
    if not 0 < seconds <= 90 * 86400:
        raise InvalidRequest("an acknowledgement lasts more than 0 and at most 90 days")
    now = time.time()
    with store.transaction() as conn:
        rows = conn.execute(
            "SELECT * FROM drift WHERE repo = ? AND environment = ? AND state = 'drifted' "
            "AND (? IS NULL OR target = ?)",
            (repo, environment, target, target),
        ).fetchall()
        if not rows:
            raise InvalidRequest(
                f"nothing drifted to acknowledge in {repo}/{environment}"
                + (f" target {target!r}" if target else "")
            )
        for row in rows:
            conn.execute(
                "INSERT INTO drift_acks (repo, environment, target, fingerprint, reason, actor, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    repo,
                    environment,
                    row["target"],
                    row["fingerprint"],
                    reason,
                    actor,
                    now,
                    now + seconds,
                ),
            )
            store.audit(
                actor,
                "drift.acknowledge",
                f"{repo}/{environment}/{row['target']}",
                {"reason": reason, "until": now + seconds, "summary": row["summary"]},
            )
        store.event("drift.acknowledged", repo, None, environment=environment)
    return [r["target"] for r in rows]


def worst(states: list[str]) -> str | None:
    """The state an overview shows for several targets: drifted > unknown > in_sync."""
    for state in ("drifted", "unknown", "in_sync"):
        if state in states:
            return state
    return None
