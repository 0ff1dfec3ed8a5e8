"""Read models for front ends: plain frozen dataclasses built from store rows and git.

The console (local or over SSH) and the CLI render these; they carry no behaviour and hold no
live objects (a `HostKey` carries the scanned key back to the door that pins it). Depends on
nothing but the stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageView:
    id: int
    name: str
    environment: str | None
    status: str
    started_at: float | None
    finished_at: float | None
    error: str | None = None


@dataclass(frozen=True)
class StepView:
    id: int
    stage_id: int
    name: str
    command: str
    status: str
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    error: str | None = None


@dataclass(frozen=True)
class RunView:
    id: int
    repo: str
    branch: str
    commit: str
    status: str
    trigger: str
    actor: str
    author: str
    subject: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None = None
    retry_of: int | None = None
    stages: tuple[StageView, ...] = ()


@dataclass(frozen=True)
class RunDetail:
    run: RunView
    steps: tuple[StepView, ...]


@dataclass(frozen=True)
class EnvCell:
    """One (repo, environment): what is deployed, what waits, and the last run touching it."""

    environment: str
    deploys: bool  # False: the repo's pipeline has no stage for this environment
    deployed: str | None
    deployed_at: float | None
    pending: int | None  # None: not computed yet
    oldest_pending_at: float | None  # commit time of the oldest pending commit (lag = now - it)
    last_status: str | None
    last_run: int | None
    drift: str | None = None  # worst of the files/command drift targets; None: none configured
    drift_acked: bool = False  # every drifted target of the cell is acknowledged
    locked: str | None = None  # why the environment is locked for an operator (ahead unlock)


@dataclass(frozen=True)
class DriftView:
    """The latest finding of one drift target (see core/drift.py)."""

    repo: str
    environment: str
    target: str
    kind: str  # revision, files, command
    state: str  # in_sync, drifted, unknown
    summary: str
    commit: str | None  # the deployed commit it was checked against
    since: float  # in this state since (first seen, for a drift)
    checked_at: float  # last seen
    ack_by: str | None = None
    ack_reason: str | None = None
    ack_until: float | None = None

    @property
    def acknowledged(self) -> bool:
        return self.ack_by is not None


@dataclass(frozen=True)
class DriftCheckView:
    id: int
    state: str
    summary: str
    reason: str
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class DriftDetail:
    """A target with what differs: files (added, removed, changed, unreadable, diff) or the
    command's exit code and output; and its recent checks, newest first."""

    view: DriftView
    detail: dict[str, Any]
    history: tuple[DriftCheckView, ...]


@dataclass(frozen=True)
class RepoView:
    name: str
    branch: str
    head: str | None
    error: str | None
    last_run: RunView | None
    cells: tuple[EnvCell, ...]


@dataclass(frozen=True)
class CommitView:
    sha: str
    author: str
    email: str
    time: float
    subject: str
    environments: tuple[str, ...]  # where this exact commit is deployed now
    pending_in: tuple[str, ...]  # environments that do not have it yet


@dataclass(frozen=True)
class BranchView:
    name: str
    head: str
    last_run: RunView | None


@dataclass(frozen=True)
class RepoDetail:
    repo: str
    branch: str
    commits: tuple[CommitView, ...]
    branches: tuple[BranchView, ...]
    deployed: dict[str, str | None]


@dataclass(frozen=True)
class LogLine:
    step_id: int
    seq: int
    ts: float
    text: str


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry; `detail` is the decoded object (never JSON inside a string)."""

    id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    detail_text: str = field(repr=False)  # as stored (JSON), for one-line listings; not in --json

    @classmethod
    def of(cls, row: dict[str, Any]) -> AuditEntry:
        import json

        text = row["detail"] or ""
        try:
            decoded = json.loads(text) if text else {}
        except ValueError:
            decoded = {"text": text}
        if not isinstance(decoded, dict):
            decoded = {"value": decoded}
        return cls(row["id"], row["ts"], row["actor"], row["action"], row["subject"], decoded, text)


@dataclass(frozen=True)
class AuditVerdict:
    """`ahead audit verify`: whether the chain holds, how many entries were checked, and why not."""

    ok: bool
    entries: int
    problem: str
    damaged: bool = False  # the store's pages are damaged: the chain was not checked
    shrunk: bool = False  # the chain is shorter than (or forks from) the head a verify saw before
    unauthenticated: tuple[str, ...] = ()  # decisions whose MAC does not verify
    note: str | None = None  # e.g. decisions not checked: this user cannot read the key
    head: tuple[int, str] | None = None
    remembered_in: str | None = None


@dataclass(frozen=True)
class TrustTarget:
    """A host whose SSH key may be pinned: a remote runner's, or a drift target's host."""

    label: str  # "runner far", "drift host of web/prod"
    address: str  # user@host[:port]
    subject: str  # the audit subject: runner/NAME, drift/REPO/ENV


@dataclass(frozen=True)
class HostKey:
    """The key a host presents now, and the fingerprints pinned for it so far."""

    target: TrustTarget
    algorithm: str
    fingerprint: str
    pinned: tuple[str, ...]
    key: Any = field(repr=False, compare=False, default=None)

    @property
    def trusted(self) -> bool:
        return self.fingerprint in self.pinned


@dataclass(frozen=True)
class LockView:
    """An environment lock: a deploy in progress, or one an interrupted deploy left for an
    operator (`ahead unlock`)."""

    repo: str
    environment: str
    state: str  # held, needs_operator
    run_id: int
    stage_id: int
    gated: bool
    reason: str | None
    acquired_at: float


@dataclass(frozen=True)
class LastRun:
    id: int
    status: str
    commit: str
    branch: str


@dataclass(frozen=True)
class LockRef:
    state: str
    run: int
    reason: str | None


@dataclass(frozen=True)
class EnvStatus:
    """One (repo, environment) in `ahead status`."""

    deploys: bool  # False: the repo's pipeline has no stage for this environment
    deployed_commit: str | None
    deployed_at: float | None
    pending: int | None  # None: not counted
    lag_seconds: float | None
    oldest_pending_at: float | None
    lock: LockRef | None


@dataclass(frozen=True)
class RepoStatus:
    name: str
    branch: str
    head_commit: str | None
    error: str | None
    last_run: LastRun | None
    environments: dict[str, EnvStatus]


@dataclass(frozen=True)
class EngineView:
    """Whether an engine holds the workspace's lease, and who."""

    state: str  # "running" or "not running"
    holder: str | None


@dataclass(frozen=True)
class StatusView:
    """`ahead status`: each repo's head of main, last run, and per environment what is deployed
    and what waits."""

    workspace: str
    environments: tuple[str, ...]
    repos: tuple[RepoStatus, ...]
    engine: EngineView
