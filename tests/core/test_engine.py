"""The engine against real git repositories, real subprocesses and a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from core import gitio
from core.engine import Engine
from core.errors import LeaseHeld
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace
from tests.conftest import commit, git, make_workspace
from tests.core.helpers import alive, query, wait_for, wait_run_done

BRANCH_PIPELINE = """\
on:
  main: all
  branches: [check]
stages:
  - name: check
    steps:
      - run: echo checking
  - name: package
    steps:
      - run: echo packaging
  - name: deploy-dev
    environment: dev
    steps:
      - run: echo deploying
"""


async def test_commit_on_main_runs_pipeline_and_moves_deployed_commit(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        sha = commit(repo, "feat: new thing", author="bob")
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "succeeded", run
        assert run["trigger"] == "commit" and run["branch"] == "main" and run["on_main"] == 1
        assert run["author"] == "Bob Baker" and run["subject"] == "feat: new thing"
        deployed = await query(
            engine,
            "SELECT commit_sha FROM deployments WHERE repo = 'app' "
            "AND environment = 'dev' ORDER BY id DESC LIMIT 1",
        )
        assert deployed[0]["commit_sha"] == sha
        lines = await query(
            engine,
            "SELECT line FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.run_id = ? ORDER BY l.step_id, l.seq",
            (run["id"],),
        )
        assert [r["line"] for r in lines] == [f"building {sha}", "deploying to dev"]
        stages = await query(
            engine, "SELECT name, status FROM stages WHERE run_id = ? ORDER BY idx", (run["id"],)
        )
        assert [(s["name"], s["status"]) for s in stages] == [
            ("build", "succeeded"),
            ("deploy-dev", "succeeded"),
        ]
        actions = await query(engine, "SELECT action FROM audit ORDER BY id")
        assert [a["action"] for a in actions] == ["run.trigger", "deploy.start", "deploy"]
    # the worktree is gone and the user's repo has no leftover worktree entries
    assert git(repo, "worktree", "list").count("\n") == 0


async def test_existing_branches_are_recorded_not_run_when_first_tracked(ws: Workspace) -> None:
    async with Engine(ws) as engine:
        await asyncio.sleep(0.5)
        assert await query(engine, "SELECT * FROM runs") == []
        refs = await query(engine, "SELECT repo, ref FROM refs")
        assert [(r["repo"], r["ref"]) for r in refs] == [("app", "main")]


async def test_commits_while_engine_was_down_are_run_on_start(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws):
        pass
    sha = commit(repo, "while down")
    async with Engine(ws) as engine:
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        assert (await wait_run_done(engine, rows[0]["id"]))["status"] == "succeeded"


async def test_branch_commit_runs_only_branch_stages(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"infra": BRANCH_PIPELINE})
    repo = ws.repo_dir(ws.repo("infra"))
    async with Engine(ws) as engine:
        git(repo, "checkout", "-q", "-b", "feature/bigger-db")
        sha = commit(repo, "bigger db", author="carol")
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "succeeded" and run["branch"] == "feature/bigger-db"
        assert run["on_main"] == 0
        stages = await query(
            engine, "SELECT name, status FROM stages WHERE run_id = ? ORDER BY idx", (run["id"],)
        )
        assert [(s["name"], s["status"]) for s in stages] == [
            ("check", "succeeded"),
            ("package", "skipped"),
            ("deploy-dev", "skipped"),
        ]
        assert await query(engine, "SELECT * FROM deployments") == []


async def test_default_branch_rule_runs_stages_that_deploy_nowhere(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        git(repo, "checkout", "-q", "-b", "topic")
        sha = commit(repo, "topic work")
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        stages = await query(
            engine, "SELECT name, status FROM stages WHERE run_id = ? ORDER BY idx", (run["id"],)
        )
        assert [(s["name"], s["status"]) for s in stages] == [
            ("build", "succeeded"),
            ("deploy-dev", "skipped"),
        ]


async def test_burst_of_commits_queues_one_run_for_the_newest(tmp_path: Path) -> None:
    slow = "stages:\n  - name: slow\n    steps:\n      - run: sleep 1\n"
    ws = make_workspace(tmp_path / "ws", {"app": slow})
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        first = commit(repo, "first")
        await wait_for(
            engine, "SELECT * FROM runs WHERE commit_sha = ? AND status = 'running'", (first,)
        )
        shas = [commit(repo, f"burst {i}") for i in range(5)]
        await asyncio.sleep(1.5)
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (shas[-1],))
        await wait_run_done(engine, rows[0]["id"])
        runs = await query(engine, "SELECT commit_sha, status FROM runs ORDER BY id")
        ran = [r["commit_sha"] for r in runs if r["status"] == "succeeded"]
        assert ran == [first, shas[-1]], runs
        assert all(
            r["status"] == "skipped" for r in runs if r["commit_sha"] not in (first, shas[-1])
        )


async def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # a deploying stage: unsandboxed, so the step can report its pids (the sandboxed cancel is
    # in test_sandbox.py)
    pipeline = (
        "stages:\n  - name: long\n    environment: dev\n    steps:\n"
        f"      - run: sleep 60 & echo $! > {pidfile}.child; echo $$ > {pidfile}; wait\n"
    )
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        run_id = await engine.db.call(svc.trigger, "app", Actor("alice"))
        await wait_for(
            engine, "SELECT * FROM steps WHERE run_id = ? AND status = 'running'", (run_id,)
        )
        for _ in range(100):
            if Path(f"{pidfile}.child").exists() and pidfile.exists():
                break
            await asyncio.sleep(0.05)
        shell_pid = int(pidfile.read_text())
        child_pid = int(Path(f"{pidfile}.child").read_text())
        assert await engine.db.call(svc.cancel, run_id, Actor("alice")) == "cancelling"
        run = await wait_run_done(engine, run_id, timeout=10)
        assert run["status"] == "cancelled"
        assert not alive(shell_pid) and not alive(child_pid)
        steps = await query(engine, "SELECT status FROM steps WHERE run_id = ?", (run_id,))
        assert [s["status"] for s in steps] == ["cancelled"]
        actions = [a["action"] for a in await query(engine, "SELECT action FROM audit ORDER BY id")]
        assert "run.cancel" in actions


async def test_step_timeout_fails_the_step(tmp_path: Path) -> None:
    pipeline = "stages:\n  - name: s\n    steps:\n      - run: sleep 30\n        timeout: 1s\n"
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    async with Engine(ws) as engine:
        run_id = await engine.db.call(Services(ws, engine.db.store).trigger, "app", Actor("alice"))
        started = time.monotonic()
        run = await wait_run_done(engine, run_id)
        assert run["status"] == "failed"
        assert time.monotonic() - started < 8
        step = (await query(engine, "SELECT * FROM steps WHERE run_id = ?", (run_id,)))[0]
        assert step["status"] == "failed" and "timed out" in step["error"]


async def test_failed_step_skips_the_rest_and_deploys_nothing(tmp_path: Path) -> None:
    pipeline = (
        "stages:\n  - name: test\n    steps:\n      - run: echo oops; exit 3\n      - run: echo never\n"
        "  - name: deploy\n    environment: dev\n    steps:\n      - run: echo never\n"
    )
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    async with Engine(ws) as engine:
        run_id = await engine.db.call(Services(ws, engine.db.store).trigger, "app", Actor("alice"))
        run = await wait_run_done(engine, run_id)
        assert run["status"] == "failed"
        steps = await query(
            engine, "SELECT status, exit_code FROM steps WHERE run_id = ? ORDER BY id", (run_id,)
        )
        assert [(s["status"], s["exit_code"]) for s in steps] == [
            ("failed", 3),
            ("skipped", None),
            ("skipped", None),
        ]
        assert await query(engine, "SELECT * FROM deployments") == []


async def test_invalid_pipeline_fails_the_run_with_a_located_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"app": "stages:\n  - name: a\n    stepz: []\n"})
    async with Engine(ws) as engine:
        run_id = await engine.db.call(Services(ws, engine.db.store).trigger, "app", Actor("alice"))
        run = await wait_run_done(engine, run_id)
        assert run["status"] == "failed"
        assert ":.ahead/pipeline.yml:3: stages[0].stepz: unknown key" in run["error"]
        assert 'did you mean "steps"?' in run["error"]


async def test_pipeline_is_read_at_the_commit_not_the_working_tree(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    (repo / ".ahead" / "pipeline.yml").write_text("stages: [this is not committed\n")
    async with Engine(ws) as engine:
        run_id = await engine.db.call(Services(ws, engine.db.store).trigger, "app", Actor("alice"))
        assert (await wait_run_done(engine, run_id))["status"] == "succeeded"


async def test_second_engine_refuses_and_names_the_holder(ws: Workspace) -> None:
    async with Engine(ws, name="first engine"):
        with pytest.raises(LeaseHeld, match="first engine"):
            await Engine(ws).start()


async def test_cli_trigger_in_another_process_is_picked_up(ws: Workspace) -> None:
    async with Engine(ws) as engine:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.cli",
            "--workspace",
            str(ws.root),
            "trigger",
            "app",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        run_id = int(out.decode().split("#")[1])
        assert (await wait_run_done(engine, run_id))["status"] == "succeeded"


async def test_artifact_is_kept_and_later_stages_see_it(tmp_path: Path) -> None:
    pipeline = (
        "stages:\n  - name: plan\n    steps:\n      - run: echo plan-body > plan.txt\n"
        "        artifact: plan.txt\n  - name: apply\n    steps:\n      - run: cat plan.txt\n"
    )
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        run_id = await engine.db.call(svc.trigger, "app", Actor("alice"))
        assert (await wait_run_done(engine, run_id))["status"] == "succeeded"
        detail = await engine.db.call(svc.show, run_id)
        assert [a["path"] for a in detail["artifacts"]] == ["plan.txt"]
        logs = await engine.db.call(svc.logs, run_id)
        assert logs[-1]["line"] == "plan-body"


def test_pending_commits_and_lag(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    base = git(repo, "rev-parse", "HEAD")
    day = 86400
    now = int(time.time())
    shas = []
    for i, age in enumerate((3 * day, 2 * day, day)):
        stamp = f"@{now - age} +0000"
        os.environ["GIT_AUTHOR_DATE"] = os.environ["GIT_COMMITTER_DATE"] = stamp
        try:
            shas.append(commit(repo, f"change {i}", author=["alice", "bob", "carol"][i]))
        finally:
            del os.environ["GIT_AUTHOR_DATE"], os.environ["GIT_COMMITTER_DATE"]
    with Store(ws.db_path) as store:
        from core import runstate

        run_id = runstate.queue_run(
            store,
            repo="app",
            branch="main",
            ref="refs/heads/main",
            sha=base,
            on_main=True,
            trigger="manual",
            actor="alice",
        )
        stages = runstate.create_plan(
            store,
            run_id,
            "d",
            [("deploy", "dev", True, [("x", "true")]), ("ship", "prod", False, [("y", "true")])],
        )
        runstate.record_deployment(store, stages[0]["id"])
        svc = Services(ws, store)
        status = svc.status()
        envs = status["repos"][0]["environments"]
        assert envs["dev"]["deployed"] == base and envs["dev"]["pending"] == 3
        assert abs(envs["dev"]["lag_seconds"] - 3 * day) < 120
        assert envs["prod"]["deployed"] is None and envs["prod"]["pending"] == 4
        pending = svc.pending("app", "dev")
        assert [c.sha for c in pending] == list(reversed(shas))
        assert [c.author for c in pending] == ["Carol Chen", "Bob Baker", "Alice Archer"]
        assert status["repos"][0]["head"] == shas[-1]


def test_killed_engine_leaves_run_interrupted_after_restart(
    ws_slow: Workspace, tmp_path: Path
) -> None:
    marker = tmp_path / "step-started"
    proc = __import__("subprocess").Popen(
        ["python", "-m", "core.cli", "--workspace", str(ws_slow.root), "engine"],
        env={**os.environ, "MARKER": str(marker)},
        stdout=__import__("subprocess").DEVNULL,
    )
    try:
        with Store(ws_slow.db_path) as store:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and store.query_one("SELECT 1 FROM lease") is None:
                time.sleep(0.05)
            run_id = Services(ws_slow, store).trigger("app", Actor("alice"))
            while time.monotonic() < deadline and not marker.exists():
                time.sleep(0.05)
            assert marker.exists(), "the step never started"
            # The engine records the step running (with its pid) once the process is spawned,
            # which can be just after the step wrote its marker: wait for the row too.
            step = None
            while time.monotonic() < deadline and step is None:
                step = store.query_one(
                    "SELECT * FROM steps WHERE run_id = ? AND status = 'running'", (run_id,)
                )
                time.sleep(0 if step else 0.05)
            assert step is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # the step's process group outlived the engine: the next engine must kill it
    assert alive(step["pid"])

    async def restart() -> None:
        async with Engine(ws_slow) as engine:
            run = (await query(engine, "SELECT * FROM runs WHERE id = ?", (run_id,)))[0]
            assert run["status"] == "interrupted"
            steps = await query(engine, "SELECT status FROM steps WHERE run_id = ?", (run_id,))
            assert {s["status"] for s in steps} == {"interrupted"}
            stages = await query(engine, "SELECT status FROM stages WHERE run_id = ?", (run_id,))
            assert {s["status"] for s in stages} == {"interrupted"}
            assert await query(engine, "SELECT * FROM deployments") == []
            ok, _, problem = await engine.db.call(engine.db.store.verify_audit)
            assert ok, problem

    asyncio.run(restart())
    for _ in range(50):
        if not alive(step["pid"]):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the interrupted step's process was left running")


@pytest.fixture
def ws_slow(tmp_path: Path) -> Workspace:
    pipeline = (
        "stages:\n  - name: deploy\n    environment: dev\n    steps:\n"
        '      - run: touch "$MARKER"; sleep 60\n'
    )
    return make_workspace(tmp_path / "ws", {"app": pipeline})


def test_reading_refs_handles_packed_and_nested_branches(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    git(repo, "branch", "feature/deep/name")
    git(repo, "pack-refs", "--all")
    git(repo, "branch", "loose")
    _, common = gitio.git_dirs(repo)
    branches = gitio.read_branches(common)
    head = git(repo, "rev-parse", "HEAD")
    assert branches == {"main": head, "feature/deep/name": head, "loose": head}


async def test_remote_repo_is_mirrored_and_notify_fetches_at_once(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    from tests.conftest import SIMPLE_PIPELINE, make_repo

    make_repo(work, SIMPLE_PIPELINE)
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "ahead.yml").write_text(
        f"repos:\n  - name: remote-app\n    url: file://{origin}\n    fetch_interval: 1h\n"
        "environments: [dev]\nsettings:\n  poll_interval: 0.2\n"
    )
    from core import workspace

    ws = workspace.read(root / "ahead.yml")
    async with Engine(ws) as engine:
        assert (ws.state_dir / "mirrors" / "remote-app.git" / "HEAD").exists()
        sha = commit(work, "pushed change", author="carol")
        git(work, "push", "-q", "origin", "main")
        await asyncio.sleep(0.5)
        assert await query(engine, "SELECT * FROM runs") == []  # not fetched yet (interval 1h)
        proc = await asyncio.create_subprocess_exec(
            "python", "-m", "core.cli", "--workspace", str(root), "notify", "remote-app"
        )
        assert await proc.wait() == 0
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "succeeded" and run["author"] == "Carol Chen"
