"""The console shows an environment an interrupted deploy left locked, and clears it when an
operator unlocks it (from another process: the CLI)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from core import runstate
from core.store.db import Store
from core.workspace import current_os_user
from tests.conftest import make_workspace
from tests.tui.conftest import console, screen_text


async def test_overview_marks_a_locked_environment_until_unlocked(tmp_path: Path) -> None:
    me = current_os_user()
    ws = make_workspace(
        tmp_path / "ws",
        environments=("dev", "prod"),
        extra=(
            f"policies:\n  prod:\n    approvals: 1\noperators:\n  - name: bob\n    roles: [approver]\n"
            f"    os_users: [{me}]\n"
        ),
    )
    with Store(ws.db_path) as store:  # a prod deploy that a crash interrupted
        run_id = runstate.queue_run(
            store,
            repo="app",
            branch="main",
            ref="refs/heads/main",
            sha="0" * 40,
            on_main=True,
            trigger="manual",
            actor="bob",
        )
        runstate.claim_run(store, run_id, "test")
        stage = runstate.create_plan(
            store, run_id, "d", [("deploy", "prod", True, [("s", "true")])]
        )[0]
        assert runstate.start_deploy(store, stage["id"], gated=True) is None
        runstate.finish_run(store, run_id, "interrupted")
    async with console(ws, size=(120, 30), embed=False) as (app, pilot):
        row = next(line for line in screen_text(app).splitlines() if " app " in f" {line} ")
        assert "locked" in row
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "core.cli",
                "--workspace",
                str(ws.root),
                "--as",
                "bob",
                "unlock",
                "app",
                "prod",
                "--reason",
                "checked prod",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for _ in range(100):
            await pilot.pause()  # type: ignore[attr-defined]
            if "locked" not in screen_text(app):
                break
            await asyncio.sleep(0.05)
        assert "locked" not in screen_text(app)
