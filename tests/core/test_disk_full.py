"""The store on a full filesystem: decisions and deploys are refused with a clear error (fail
closed), nothing is reported done that is not stored, and work resumes once space is freed.

The state directory is a real tmpfs with a size limit (we run as root in CI; without the
permission to mount, the tests skip and say so). A filler file takes every free byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import approvals, cli, workspace
from core.engine import Engine
from core.errors import StoreError
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace
from tests.conftest import commit
from tests.core.helpers import query, wait_for, wait_run_done
from tests.core.test_approvals import make_ws, waiting_change

FLOOD = """\
stages:
  - name: flood
    steps:
      - run: yes "a line of log output that nobody can store"
"""
SLOW_DEPLOY = """\
stages:
  - name: build
    steps:
      - run: echo build
  - name: deploy-prod
    environment: prod
    steps:
      - run: echo start; sleep 1.5; echo done
"""


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a size-limited tmpfs here ({done.stderr.strip() or done.returncode}); "
            "the disk-full tests need root or CAP_SYS_ADMIN"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Filler:
    """Takes every free byte of a filesystem; `free()` gives it back."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"

    def fill(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * chunk)
        finally:
            os.close(fd)
        assert os.statvfs(self.path.parent).f_bavail == 0

    def free(self) -> None:
        self.path.unlink()


def ws_on(root: Path, state: Path, pipeline: str | None = None) -> Workspace:
    ws = make_ws(root, policy="approvals: 1", **({"pipeline": pipeline} if pipeline else {}))
    text = ws.file.read_text().replace(
        "settings:\n", f"settings:\n  state_dir: {state}\n  poll_interval: 0.2\n"
    )
    ws.file.write_text(text)
    return workspace.read(ws.file)


def integrity(db: Path) -> None:
    with Store(db) as store:
        assert store.query_one("PRAGMA integrity_check")["integrity_check"] == "ok"  # type: ignore[index]
        ok, _, problem = store.verify_audit()
        assert ok, problem


async def test_decisions_and_triggers_fail_closed_and_work_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "state") as state:
        ws = ws_on(tmp_path / "ws", state)
        repo = ws.repo_dir(ws.repo("service"))
        filler = Filler(state)
        async with Engine(ws) as engine:
            first = commit(repo, "release 1", author="alice")
            change = await waiting_change(engine, first)
            filler.fill()

            # a decision: refused, said clearly, and not stored
            with (
                pytest.raises(StoreError, match="full"),
                Store(ws.db_path, session="test:carol") as store,
            ):
                approvals.decide(store, ws, change["id"], "carol", "approve", "")
            code = cli.main(
                ["--workspace", str(ws.root), "--as", "carol", "approve", str(change["id"])]
            )
            err = capsys.readouterr().err
            assert (
                code == 1
                and "nothing of this was saved; free space" in err
                and "Traceback" not in err
            ), err
            assert await query(engine, "SELECT * FROM decisions") == []

            # a manual trigger: refused the same way
            with (
                pytest.raises(StoreError, match="full"),
                Store(ws.db_path, session="test") as store,
            ):
                Services(ws, store).trigger("service", Actor("alice", ("operator",)))
            assert (
                cli.main(["--workspace", str(ws.root), "--as", "alice", "trigger", "service"]) == 1
            )
            assert "full" in capsys.readouterr().err

            # a push while the disk is full: not lost, queued once space is back
            second = commit(repo, "release 2", author="alice")
            await engine.sweep(force=True)
            assert await query(engine, "SELECT * FROM runs WHERE commit_sha = ?", (second,)) == []
            assert await query(engine, "SELECT * FROM deployments") == []

            filler.free()
            change2 = await waiting_change(engine, second)
            with Store(ws.db_path, session="test:carol") as store:
                assert approvals.decide(store, ws, change2["id"], "carol", "approve", "").ok
            run = await wait_run_done(engine, change2["run_id"])
            assert run["status"] == "succeeded"
            deployed = await query(engine, "SELECT commit_sha FROM deployments")
            assert [d["commit_sha"] for d in deployed] == [second]
        integrity(ws.db_path)


async def test_a_deploy_that_cannot_be_recorded_is_never_reported_succeeded(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "state") as state:
        ws = ws_on(tmp_path / "ws", state, pipeline=SLOW_DEPLOY)
        repo = ws.repo_dir(ws.repo("service"))
        filler = Filler(state)
        async with Engine(ws) as engine:
            sha = commit(repo, "release 1", author="alice")
            change = await waiting_change(engine, sha)
            with Store(ws.db_path, session="test:carol") as store:
                assert approvals.decide(store, ws, change["id"], "carol", "approve", "").ok
            await wait_for(
                engine,
                "SELECT * FROM steps WHERE run_id = ? AND status = 'running' AND name LIKE "
                "'%sleep%'",
                (change["run_id"],),
            )
            filler.fill()  # the deploy step is running; its end cannot be written
            await asyncio.sleep(
                2.5
            )  # the step ends meanwhile; its end and the deploy are not stored
            rows = await query(engine, "SELECT status FROM runs WHERE id = ?", (change["run_id"],))
            assert rows[0]["status"] != "succeeded"
            assert await query(engine, "SELECT * FROM deployments") == []
            filler.free()
            run = await wait_run_done(engine, change["run_id"], timeout=30)
            assert run["status"] in ("failed", "interrupted"), run
            assert "full" in (run["error"] or ""), run
            assert await query(engine, "SELECT * FROM deployments") == []
        integrity(ws.db_path)


async def test_a_step_whose_log_cannot_be_stored_is_stopped_not_left_blocked(
    tmp_path: Path,
) -> None:
    """Before the fix the step blocked on a full pipe nobody read and the run hung until the step
    timeout (an hour by default)."""
    with tmpfs(tmp_path / "state", size="32m") as state:
        ws = ws_on(tmp_path / "ws", state, pipeline=FLOOD)
        repo = ws.repo_dir(ws.repo("service"))
        filler = Filler(state)
        async with Engine(ws) as engine:
            sha = commit(repo, "flood", author="alice")
            rows = await wait_for(
                engine,
                "SELECT s.run_id FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE r.commit_sha = ? AND s.status = 'running'",
                (sha,),
            )
            filler.fill()
            await asyncio.sleep(1.0)
            filler.free()
            run = await wait_run_done(engine, rows[0]["run_id"], timeout=30)
            assert run["status"] == "failed" and "full" in (run["error"] or ""), run
        integrity(ws.db_path)
