"""Log retention (settings.keep_logs_days): old runs lose their log lines, never their record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core import retention
from core.store.db import Store
from core.workspace import Workspace
from tests.core.test_cli import ahead


def _age(ws: Workspace, run_id: int, days: float) -> None:
    """Make run `run_id` look as if it ended `days` ago (what a year of use would leave)."""
    with Store(ws.db_path) as store, store.transaction() as conn:
        conn.execute(
            "UPDATE runs SET finished_at = ? WHERE id = ?", (time.time() - days * 86_400, run_id)
        )


def _lines(ws: Workspace, run_id: int) -> int:
    with Store(ws.db_path) as store:
        row = store.query_one(
            "SELECT count(*) AS n FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.run_id = ?",
            (run_id,),
        )
    assert row is not None
    return int(row["n"])


def test_old_logs_go_and_the_run_record_stays(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        assert ahead(ws.root, "trigger", "app", "--wait").returncode == 0
    _age(ws, 1, 31)
    _age(ws, 2, 29)
    assert _lines(ws, 1) > 0
    monkeypatch.setattr(retention, "BATCH_LINES", 1)  # several short transactions per step
    with Store(ws.db_path) as store:
        deleted, last = retention.prune_logs(store, ws.settings.keep_logs_days)
        assert deleted > 1 and last == 1
        assert retention.prune_logs(store, ws.settings.keep_logs_days, last) == (0, 1)
    assert (_lines(ws, 1), _lines(ws, 2) > 0, _lines(ws, 3) > 0) == (0, True, True)

    shown = ahead(ws.root, "show", "1")  # stages, steps and exit codes are kept
    assert shown.returncode == 0 and "succeeded" in shown.stdout
    logs = ahead(ws.root, "logs", "1")
    assert logs.returncode == 0 and logs.stdout == ""
    assert "log removed: the run ended more than 30 days ago" in logs.stderr
    assert "keep_logs_days" in logs.stderr
    recent = ahead(ws.root, "logs", "2")
    assert "deploying to dev" in recent.stdout and recent.stderr == ""


def test_keep_logs_days_from_ahead_yml(tmp_path: Path) -> None:
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws", extra="")
    text = (
        (ws.root / "ahead.yml")
        .read_text()
        .replace("settings:\n", "settings:\n  keep_logs_days: 7\n")
    )
    (ws.root / "ahead.yml").write_text(text)
    assert ahead(ws.root, "trigger", "app", "--wait").returncode == 0
    _age(ws, 1, 8)
    from core import workspace

    seven = workspace.read(ws.root / "ahead.yml")
    assert seven.settings.keep_logs_days == 7
    with Store(seven.db_path) as store:
        assert retention.prune_logs(store, seven.settings.keep_logs_days)[0] > 0
    assert "more than 7 days ago" in ahead(ws.root, "logs", "1").stderr


async def test_the_engine_prunes_on_its_schedule(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own retention task removes old logs without anyone asking."""
    import asyncio

    from core import engine as engine_module
    from core.engine import Engine

    assert ahead(ws.root, "trigger", "app", "--wait").returncode == 0
    _age(ws, 1, 40)
    monkeypatch.setattr(engine_module, "RETENTION_FIRST_DELAY", 0.0)
    async with Engine(ws, watch=False):
        async with asyncio.timeout(10):
            while _lines(ws, 1):
                await asyncio.sleep(0.05)
