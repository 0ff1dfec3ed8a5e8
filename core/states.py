"""The state vocabulary: every state a run, stage, step, change request or drift target can be in,
every event kind the store's feed carries, every capability a role grants, and how each state
looks in a terminal (one glyph table for the CLI and the console).

The values are the strings stored in the database and printed by `--json`, so a `StrEnum`
member compares equal to the stored text (`RunState.FAILED == "failed"`). Depends on nothing.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """A run's state; stages and steps use the same words."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # at an approval gate
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the engine stopped while it ran
    SKIPPED = "skipped"


#: Ended for good: nothing will change a run, stage or step in one of these states.
TERMINAL: frozenset[str] = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.INTERRUPTED,
        RunState.SKIPPED,
    }
)
#: Started and not ended: an engine owns it (running, or parked at a gate).
IN_PROGRESS: frozenset[str] = frozenset({RunState.RUNNING, RunState.WAITING})
#: Not ended: queued or in progress (what a console follows live).
UNFINISHED: frozenset[str] = frozenset({RunState.QUEUED, *IN_PROGRESS})


class ChangeState(StrEnum):
    """A change request's state (one per gated deploy of a run)."""

    OPEN = "open"
    APPROVED = "approved"  # enough approvals, gate not yet passed (a freeze may hold it)
    PASSED = "passed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    VOIDED = "voided"
    CANCELLED = "cancelled"


#: Change states a decision can still be recorded in.
DECIDABLE: frozenset[str] = frozenset({ChangeState.OPEN, ChangeState.APPROVED})


class DriftState(StrEnum):
    """A drift target's state. `unknown` is never shown as in sync."""

    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"


#: How acknowledged drift is shown (a display state, not stored).
ACKNOWLEDGED = "acked"


class Capability(StrEnum):
    """What a person may do; roles grant capabilities (`ROLE_CAPABILITIES`). Default deny."""

    VIEW = "view"
    TRIGGER = "trigger"
    CANCEL = "cancel"
    RETRY = "retry"
    RECONCILE = "reconcile"
    ACKNOWLEDGE = "acknowledge"
    CHECK_DRIFT = "check drift"
    UNLOCK = "unlock"
    APPROVE = "approve"
    TRUST_HOST = "trust a host"


ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    "viewer": frozenset({Capability.VIEW}),
    "operator": frozenset(
        {
            Capability.VIEW,
            Capability.TRIGGER,
            Capability.CANCEL,
            Capability.RETRY,
            Capability.RECONCILE,
            Capability.ACKNOWLEDGE,
            Capability.CHECK_DRIFT,
        }
    ),
    "approver": frozenset({Capability.VIEW, Capability.APPROVE, Capability.UNLOCK}),
    "admin": frozenset(
        {
            Capability.VIEW,
            Capability.TRIGGER,
            Capability.CANCEL,
            Capability.RETRY,
            Capability.RECONCILE,
            Capability.ACKNOWLEDGE,
            Capability.CHECK_DRIFT,
            Capability.UNLOCK,
            Capability.TRUST_HOST,
        }
    ),
}


def capabilities(roles: tuple[str, ...] | list[str]) -> frozenset[Capability]:
    """Everything the union of `roles` grants (unknown roles grant nothing)."""
    granted: set[Capability] = set()
    for role in roles:
        granted |= ROLE_CAPABILITIES.get(role, frozenset())
    return frozenset(granted)


class EventKind(StrEnum):
    """The kinds of event rows in the store's feed (what consoles and the engine tail)."""

    RUN_QUEUED = "run.queued"
    RUN_PLANNED = "run.planned"
    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    RUN_NOTE = "run.note"
    RUN_CANCEL_REQUESTED = "run.cancel_requested"
    STAGE_STARTED = "stage.started"
    STAGE_FINISHED = "stage.finished"
    STEP_STARTED = "step.started"
    STEP_FINISHED = "step.finished"
    LOG = "log"
    DEPLOYMENT = "deployment"
    LOCK = "lock"
    GATE_OPENED = "gate.opened"
    GATE_PASSED = "gate.passed"
    CHANGE_OPENED = "change.opened"
    CHANGE_DECIDED = "change.decided"
    CHANGE_APPROVED = "change.approved"
    CHANGE_REJECTED = "change.rejected"
    CHANGE_PASSED = "change.passed"
    CHANGE_EXPIRED = "change.expired"
    CHANGE_VOIDED = "change.voided"
    CHANGE_REOPENED = "change.reopened"
    DRIFT_CHECKED = "drift.checked"
    DRIFT_ACKNOWLEDGED = "drift.acknowledged"
    PRESENCE = "presence"
    NOTIFY = "notify"
    ENGINE_STARTED = "engine.started"
    ENGINE_STOPPED = "engine.stopped"


#: One glyph per state, for every front end (the CLI's listings and the console's cells). A glyph
#: always travels with a word or a colour-independent position: never colour alone.
GLYPHS: dict[str, str] = {
    RunState.SUCCEEDED: "✓",
    RunState.FAILED: "✗",
    RunState.RUNNING: "▶",
    RunState.QUEUED: "…",
    RunState.WAITING: "⏸",
    RunState.CANCELLED: "⊘",
    RunState.INTERRUPTED: "!",
    RunState.SKIPPED: "–",
    ChangeState.OPEN: "⏸",
    ChangeState.APPROVED: "✓",
    ChangeState.PASSED: "✓",
    ChangeState.REJECTED: "✗",
    ChangeState.EXPIRED: "⌛",
    ChangeState.SUPERSEDED: "–",
    ChangeState.VOIDED: "⊘",
    DriftState.IN_SYNC: "=",
    DriftState.DRIFTED: "≠",
    DriftState.UNKNOWN: "?",
    ACKNOWLEDGED: "≈",
}


def glyph(state: str | None, default: str = "·") -> str:
    """The glyph of `state`; `default` ("·") for none or a state this table does not know."""
    return GLYPHS.get(state or "", default)
