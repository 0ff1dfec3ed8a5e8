"""Change control: change requests at approval gates, decisions on them, and the gate check.

A run that reaches a stage deploying to an environment with a policy waits, and a change
request opens pinning what would be approved: repo, environment, base commit (deployed now),
head commit, pipeline digest and policy version. Decisions and the gate check each run in one
`BEGIN IMMEDIATE` transaction that re-checks eligibility, count, expiry, freeze and the pins, so
concurrent approvals give exactly one transition and nothing deploys on a stale approval.
Every decision, opening, expiry, supersession and voiding is audited. Blocking (SQLite); the
engine calls it through its store thread. Depends on core.store, core.policy, core.workspace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import NotFound, PermissionDenied
from core.faults import fault
from core.policy import Policy, may_approve
from core.store.db import Row, Store
from core.text import one_line
from core.workspace import Workspace

log = logging.getLogger("ahead.approvals")
OPEN, APPROVED = "open", "approved"
FINAL = ("rejected", "expired", "superseded", "voided", "cancelled", "passed")


@dataclass(frozen=True)
class Verdict:
    """The answer to a decision: done or refused, in words, and the change's status after."""

    ok: bool
    message: str
    status: str


# -- decision keys and MACs ---------------------------------------------------------------------
#
# A decision counts only when its MAC verifies: HMAC-SHA256, keyed by a secret in a 0600 file of
# the state directory (never in the store), over the decision's fields and its change's pins. An
# OS user who may write state.db but not read the key cannot make a row that counts.

KEY_BYTES = 32
_reported: set[int] = set()  # decision ids already warned about by this process


def key_path(ws: Workspace) -> Path:
    return ws.state_dir / "keys" / "decisions.key"


def decision_key(ws: Workspace, create: bool = True) -> bytes | None:
    """The decision key, made (0600, in a 0700 directory) by the first writer that needs it
    (`create`: the engine at a gate, a decision); a reader gets None when there is none yet.

    Raises:
        PermissionDenied: the key cannot be read, or is not this user's own private file (a key
            another user owns, or may read or write, cannot authenticate anything).
    """
    path = key_path(ws)
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        raise PermissionDenied(
            f"{path}: cannot read the decision key ({exc.strerror}): only the user "
            "that runs the engine or `ahead serve` records and counts decisions "
            "(decide over SSH, or as that user)"
        ) from None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(fresh, path)  # atomic, and never replaces a key another writer made first
        except FileExistsError:
            pass
        finally:
            os.unlink(fresh)
        return _read_key(path)
    except OSError as exc:
        raise PermissionDenied(
            f"{path}: cannot create the decision key ({exc.strerror}): run the "
            "engine (or the first decision) as the user that owns the state directory"
        ) from None


def _read_key(path: Path) -> bytes:
    me = os.getuid()
    directory = os.lstat(path.parent)
    if not stat.S_ISDIR(directory.st_mode) or directory.st_uid != me or directory.st_mode & 0o022:
        raise PermissionDenied(
            f"{path.parent}: the decision key's directory must be this user's own "
            f"(uid {me}), not group or world writable; fix with: chmod 700 {path.parent}"
        )
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != me or st.st_mode & 0o077:
            raise PermissionDenied(
                f"{path}: the decision key must be this user's own file (uid {me}) "
                f"readable by nobody else; fix with: chmod 600 {path}"
            )
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise PermissionDenied(f"{path}: not a decision key (expected {KEY_BYTES * 2} hex digits)")
    return key


def _key_or_none(ws: Workspace, create: bool) -> bytes | None:
    try:
        return decision_key(ws, create)
    except PermissionDenied as exc:
        log.warning("no decision counts: %s", exc)
        return None


def decision_mac(key: bytes, change: Row, decision: Row) -> str:
    """The MAC of `decision` on `change`: its fields and the change's pins, canonical JSON."""

    def moment(value: Any) -> str | None:
        return None if value is None else repr(float(value))

    fields = {
        "change": change["id"],
        "repo": change["repo"],
        "environment": change["environment"],
        "base": change["base_sha"],
        "head": change["head_sha"],
        "pipeline_digest": change["pipeline_digest"],
        "policy_version": change["policy_version"],
        "operator": decision["operator"],
        "verdict": decision["verdict"],
        "comment": decision["comment"],
        "session": decision["session"],
        "created_at": moment(decision["created_at"]),
        "expires_at": moment(decision["expires_at"]),
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, b"ahead decision v1\n" + text.encode(), hashlib.sha256).hexdigest()


def authentic(key: bytes | None, change: Row, decision: Row) -> bool:
    mac = decision["mac"]
    return (
        key is not None
        and isinstance(mac, str)
        and hmac.compare_digest(mac, decision_mac(key, change, decision))
    )


def _warn_unauthenticated(change: Row, decision: Row) -> None:
    if decision["id"] not in _reported:
        _reported.add(decision["id"])
        log.warning(
            "ignoring decision %s on change %s by %r (%s): its MAC does not verify (made "
            "before decisions were signed, or put in the store by hand; see: ahead audit verify)",
            decision["id"],
            change["id"],
            decision["operator"],
            decision["verdict"],
        )


def seal(store: Store, ws: Workspace, decision_id: int) -> None:
    """(inside a transaction that lifted the append-only trigger) Sign a decision again after a
    trusted rewrite of its times (the demo's pictures)."""
    row = store.conn.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
    change = store.conn.execute(
        "SELECT * FROM change_requests WHERE id = ?", (row["change_id"],)
    ).fetchone()
    key = decision_key(ws)
    assert key is not None
    store.conn.execute(
        "UPDATE decisions SET mac = ? WHERE id = ?", (decision_mac(key, change, row), decision_id)
    )


def unauthenticated(store: Store, ws: Workspace) -> list[str]:
    """Every decision whose MAC does not verify, in words (for `ahead audit verify`).

    Raises:
        PermissionDenied: the decision key cannot be read (only its owner can check).
    """
    key = decision_key(ws, create=False)
    changes_by_id = {c["id"]: c for c in store.query("SELECT * FROM change_requests")}
    found = []
    for row in store.query("SELECT * FROM decisions ORDER BY id"):
        change = changes_by_id.get(row["change_id"])
        if change is None:
            found.append(
                f"decision {row['id']}: for change {row['change_id']}, which does not exist"
            )
        elif not authentic(key, change, row):
            why = "has no MAC" if not row["mac"] else "its MAC does not match"
            found.append(
                f"decision {row['id']} ({row['operator']} {row['verdict']}s change {change['id']}): "
                f"{why}: never counted (made before decisions were signed, or put in by hand)"
            )
    return found


def short(sha: str | None) -> str:
    return sha[:7] if sha else "nothing"


def forbidden(store: Store, ws: Workspace, policy: Policy, change: Row) -> dict[str, str]:
    """Operators who may not approve this change, each with the reason: authors and committers of
    every commit in base..head (and whoever a `Co-authored-by:` or `Signed-off-by:` trailer names,
    as authors), and whoever triggered a run of its head commit. Emails match as identities
    (case and `+tag` folded: Workspace.operator_by_email)."""
    reasons: dict[str, str] = {}
    people = json.loads(change["people"] or "{}")
    if not people:  # a request opened before ranges were recorded whole
        commits = json.loads(change["commits"])
        people = {
            "authors": {c["email"]: c["sha"] for c in commits},
            "committers": {c["committer_email"]: c["sha"] for c in commits},
        }
    for kind, label, rule in (
        ("authors", "author", "authors"),
        ("committers", "committer", "committers"),
        ("trailers", "co-author or sign-off (trailer)", "authors"),
    ):
        if rule in policy.forbid:
            for email, sha in people.get(kind, {}).items():
                op = ws.operator_by_email(email)
                if op is not None:
                    reasons.setdefault(op.name, f"{label} of {short(sha)}")
    if "triggerer" in policy.forbid:
        for run in store.query(
            "SELECT id, actor FROM runs WHERE repo = ? AND commit_sha = ? ORDER BY id",
            (change["repo"], change["head_sha"]),
        ):
            actor = run["actor"]
            op = ws.operator(actor) or (
                ws.operator_by_email(actor[4:]) if actor.startswith("git:") else None
            )
            if op is not None:
                reasons.setdefault(op.name, f"triggered run #{run['id']}")
    return reasons


def deployed_now(store: Store, repo: str, environment: str) -> str | None:
    row = store.query_one(
        "SELECT commit_sha FROM deployments WHERE repo = ? AND environment = ? "
        "ORDER BY id DESC LIMIT 1",
        (repo, environment),
    )
    return row["commit_sha"] if row else None


def open_change(
    store: Store,
    policy: Policy,
    *,
    run: Row,
    stage_id: int,
    base: str | None,
    commits: list[dict[str, Any]],
    diffstat: str,
    people: dict[str, dict[str, str]] | None = None,
) -> int:
    """Open a change request and put the run and stage in `waiting`, audited."""
    now = time.time()
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO change_requests (run_id, stage_id, repo, environment, base_sha, head_sha, "
            "pipeline_digest, policy_version, required, status, triggerer, commits, diffstat, "
            "created_at, expires_at, people) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?)",
            (
                run["id"],
                stage_id,
                run["repo"],
                policy.environment,
                base,
                run["commit_sha"],
                run["pipeline_digest"] or "",
                policy.version,
                policy.approvals,
                run["actor"],
                json.dumps(commits),
                diffstat,
                now,
                now + policy.expires if policy.expires else None,
                json.dumps(people or {}),
            ),
        )
        change_id = int(cur.lastrowid or 0)
        conn.execute(
            "UPDATE runs SET status = 'waiting' WHERE id = ? AND status = 'running'", (run["id"],)
        )
        conn.execute(
            "UPDATE stages SET status = 'waiting', started_at = COALESCE(started_at, ?) "
            "WHERE id = ?",
            (now, stage_id),
        )
        store.audit(
            "engine",
            "gate.opened",
            f"change/{change_id}",
            {
                "run": run["id"],
                "repo": run["repo"],
                "environment": policy.environment,
                "base": base,
                "head": run["commit_sha"],
                "commits": [c["sha"] for c in commits],
                "pipeline_digest": run["pipeline_digest"],
                "policy_version": policy.version,
                "required": policy.approvals,
                "on_behalf_of": run["actor"],
            },
        )
        store.event(
            "change.opened",
            run["repo"],
            run["id"],
            change=change_id,
            environment=policy.environment,
        )
    return change_id


def _end(store: Store, change: Row, status: str, reason: str, actor: str = "engine") -> None:
    """(inside a transaction) Close a change with a final status, audited."""
    store.conn.execute(
        "UPDATE change_requests SET status = ?, reason = ?, decided_at = ? WHERE id = ?",
        (status, reason, time.time(), change["id"]),
    )
    store.audit(
        actor,
        f"change.{status}",
        f"change/{change['id']}",
        {
            "run": change["run_id"],
            "repo": change["repo"],
            "environment": change["environment"],
            "head": change["head_sha"],
            "base": change["base_sha"],
            "reason": reason,
        },
    )
    store.event("change." + status, change["repo"], change["run_id"], change=change["id"])


def _valid_approvals(
    store: Store, ws: Workspace, policy: Policy, change: Row, now: float, key: bytes | None
) -> list[str]:
    """Operators whose approval counts right now: authenticated (the MAC verifies with `key`),
    still approvers, not forbidden, not expired; each once."""
    barred = forbidden(store, ws, policy, change)
    counted: list[str] = []
    for row in store.query(
        "SELECT * FROM decisions WHERE change_id = ? AND verdict = 'approve' ORDER BY id",
        (change["id"],),
    ):
        if not authentic(key, change, row):
            _warn_unauthenticated(change, row)
            continue
        op = ws.operator(row["operator"])
        if op is None or not may_approve(policy, op.name, op.roles) or op.name in barred:
            continue
        if row["expires_at"] is not None and row["expires_at"] <= now:
            continue
        if op.name not in counted:
            counted.append(op.name)
    return counted


def _stale_pins(store: Store, policy: Policy, change: Row, run: Row) -> str | None:
    """Why the change no longer describes what would deploy, or None."""
    now_base = deployed_now(store, change["repo"], change["environment"])
    if now_base != change["base_sha"]:
        return (
            f"{change['environment']} moved from {short(change['base_sha'])} to {short(now_base)}"
        )
    if policy.version != change["policy_version"]:
        return f"the {change['environment']} policy changed (version {policy.version})"
    if (run["pipeline_digest"] or "") != change["pipeline_digest"]:
        return "the pipeline file changed"
    if run["commit_sha"] != change["head_sha"]:
        return "the run's commit changed"
    return None


def check_gate(store: Store, ws: Workspace, change_id: int) -> tuple[str, str, Row]:
    """Decide whether the gated stage may start now, in one transaction.

    Returns ('pass' | 'wait' | 'fail' | 'stale', reason, change row). 'stale' means the pins no
    longer hold: the change was voided and the caller opens a new one.
    """
    now = time.time()
    key = _key_or_none(ws, create=True)
    with store.transaction() as conn:
        change = conn.execute("SELECT * FROM change_requests WHERE id = ?", (change_id,)).fetchone()
        run = conn.execute("SELECT * FROM runs WHERE id = ?", (change["run_id"],)).fetchone()
        policy = ws.policies.get(change["environment"])
        if change["status"] == "voided":  # voided by a decision that saw the pins move: reopen
            return "stale", change["reason"] or "voided", change
        if change["status"] in FINAL:
            return "fail", change["reason"] or change["status"], change
        if policy is None:  # the policy was removed from ahead.yml: an admin lifted the gate
            _end(store, change, "voided", f"no policy for {change['environment']} any more")
            return "pass", "no policy", change
        if (
            change["status"] == OPEN
            and change["expires_at"] is not None
            and change["expires_at"] <= now
        ):
            _end(store, change, "expired", "nobody decided before the request expired")
            return "fail", f"change {change_id} expired", change
        stale = _stale_pins(store, policy, change, run)
        if stale is not None:
            _end(store, change, "voided", stale)
            return "stale", stale, change
        counted = _valid_approvals(store, ws, policy, change, now, key)
        if len(counted) < policy.approvals:
            if change["status"] == APPROVED:  # an approval expired or its approver lost the right
                conn.execute(
                    "UPDATE change_requests SET status = 'open' WHERE id = ?", (change_id,)
                )
                store.audit(
                    "engine",
                    "change.reopened",
                    f"change/{change_id}",
                    {"counted": counted, "required": policy.approvals},
                )
                store.event("change.reopened", change["repo"], change["run_id"], change=change_id)
            return "wait", f"{len(counted)} of {policy.approvals} approvals", change
        window = policy.frozen(now)
        if window is not None:
            return "wait", f"{change['environment']} is frozen ({window.text})", change
        conn.execute(
            "UPDATE change_requests SET status = 'passed', decided_at = COALESCE(decided_at, ?) "
            "WHERE id = ?",
            (now, change_id),
        )
        conn.execute("UPDATE stages SET status = 'running' WHERE id = ?", (change["stage_id"],))
        conn.execute(
            "UPDATE runs SET status = 'running' WHERE id = ? AND status = 'waiting'", (run["id"],)
        )
        store.audit(
            "engine",
            "gate.passed",
            f"change/{change_id}",
            {
                "run": run["id"],
                "repo": change["repo"],
                "environment": change["environment"],
                "base": change["base_sha"],
                "head": change["head_sha"],
                "approvers": counted,
                "policy_version": policy.version,
            },
        )
        store.event("change.passed", change["repo"], run["id"], change=change_id)
        fault("gate.pass.before_commit")
        return "pass", f"approved by {', '.join(counted)}", change


@dataclass(frozen=True)
class Refusal:
    """Why a decision is refused: the message, and for an expired or void change the state
    `decide` ends it in (`end`, with `end_reason` recorded on the change)."""

    message: str
    end: str | None = None
    end_reason: str | None = None


def refusal(
    store: Store,
    ws: Workspace,
    change: Row,
    run: Row | None,
    actor: str,
    verdict: str,
    now: float,
    key: bytes | None,
) -> Refusal | None:
    """Why `actor` may not `verdict` ("approve" / "reject") `change` now, in the order `decide`
    checks (status, policy, expiry, operator, approver, barred, freeze, stale pins, an earlier
    decision), or None. Reads only: `decide` records the refusal or ends the change; the
    console asks the same question (`core.api`'s `may_decide`) to say why before a key press."""
    change_id = change["id"]
    env = change["environment"]
    if change["status"] not in (OPEN, APPROVED):
        return Refusal(
            f"change {change_id} is {change['status']}"
            + (f": {one_line(change['reason'])}" if change["reason"] else "")
        )
    policy = ws.policies.get(env)
    if policy is None:
        return Refusal(f"no policy for {env} in {ws.file}: cannot decide (fail closed)")
    if change["expires_at"] is not None and change["expires_at"] <= now:
        return Refusal(
            f"change {change_id} expired", "expired", "nobody decided before the request expired"
        )
    operator = ws.operator(actor)
    if operator is None:
        return Refusal(f"{actor} cannot {verdict}: not an operator of this workspace")
    if not may_approve(policy, operator.name, operator.roles):
        return Refusal(
            f"{actor} cannot {verdict}: not an approver for {env} "
            f"(approvers: {', '.join(policy.approvers)})"
        )
    barred = forbidden(store, ws, policy, change)
    if actor in barred:
        return Refusal(f"{actor} cannot {verdict}: {barred[actor]}")
    window = policy.frozen(now)
    if window is not None:
        return Refusal(f"{env} is frozen ({window.text}): no decisions until the freeze ends")
    stale = _stale_pins(store, policy, change, run) if run is not None else None
    if stale is not None:
        return Refusal(
            f"change {change_id} is void: {stale}; the engine opens a new request", "voided", stale
        )
    previous = store.query_one(
        "SELECT * FROM decisions WHERE change_id = ? AND operator = ?", (change_id, actor)
    )
    if previous is not None and not authentic(key, change, previous):
        _warn_unauthenticated(change, previous)
        return Refusal(
            f"decision {previous['id']} in the store, {actor}'s on change {change_id}, does not "
            "verify (made before decisions were signed, or put in by hand): it does not count and "
            "leaves no room for yours; retry the run for a new request (see: ahead audit verify)"
        )
    if previous is not None:
        return Refusal(
            f"{actor} already decided ({previous['verdict']}d) change {change_id}: "
            "each operator counts once"
        )
    return None


def decide(
    store: Store, ws: Workspace, change_id: int, actor: str, verdict: str, comment: str = ""
) -> Verdict:
    """Approve or reject a change as `actor`, checked and recorded in one transaction.

    Raises:
        NotFound: no such change.
    """
    assert verdict in ("approve", "reject")
    key = decision_key(ws)
    assert key is not None
    now = time.time()
    with store.transaction("approve") as conn:
        change = conn.execute("SELECT * FROM change_requests WHERE id = ?", (change_id,)).fetchone()
        if change is None:
            raise NotFound(f"no change {change_id} (see: ahead changes)")
        run = conn.execute("SELECT * FROM runs WHERE id = ?", (change["run_id"],)).fetchone()

        def refuse(message: str) -> Verdict:
            store.audit(
                actor,
                f"change.{verdict}.refused",
                f"change/{change_id}",
                {
                    "repo": change["repo"],
                    "environment": change["environment"],
                    "head": change["head_sha"],
                    "reason": message,
                },
            )
            return Verdict(False, message, change["status"])

        found = refusal(store, ws, change, run, actor, verdict, now, key)
        if found is not None:
            if found.end is not None:
                _end(store, change, found.end, found.end_reason or found.message)
                return Verdict(False, found.message, found.end)
            return refuse(found.message)
        env = change["environment"]
        policy = ws.policies[env]
        if verdict == "reject" and policy.reject_needs_comment and not comment.strip():
            return refuse("a rejection needs a comment (--comment TEXT)")
        expires = (
            now + policy.approval_expires
            if policy.approval_expires and verdict == "approve"
            else None
        )
        decision = {
            "operator": actor,
            "verdict": verdict,
            "comment": comment,
            "session": store.session,
            "created_at": now,
            "expires_at": expires,
        }
        conn.execute(
            "INSERT INTO decisions (change_id, operator, verdict, comment, session, created_at, "
            "expires_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                change_id,
                actor,
                verdict,
                comment,
                store.session,
                now,
                expires,
                decision_mac(key, change, decision),
            ),
        )
        commits = [c["sha"] for c in json.loads(change["commits"])]
        store.audit(
            actor,
            f"change.{verdict}",
            f"change/{change_id}",
            {
                "repo": change["repo"],
                "environment": env,
                "base": change["base_sha"],
                "head": change["head_sha"],
                "commits": commits,
                "comment": comment,
                "verdict": verdict,
                "policy_version": change["policy_version"],
            },
        )
        store.event(
            "change.decided",
            change["repo"],
            change["run_id"],
            change=change_id,
            operator=actor,
            verdict=verdict,
        )
        if verdict == "reject":
            _end(store, change, "rejected", f"rejected by {actor}: {comment}".rstrip(": "), actor)
            return Verdict(
                True, f"rejected change {change_id}; run #{change['run_id']} stops", "rejected"
            )
        counted = _valid_approvals(store, ws, policy, change, now, key)
        if len(counted) >= policy.approvals and change["status"] == OPEN:
            conn.execute(
                "UPDATE change_requests SET status = 'approved', decided_at = ? WHERE id = ? "
                "AND status = 'open'",
                (now, change_id),
            )
            store.audit(
                "engine",
                "change.approved",
                f"change/{change_id}",
                {
                    "repo": change["repo"],
                    "environment": env,
                    "head": change["head_sha"],
                    "approvers": counted,
                },
            )
            store.event("change.approved", change["repo"], change["run_id"], change=change_id)
            return Verdict(
                True,
                f"approved change {change_id} ({len(counted)} of {policy.approvals}): "
                f"{env} deploys {short(change['head_sha'])} when the gate next checks",
                "approved",
            )
        return Verdict(
            True,
            f"approved change {change_id} ({len(counted)} of {policy.approvals}); "
            f"{policy.approvals - len(counted)} more needed",
            "open",
        )


def supersede(store: Store, repo: str, branch: str, new_run: int) -> None:
    """(inside a transaction) A newer run of the branch supersedes changes waiting at a gate."""
    for change in store.query(
        "SELECT c.* FROM change_requests c JOIN runs r ON r.id = c.run_id WHERE c.repo = ? "
        "AND r.branch = ? AND c.status IN ('open', 'approved') AND c.run_id < ?",
        (repo, branch, new_run),
    ):
        _end(store, change, "superseded", f"superseded by run #{new_run}")


def cancel_open(store: Store, run_id: int, actor: str) -> None:
    """(inside a transaction) The run was cancelled: its open change closes."""
    for change in store.query(
        "SELECT * FROM change_requests WHERE run_id = ? AND status IN ('open', 'approved')",
        (run_id,),
    ):
        _end(store, change, "cancelled", f"run #{run_id} cancelled by {actor}", actor)


def changes(store: Store, status: str | None = None, limit: int = 200) -> list[Row]:
    sql = "SELECT * FROM change_requests"
    params: tuple[Any, ...] = ()
    if status == "open":
        sql += " WHERE status IN ('open', 'approved')"
    elif status is not None:
        sql += " WHERE status = ?"
        params = (status,)
    return store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


def change_detail(store: Store, ws: Workspace, change_id: int) -> dict[str, Any]:
    """A change with its decisions, the policy checklist and the run's earlier artifacts."""
    change = store.query_one("SELECT * FROM change_requests WHERE id = ?", (change_id,))
    if change is None:
        raise NotFound(f"no change {change_id} (see: ahead changes)")
    run = store.query_one("SELECT * FROM runs WHERE id = ?", (change["run_id"],)) or {}
    key = _key_or_none(ws, create=False)
    decisions = []
    for row in store.query("SELECT * FROM decisions WHERE change_id = ? ORDER BY id", (change_id,)):
        decisions.append(
            {
                "operator": row["operator"],
                "verdict": row["verdict"],
                "comment": row["comment"],
                "session": row["session"],
                "created_at": row["created_at"],
                "expires_at": row["expires_at"],
                "authentic": authentic(key, change, row),
            }
        )
    artifacts = store.query(
        "SELECT a.path, a.size, a.sha256, s.name AS step FROM artifacts a JOIN steps s "
        "ON s.id = a.step_id WHERE a.run_id = ? ORDER BY a.id",
        (change["run_id"],),
    )
    policy = ws.policies.get(change["environment"])
    checklist: dict[str, Any] = {
        "required": change["required"],
        "approved_by": [],
        "barred": {},
        "eligible": [],
        "frozen": None,
        "policy": None,
    }
    if policy is not None:
        now = time.time()
        checklist["approved_by"] = _valid_approvals(store, ws, policy, change, now, key)
        checklist["barred"] = forbidden(store, ws, policy, change)
        checklist["eligible"] = [
            op.name
            for op in ws.operators
            if may_approve(policy, op.name, op.roles) and op.name not in checklist["barred"]
        ]
        window = policy.frozen(now)
        checklist["frozen"] = window.text if window else None
        checklist["policy"] = {
            "approvals": policy.approvals,
            "approvers": list(policy.approvers),
            "forbid": list(policy.forbid),
            "version": policy.version,
        }
    return {
        **change,
        "commits": json.loads(change["commits"]),
        "decisions": decisions,
        "artifacts": artifacts,
        "checklist": checklist,
        "run": run,
    }
