"""One deploy per (repo, environment) at a time, with real concurrent triggers, a real engine and
a real SQLite file: deploy windows never overlap and the run that waited has its reason recorded."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from core import runstate
from core.engine import Engine
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import query, wait_for, wait_run_done

# each deploy appends "start <run> <t>" and "end <run> <t>" (monotonic-enough wall clock)
WINDOWS = (
    "stages:\n  - name: deploy\n    environment: dev\n    steps:\n"
    '      - run: \'echo "start $AHEAD_RUN_ID $(date +%s.%N)" >> "$WINDOWS"; sleep 1; '
    'echo "end $AHEAD_RUN_ID $(date +%s.%N)" >> "$WINDOWS"\'\n'
)


def windows(path: Path) -> dict[int, tuple[float, float]]:
    spans: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        _, run, ts = line.split()
        spans.setdefault(int(run), []).append(float(ts))
    return {run: (t[0], t[1]) for run, t in spans.items()}


def assert_disjoint(spans: dict[int, tuple[float, float]]) -> None:
    ordered = sorted(spans.values())
    for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False):
        assert end <= start, f"deploys overlapped: {spans}"


async def test_manual_and_commit_trigger_together_never_overlap(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    ws = make_workspace(tmp_path / "ws", {"app": WINDOWS})
    monkeypatch.setenv("WINDOWS", str(tmp_path / "windows"))
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:

        def manual() -> int:
            with Store(ws.db_path) as store:
                return Services(ws, store).trigger("app", Actor("alice"))

        barrier = threading.Barrier(2)

        def push() -> None:
            barrier.wait()
            commit(repo, "feat: pushed while someone clicked deploy")

        def click() -> int:
            barrier.wait()
            return manual()

        pushed = asyncio.create_task(asyncio.to_thread(push))
        run_manual = await asyncio.to_thread(click)
        await pushed
        rows = await wait_for(engine, "SELECT id FROM runs", check=lambda r: len(r) == 2)
        for row in rows:
            assert (await wait_run_done(engine, row["id"]))["status"] == "succeeded"
        spans = windows(tmp_path / "windows")
        assert set(spans) == {r["id"] for r in rows} and run_manual in spans
        assert_disjoint(spans)
        notes = await query(engine, "SELECT run_id, data FROM events WHERE kind = 'run.note'")
        assert notes, "the run that waited has no recorded reason"
        assert "queued behind run #" in json.loads(notes[0]["data"])["reason"]


async def test_environment_lock_holds_across_lanes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Runs the scheduler would start side by side (different lanes) still deploy one at a time."""
    ws = make_workspace(tmp_path / "ws", {"app": WINDOWS}, extra="")
    monkeypatch.setenv("WINDOWS", str(tmp_path / "windows"))
    sha = commit(ws.repo_dir(ws.repo("app")), "release")
    with Store(ws.db_path) as store:
        ids = [
            runstate.queue_run(
                store,
                repo="app",
                branch=branch,
                ref=f"refs/heads/{branch}",
                sha=sha,
                on_main=True,
                trigger="manual",
                actor="alice",
            )
            for branch in ("main", "hotfix", "release")
        ]
    async with Engine(ws, only_runs=set(ids)) as engine:
        for run_id in ids:
            assert (await wait_run_done(engine, run_id))["status"] == "succeeded"
        notes = await query(engine, "SELECT data FROM events WHERE kind = 'run.note'")
    spans = windows(tmp_path / "windows")
    assert set(spans) == set(ids)
    assert_disjoint(spans)
    assert any("is deploying to dev" in json.loads(n["data"])["reason"] for n in notes)


def test_start_deploy_from_many_threads_gives_the_lock_to_one(ws: Workspace) -> None:
    """Real SQLite, 8 threads with their own connections racing for one environment."""
    with Store(ws.db_path) as store:
        stages = []
        for i in range(8):
            run_id = runstate.queue_run(
                store,
                repo="app",
                branch=f"b{i}",
                ref="r",
                sha="0" * 40,
                on_main=True,
                trigger="manual",
                actor="alice",
            )
            runstate.claim_run(store, run_id, "test")
            plan = runstate.create_plan(
                store, run_id, "d", [("deploy", "prod", True, [("s", "true")])]
            )
            stages.append(plan[0]["id"])
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(stages))

    def race(stage_id: int) -> None:
        with Store(ws.db_path, session=f"t{stage_id}") as mine:
            barrier.wait()
            results[stage_id] = runstate.start_deploy(mine, stage_id, gated=True)

    threads = [threading.Thread(target=race, args=(s,)) for s in stages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [s for s, r in results.items() if r is None]
    assert len(winners) == 1
    assert all(r[0] == "busy" for r in results.values() if r is not None)  # type: ignore[index]
    with Store(ws.db_path) as store:
        runstate.record_deployment(store, winners[0])  # releases the lock with the deploy
        assert store.query("SELECT * FROM env_locks") == []
        loser = next(s for s in stages if s not in winners)
        assert runstate.start_deploy(store, loser, gated=True) is None
