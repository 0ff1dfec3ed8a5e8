"""The console's screens on the fixed demo: one definition used by the snapshot tests and by
scripts/screenshots.py, so the README's pictures and the guarded baselines show the same thing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import approvals, demo, presence, workspace
from core.api.session import ClientSession
from core.services import Actor
from core.store.db import GENESIS, Row, Store, audit_hash
from core.workspace import Workspace
from tui import render
from tui.app import AheadApp
from tui.settings import Settings

NOW = 1795000000.0  # the fixed present of the pictures: 2026-11-18 11:06 UTC


def build_demo(parent: Path) -> Workspace:
    """The demo with the same commits, runs, times and logs on every machine, every day."""
    target = parent / "demo"
    if not (target / "ahead.yml").exists():
        demo.create(target, now=NOW, reproducible=True)
        ws = workspace.read(target / "ahead.yml")
        freeze(ws, NOW)
        pin_audit(ws)
    return workspace.read(target / "ahead.yml")


# -- pictures only: rewrite the demo's recorded history so it is the same on every machine ------
# (kept here, out of the product: it lifts the decisions table's append-only trigger)

_VARYING = [  # log text that differs from one run to the next, and what it becomes when frozen
    (re.compile(r"(Ran \d+ tests? in )\d+\.\d+s"), r"\g<1>0.004s"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "0" * 64),
    (re.compile(r"(sha256 )[0-9a-f]{16}\b"), r"\g<1>" + "0" * 16),
    (re.compile(r"\b\d+ bytes\b"), "1234 bytes"),
    (re.compile(r"\bami-[0-9a-f]{17}\b"), "ami-0f1e2d3c4b5a69788"),
]


def freeze(ws: Workspace, now: float) -> None:
    """Make the recorded runs of a demo the same on every machine and every day: times become
    fixed offsets from each commit's time (approvers decide minutes apart), the workspace path
    becomes `~/demo`, and what varies (test timings, archive digests and sizes, in logs and
    artifacts; step pids) gets fixed values. Only for pictures and snapshot tests: it rewrites
    history (never the audit log, which keeps when the demo was really built, nor the events)."""
    root = str(ws.root)
    with Store(ws.db_path, session=demo.SESSION) as store, store.transaction() as conn:
        # Decisions are append-only: a trigger refuses updates. This picture-only rewrite lifts
        # that guard inside its own transaction and puts back the very same trigger.
        guard = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'decisions_no_update'"
        ).fetchone()
        conn.execute("DROP TRIGGER decisions_no_update")
        for run in conn.execute(
            "SELECT id, committed_at, finished_at FROM runs ORDER BY id"
        ).fetchall():
            _freeze_run(store, ws, run, now)
        conn.execute(guard["sql"])
        for row in conn.execute("SELECT step_id, seq, line FROM log_lines").fetchall():
            line = row["line"].replace(root, "~/demo")
            for pattern, fixed in _VARYING:
                line = pattern.sub(fixed, line)
            if line != row["line"]:
                conn.execute(
                    "UPDATE log_lines SET line = ? WHERE step_id = ? AND seq = ?",
                    (line, row["step_id"], row["seq"]),
                )
        conn.execute(
            "UPDATE runs SET error = REPLACE(error, ?, '~/demo') WHERE error IS NOT NULL", (root,)
        )
        conn.execute("UPDATE runs SET engine = ?", (demo.SESSION,))
        conn.execute("UPDATE steps SET pid = NULL, token = NULL")  # processes long gone
        conn.execute("UPDATE artifacts SET size = 1234, sha256 = ?", ("0" * 64,))  # as in the logs
        conn.execute("UPDATE refs SET seen_at = ?", (now,))
        # drift: first seen an hour ago (the hand edit), checked a minute ago; no absolute paths
        conn.execute(
            "UPDATE drift_checks SET started_at = ? - 60, finished_at = ? - 60, "
            "detail = REPLACE(detail, ?, '~/demo')",
            (now, now, root),
        )
        conn.execute(
            "UPDATE drift SET checked_at = ? - 60, since = CASE state WHEN 'drifted' THEN ? - 3600 "
            "ELSE ? - 86400 END",
            (now, now, now),
        )


def _freeze_run(store: Store, ws: Workspace, run: Row, now: float) -> None:
    """(in freeze's transaction) One run's times; stages and steps that never started have none."""
    conn = store.conn
    start = (run["committed_at"] or now - 86400) + 120
    conn.execute(
        "UPDATE runs SET created_at = ?, started_at = ? WHERE id = ?", (start - 5, start, run["id"])
    )
    clock = start
    for stage in conn.execute(
        "SELECT id, idx, started_at, finished_at FROM stages WHERE run_id = ? ORDER BY idx",
        (run["id"],),
    ).fetchall():
        if stage["started_at"] is None:
            conn.execute("UPDATE stages SET finished_at = NULL WHERE id = ?", (stage["id"],))
            conn.execute(
                "UPDATE steps SET started_at = NULL, finished_at = NULL WHERE stage_id = ?",
                (stage["id"],),
            )
            continue
        stage_start = clock
        for change in conn.execute(
            "SELECT * FROM change_requests WHERE stage_id = ? ORDER BY id", (stage["id"],)
        ).fetchall():
            clock = _freeze_gate(store, ws, change, clock)
        for step in conn.execute(
            "SELECT id, idx, started_at FROM steps WHERE stage_id = ? ORDER BY idx", (stage["id"],)
        ).fetchall():
            if step["started_at"] is None:
                conn.execute("UPDATE steps SET finished_at = NULL WHERE id = ?", (step["id"],))
                continue
            took = 3 + (7 * run["id"] + 5 * stage["idx"] + 3 * step["idx"]) % 40
            conn.execute(
                "UPDATE steps SET started_at = ?, finished_at = ? WHERE id = ?",
                (clock, clock + took, step["id"]),
            )
            conn.execute("UPDATE log_lines SET ts = ? WHERE step_id = ?", (clock, step["id"]))
            clock += took
        conn.execute(
            "UPDATE stages SET started_at = ?, finished_at = ? WHERE id = ?",
            (stage_start, None if stage["finished_at"] is None else clock, stage["id"]),
        )
        conn.execute(
            "UPDATE deployments SET deployed_at = ? WHERE stage_id = ?", (clock, stage["id"])
        )
    conn.execute(
        "UPDATE runs SET finished_at = ? WHERE id = ?",
        (None if run["finished_at"] is None else clock, run["id"]),
    )


def _freeze_gate(store: Store, ws: Workspace, change: Row, opened: float) -> float:
    """(in freeze's transaction) A change request opened at `opened`, its decisions 20 and then
    35 minutes apart; returns when the gate let its stage go on (or the last decision)."""

    def moved(moment: float | None, was: float, now: float) -> float | None:
        return None if moment is None else now + round(moment - was)  # keeps a policy's duration

    at = opened
    for k, decision in enumerate(
        store.conn.execute(
            "SELECT id, created_at, expires_at FROM decisions WHERE change_id = ? ORDER BY id",
            (change["id"],),
        ).fetchall()
    ):
        at += (20 + 15 * k) * 60
        store.conn.execute(
            "UPDATE decisions SET created_at = ?, expires_at = ? WHERE id = ?",
            (at, moved(decision["expires_at"], decision["created_at"], at), decision["id"]),
        )
        approvals.seal(store, ws, decision["id"])  # signed again: its times changed
    decided = None if change["decided_at"] is None else at
    store.conn.execute(
        "UPDATE change_requests SET created_at = ?, expires_at = ?, decided_at = ? WHERE id = ?",
        (opened, moved(change["expires_at"], change["created_at"], opened), decided, change["id"]),
    )
    return at if decided is None else at + 2


def pin_audit(ws: Workspace) -> None:
    """Pictures only: date the demo's audit entries like the runs they record, and re-chain them.

    `freeze` fixes the runs' times but never touches the audit log, whose entries carry
    the wall clock and the engine's pid (`engine:27888`): the Audit screen would differ on
    every build. Each entry is re-dated from what it records (a trigger at its run's creation,
    a deploy at the deployment's time, a gate at its change's opening, a decision when it was
    made, the change's end when it was decided) but never before the entry written before it
    (otherwise a second after that one), the pid dropped from the session, and the hash chain recomputed so it still verifies.
    """
    with Store(ws.db_path, session="scenes") as store, store.transaction() as conn:
        trigger = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'audit_no_update'"
        ).fetchone()
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        created = {
            f"run/{r['id']}": r["created_at"]
            for r in conn.execute("SELECT id, created_at FROM runs")
        }
        deployed = {
            (r["run_id"], r["repo"] + "/" + r["environment"]): r["deployed_at"]
            for r in conn.execute("SELECT run_id, repo, environment, deployed_at FROM deployments")
        }
        for change in conn.execute("SELECT id, created_at, decided_at FROM change_requests"):
            created[f"change/{change['id']}"] = change["created_at"]
            created[f"change/{change['id']}/end"] = change["decided_at"]
        for decision in conn.execute("SELECT change_id, operator, created_at FROM decisions"):
            created[f"change/{decision['change_id']}/{decision['operator']}"] = decision[
                "created_at"
            ]
        prev, ts = GENESIS, NOW - 7 * 86400
        for row in conn.execute("SELECT * FROM audit ORDER BY id").fetchall():
            detail = json.loads(row["detail"] or "{}")
            if row["action"] in ("change.approve", "change.reject"):
                key = f"{row['subject']}/{row['actor']}"
            elif row["subject"].startswith("change/") and row["action"] != "gate.opened":
                key = f"{row['subject']}/end"
            else:
                key = row["subject"]
            recorded = created.get(key) or deployed.get((detail.get("run"), row["subject"]))
            ts = max(recorded or 0.0, ts + 1.0)  # in id order, as they were written
            session = re.sub(r"^engine:\d+$", "engine", row["session"])
            digest = audit_hash(
                prev, ts, row["actor"], session, row["action"], row["subject"], row["detail"]
            )
            conn.execute(
                "UPDATE audit SET ts = ?, session = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (ts, session, prev, digest, row["id"]),
            )
            prev = digest
        if trigger is not None:
            conn.execute(trigger["sql"])


def make_app(ws: Workspace, theme: str | None = None) -> AheadApp:
    render.set_clock(lambda: NOW)
    with Store(ws.db_path, session="scenes") as store, store.transaction() as conn:
        conn.execute("DELETE FROM sessions")  # only the Who scene shows other consoles
    # The console's "may I?" is answered at the scene's moment too (the demo's changes would
    # have expired by the wall clock).
    session = ClientSession(ws, Actor("alice"), embed_engine=False, clock=lambda: NOW)
    return AheadApp(session, Settings(theme=theme))


async def settle(pilot: Any) -> None:
    """Wait until the session is up and every screen worker has finished."""
    app = pilot.app
    for _ in range(400):
        if app.is_ready:
            break
        await asyncio.sleep(0.025)
    for _ in range(3):
        workers = [w for w in app.workers if w.group != "bridge"]
        await asyncio.gather(*(w.wait() for w in workers), return_exceptions=True)
        await pilot.pause()
    # A DataTable sizes its auto-width columns on a later refresh: on a loaded machine a bare
    # pause could catch the rows drawn in columns still as wide as their headers.
    await pilot.pause(0.1)


async def press(pilot: Any, *keys: str) -> None:
    await settle(pilot)
    await pilot.press(*keys)
    await settle(pilot)


async def open_run(pilot: Any, run_id: int) -> None:
    await settle(pilot)
    pilot.app.open_run(run_id)
    await settle(pilot)


def as_operator(name: str, *keys: str) -> Callable[[Any], Awaitable[None]]:
    """Press `keys` as operator `name` (the screens opened from then on act for them)."""

    async def steps(pilot: Any) -> None:
        await settle(pilot)
        pilot.app.session.actor = Actor(name)
        await press(pilot, *keys)

    return steps


async def others_connected(pilot: Any) -> None:
    """bob over SSH on the Changes screen and carol at a local console, then the Who screen."""
    await settle(pilot)
    with Store(pilot.app.session.ws.db_path, session="scenes") as store:
        for operator, kind, source, screen, since in (
            ("bob", "ssh", "192.0.2.7", "Changes", 1500),
            ("carol", "local", "", "Overview", 7200),
        ):
            session_id = presence.open_session(store, operator, kind, source)
            presence.set_screen(store, session_id, screen)
            with store.transaction() as conn:
                conn.execute(
                    "UPDATE sessions SET started_at = ? WHERE id = ?", (NOW - since, session_id)
                )
    await press(pilot, "W")


@dataclass(frozen=True)
class Scene:
    name: str
    size: tuple[int, int]
    steps: Callable[[Any], Awaitable[None]]
    theme: str | None = None


async def nothing(pilot: Any) -> None:
    await settle(pilot)


SCENES: tuple[Scene, ...] = (
    Scene("overview", (100, 30), nothing),
    Scene("overview-80x24", (80, 24), nothing),
    Scene("overview-200x60", (200, 60), nothing),
    Scene("overview-filter", (80, 24), lambda p: press(p, "slash", "s", "e", "r")),
    Scene("repo", (100, 30), lambda p: press(p, "enter")),
    Scene("repo-80x24", (80, 24), lambda p: press(p, "enter")),
    Scene("run", (100, 30), lambda p: open_run(p, 10)),
    Scene("run-80x24", (80, 24), lambda p: open_run(p, 9)),
    Scene("run-200x60", (200, 60), lambda p: open_run(p, 7)),
    Scene("runs", (100, 30), lambda p: press(p, "r")),
    Scene("runs-80x24", (80, 24), lambda p: press(p, "r")),
    Scene("help", (80, 24), lambda p: press(p, "question_mark")),
    Scene("changes", (100, 30), lambda p: press(p, "a")),
    Scene("changes-80x24", (80, 24), lambda p: press(p, "a")),
    Scene("change", (100, 30), lambda p: press(p, "a", "enter")),
    Scene("change-80x24", (80, 24), lambda p: press(p, "a", "enter")),
    Scene("change-200x60", (200, 60), as_operator("carol", "a", "enter")),
    Scene("approve-80x24", (80, 24), as_operator("carol", "a", "enter", "A")),
    Scene("audit", (100, 30), lambda p: press(p, "u")),
    Scene("audit-80x24", (80, 24), lambda p: press(p, "u")),
    Scene("audit-200x60", (200, 60), lambda p: press(p, "u")),
    Scene("who-80x24", (80, 24), others_connected),
    Scene("drift", (100, 30), lambda p: press(p, "d")),
    Scene("drift-80x24", (80, 24), lambda p: press(p, "d")),
    Scene(
        "drift-detail", (100, 30), lambda p: press(p, "j", "j", "d", "enter")
    ),  # service: prod's app
    Scene("drift-detail-80x24", (80, 24), lambda p: press(p, "j", "j", "d", "enter")),
    Scene("drift-ack-80x24", (80, 24), lambda p: press(p, "j", "j", "d", "enter", "A")),
    Scene("drift-reconcile-80x24", (80, 24), lambda p: press(p, "j", "j", "d", "enter", "R")),
    Scene("overview-light", (100, 30), nothing, theme="ahead-light"),
    Scene("overview-contrast", (100, 30), nothing, theme="ahead-contrast"),
)
