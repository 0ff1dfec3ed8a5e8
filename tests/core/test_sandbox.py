"""What deploys is what was approved, and untrusted code runs isolated (issue 11, item 2).

A real engine, real git repos, real SQLite and real namespaces (unshare): a branch step attacks a
run waiting at the prod gate, the workspace's live directory, the state directory and /tmp.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core import approvals, gitio, sandbox, workspace
from core.engine import CheckoutChanged, Engine, verify_deploy_checkout
from core.errors import ConfigError
from core.runner import kill_leftovers
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace, current_os_user
from tests.conftest import commit, git, make_repo
from tests.core.helpers import query, wait_for, wait_run_done

ROOT = Path(__file__).parents[2]
MAIN_PIPELINE = """\
stages:
  - name: build
    steps:
      - run: echo built-from-the-commit > build.txt
        artifact: build.txt
  - name: deploy-prod
    environment: prod
    steps:
      - run: cat config.txt build.txt
"""
COMMITTED = "committed-config"


def make_ws(root: Path, settings: str = "") -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    repo = make_repo(root / "repos" / "app", MAIN_PIPELINE)
    commit(repo, "config", files={"config.txt": COMMITTED + "\n"})
    (root / "live" / "prod").mkdir(parents=True)
    (root / "live" / "prod" / "index.html").write_text("v1\n")
    me = current_os_user()
    (root / "ahead.yml").write_text(f"""\
repos:
  - name: app
    path: repos/app
environments: [dev, prod]
policies:
  prod:
    approvals: 1
operators:
  - name: alice
    roles: [operator, approver]
    emails: [alice@example.com]
    os_users: [{me}]
  - name: bob
    roles: [operator, approver]
    emails: [bob@example.com]
    os_users: [{me}]
settings:
  cancel_grace: 2s
  poll_interval: 0.2
{settings}""")
    return workspace.read(root / "ahead.yml")


def branch_commit(ws: Workspace, branch: str, script: str) -> str:
    """A commit on `branch` whose pipeline runs `script` as a branch step (no environment)."""
    repo = ws.repo_dir(ws.repo("app"))
    git(repo, "checkout", "-q", "-B", branch, "main")
    pipeline = "stages:\n  - name: attack\n    steps:\n      - run: |\n" + "".join(
        f"          {line}\n" for line in script.strip().splitlines()
    )
    sha = commit(repo, f"try {branch}", author="carol", files={".ahead/pipeline.yml": pipeline})
    git(repo, "checkout", "-q", "main")
    return sha


async def branch_run(engine: Engine, sha: str) -> tuple[dict[str, object], list[str]]:
    rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
    run = await wait_run_done(engine, rows[0]["id"])
    return run, await log_of(engine, run["id"])


async def log_of(engine: Engine, run_id: int) -> list[str]:
    rows = await query(
        engine,
        "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
        "WHERE s.run_id = ? ORDER BY l.step_id, l.seq",
        (run_id,),
    )
    return [r["line"] for r in rows]


ATTACK = """
for d in "$AHEAD_WORKSPACE"/.ahead/work/*/*/ "$AHEAD_WORKSPACE"/.ahead/deploy/*/*/; do
  [ -d "$d" ] || continue
  [ "$(cd "$d" && pwd -P)" = "$(pwd -P)" ] && continue
  if echo pwned > "$d/config.txt" && echo pwned > "$d/build.txt"; then echo "WROTE $d"; fi
done
"""
ATTACK_DB = """
if echo junk >> "$AHEAD_WORKSPACE/.ahead/state.db"; then echo WROTE-DB; else echo DENIED-DB; fi
if ls "$AHEAD_WORKSPACE/.ahead/artifacts" >/dev/null 2>&1; then echo SAW-ARTIFACTS; fi
"""


@pytest.mark.parametrize("setting", ["on", "off"])
async def test_branch_step_cannot_change_what_a_waiting_run_deploys(
    tmp_path: Path, setting: str
) -> None:
    # on: the sandbox hides the waiting checkout and state.db from the branch step; off (opted
    # out, the step writes the checkout): prod still deploys a fresh, verified checkout
    ws = make_ws(tmp_path / "ws", f"  sandbox: {setting}\n")
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        sha = commit(repo, "release", author="alice", files={"notes.txt": "1.0\n"})
        change = (
            await wait_for(
                engine,
                "SELECT * FROM change_requests WHERE head_sha = ? AND status = 'open'",
                (sha,),
            )
        )[0]
        waiting = ws.state_dir / "work" / "app" / str(change["run_id"])
        assert (waiting / "config.txt").read_text() == COMMITTED + "\n"
        run, lines = await branch_run(
            engine, branch_commit(ws, "attack", ATTACK + (ATTACK_DB if setting == "on" else ""))
        )
        assert run["status"] == "succeeded", (run, lines)
        if setting == "on":
            assert not any(line.startswith("WROTE") for line in lines), lines
            assert "DENIED-DB" in lines and "SAW-ARTIFACTS" not in lines
            assert (waiting / "config.txt").read_text() == COMMITTED + "\n"
        else:
            assert f"WROTE {waiting}/" in lines  # the attack reached the waiting checkout
            assert (waiting / "config.txt").read_text() == "pwned\n"
        with Store(ws.db_path, session="test:bob") as store:
            assert approvals.decide(store, ws, change["id"], "bob", "approve", "").ok
        done = await wait_run_done(engine, change["run_id"])
        assert done["status"] == "succeeded", done
        # the approved commit's content, and the build stage's artifact handed over
        assert (await log_of(engine, change["run_id"]))[-2:] == [COMMITTED, "built-from-the-commit"]
        assert not waiting.exists()  # the waiting checkout was replaced, then removed
    assert not list((ws.state_dir / "deploy").glob("*/*"))  # removed once the run ended
    assert (ws.state_dir / "deploy").stat().st_mode & 0o777 == 0o700


async def test_branch_step_cannot_write_the_live_directory_or_the_repo(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    hooks = ws.repo_dir(ws.repo("app")) / ".git" / "hooks"
    async with Engine(ws) as engine:
        run, lines = await branch_run(
            engine,
            branch_commit(
                ws,
                "live",
                """
echo hacked > "$AHEAD_WORKSPACE/live/prod/index.html" || echo DENIED-LIVE
echo 'echo owned' > "$AHEAD_WORKSPACE/repos/app/.git/hooks/post-checkout" || echo DENIED-HOOK
echo built > out.txt && cat out.txt
""",
            ),
        )
        assert run["status"] == "succeeded", (run, lines)
        assert "DENIED-LIVE" in lines and "DENIED-HOOK" in lines and "built" in lines
        assert any("Read-only file system" in line for line in lines), lines
    assert (ws.root / "live" / "prod" / "index.html").read_text() == "v1\n"
    assert not (hooks / "post-checkout").exists()


async def test_branch_step_has_a_private_tmp(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    name = f"ahead-sandbox-{uuid.uuid4().hex}"
    outside = Path("/tmp") / f"{name}-outside"
    outside.write_text("host file\n")
    try:
        async with Engine(ws) as engine:
            run, lines = await branch_run(
                engine,
                branch_commit(
                    ws,
                    "tmp",
                    f"""
echo inside > /tmp/{name} && cat /tmp/{name}
cat /tmp/{name}-outside || echo NO-HOST-FILE
""",
                ),
            )
        assert run["status"] == "succeeded", (run, lines)
        assert "inside" in lines and "NO-HOST-FILE" in lines and "host file" not in lines
        assert not (Path("/tmp") / name).exists()
    finally:
        outside.unlink()


async def test_sandboxed_step_keeps_output_exit_code_and_cwd(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        sha = branch_commit(ws, "exit", 'echo "out $AHEAD_BRANCH"; pwd; cat config.txt; exit 7')
        run, lines = await branch_run(engine, sha)
        assert run["status"] == "failed"
        assert lines == ["out exit", str(ws.state_dir / "work" / "app" / str(run["id"])), COMMITTED]
        step = (
            await query(
                engine, "SELECT status, exit_code, error FROM steps WHERE run_id = ?", (run["id"],)
            )
        )[0]
        assert (step["status"], step["exit_code"], step["error"]) == ("failed", 7, "exited with 7")


def _holders(token: str) -> list[int]:
    """Live processes whose environment carries this step token."""
    needle = f"AHEAD_STEP_TOKEN={token}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    with open(f"/proc/{pid}/stat") as stat:
                        if stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                            found.append(int(pid))
        except OSError:
            continue
    return found


async def test_cancel_and_leftover_kill_reach_the_whole_sandboxed_tree(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        for sha, how in (
            (branch_commit(ws, "cancel", "sleep 60 & sleep 61 & echo started; wait"), "cancel"),
            (branch_commit(ws, "leftover", "sleep 62 & echo started; wait"), "leftovers"),
        ):
            run_id = (await wait_for(engine, "SELECT id FROM runs WHERE commit_sha = ?", (sha,)))[
                0
            ]["id"]
            step = (
                await wait_for(
                    engine,
                    "SELECT s.token FROM steps s JOIN log_lines l ON l.step_id = s.id "
                    "WHERE s.run_id = ? AND l.line = 'started'",
                    (run_id,),
                )
            )[0]
            holders = _holders(step["token"])
            assert len(holders) >= 4, holders  # unshare, the init, the shell and its sleeps
            if how == "cancel":
                assert await engine.db.call(svc.cancel, run_id, Actor("alice")) == "cancelling"
                assert (await wait_run_done(engine, run_id, timeout=10))["status"] == "cancelled"
            else:  # what a restarted engine does with a dead engine's steps
                assert (
                    await asyncio.to_thread(kill_leftovers, step["token"]) >= 1
                )  # the rest may die first
                assert (await wait_run_done(engine, run_id, timeout=10))["status"] == "failed"
            for _ in range(50):
                if not _holders(step["token"]):
                    break
                await asyncio.sleep(0.05)
            assert _holders(step["token"]) == []


async def test_without_a_sandbox_branch_runs_are_refused_unless_opted_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.UNSHARE_ENV, "/nonexistent/unshare")
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        run, lines = await branch_run(engine, branch_commit(ws, "refused", "echo RAN"))
    assert run["status"] == "failed" and "RAN" not in lines
    assert "branch runs run in a sandbox" in str(run["error"])
    assert "/nonexistent/unshare not found" in str(run["error"])
    assert "sandbox: off" in str(run["error"])
    check = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "sandbox: unavailable: /nonexistent/unshare not found" in check.stdout, check.stdout

    opted = make_ws(tmp_path / "opted", "  sandbox: off\n")
    async with Engine(opted) as engine:
        run, lines = await branch_run(engine, branch_commit(opted, "allowed", "echo RAN"))
    assert run["status"] == "succeeded" and lines == ["RAN"]


def test_deploy_checkout_is_verified_against_the_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = git(repo, "rev-parse", "HEAD")
    dest = tmp_path / "checkout"
    gitio.worktree_add(repo, dest, sha)
    verify_deploy_checkout(repo, dest, sha)
    for change in (
        lambda: (dest / "README").write_text("changed\n"),
        lambda: (dest / "extra.sh").write_text("new\n"),
        lambda: git(dest, "commit", "-q", "--allow-empty", "-m", "moved"),
    ):
        change()
        with pytest.raises(CheckoutChanged, match="checkout"):
            verify_deploy_checkout(repo, dest, sha)
        git(dest, "reset", "-q", "--hard", sha)
        git(dest, "clean", "-qfdx")
        verify_deploy_checkout(repo, dest, sha)


def test_sandbox_setting_is_on_or_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        make_ws(tmp_path / "ws", "  sandbox: maybe\n")
    assert "ahead.yml:20: " in str(caught.value) and "settings.sandbox: must be on or off" in str(
        caught.value
    )


async def test_kept_artifact_changed_while_waiting_refuses_the_deploy(tmp_path: Path) -> None:
    # opted out of the sandbox, a branch step rewrites the waiting run's kept artifact
    ws = make_ws(tmp_path / "ws", "  sandbox: off\n")
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        sha = commit(repo, "release", author="alice", files={"notes.txt": "1.0\n"})
        change = (
            await wait_for(
                engine,
                "SELECT * FROM change_requests WHERE head_sha = ? AND status = 'open'",
                (sha,),
            )
        )[0]
        run, lines = await branch_run(
            engine,
            branch_commit(
                ws,
                "artifact",
                """
for f in "$AHEAD_WORKSPACE"/.ahead/artifacts/*/*; do echo pwned > "$f" && echo "WROTE $f"; done
""",
            ),
        )
        assert run["status"] == "succeeded" and any(line.startswith("WROTE") for line in lines), (
            lines
        )
        with Store(ws.db_path, session="test:bob") as store:
            assert approvals.decide(store, ws, change["id"], "bob", "approve", "").ok
        done = await wait_run_done(engine, change["run_id"])
        assert done["status"] == "failed", done
        assert "deploy refused: artifact 'build.txt'" in str(done["error"])
        assert "changed since it was kept" in str(done["error"])
        assert await query(engine, "SELECT * FROM deployments WHERE environment = 'prod'") == []
        assert "pwned" not in await log_of(engine, change["run_id"])


async def test_a_deploying_stage_can_opt_in_to_the_sandbox(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    pipeline = (
        "stages:\n  - name: deploy-dev\n    environment: dev\n    sandbox: true\n    steps:\n"
        '      - run: echo hacked > "$AHEAD_WORKSPACE/live/prod/index.html" || echo DENIED\n'
        "  - name: deploy-dev-plain\n    environment: dev\n    steps:\n"
        '      - run: echo plain > "$AHEAD_WORKSPACE/live/plain.txt" && echo WROTE\n'
    )
    async with Engine(ws) as engine:
        sha = commit(repo, "opt in", author="alice", files={".ahead/pipeline.yml": pipeline})
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "succeeded", run
        assert (await log_of(engine, run["id"]))[-2:] == ["DENIED", "WROTE"]
    assert (ws.root / "live" / "prod" / "index.html").read_text() == "v1\n"
    assert (ws.root / "live" / "plain.txt").read_text() == "plain\n"  # not opted in: as before


def test_stage_sandbox_is_a_switch_for_local_steps_only() -> None:
    from core.pipeline import parse

    def stage(extra: str) -> str:
        return f"stages:\n  - name: s\n    environment: dev\n{extra}    steps: [echo hi]\n"

    assert (
        parse(stage("    sandbox: true\n"), "p.yml", ("dev",), (), ("local", "far"))
        .stages[0]
        .sandbox
    )
    assert not parse(stage(""), "p.yml", ("dev",), (), ("local", "far")).stages[0].sandbox
    with pytest.raises(ConfigError, match=r"p.yml:4: stages\[0\].sandbox: must be on or off"):
        parse(stage("    sandbox: sometimes\n"), "p.yml", ("dev",), (), ("local", "far"))
    with pytest.raises(ConfigError, match="the sandbox isolates local steps only"):
        parse(
            stage("    runner: far\n    sandbox: true\n"), "p.yml", ("dev",), (), ("local", "far")
        )


async def test_branch_step_cannot_plant_git_config_or_hooks_in_the_engine_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A branch step that could write the engine user's home would escape the sandbox: a global
    # git config naming a hooks directory runs its post-checkout hook as the engine, unsandboxed,
    # when the engine makes the prod deploy checkout (here it would overwrite live/prod). The
    # home is outside /tmp, as in production (the sandbox's private /tmp would hide the attack);
    # the step names it by path (its own $HOME is a private one).
    home = ROOT / f".test-home-{uuid.uuid4().hex}"
    home.mkdir()
    try:
        gitconfig = home / ".gitconfig"
        gitconfig.write_text(Path(os.environ["GIT_CONFIG_GLOBAL"]).read_text())
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        before = gitconfig.read_text()
        ws = make_ws(tmp_path / "ws")
        repo = ws.repo_dir(ws.repo("app"))
        async with Engine(ws) as engine:
            run, lines = await branch_run(
                engine,
                branch_commit(
                    ws,
                    "home",
                    f"""
mkdir -p "{home}/hooks" && printf '#!/bin/sh\\necho hacked > {ws.root}/live/prod/index.html\\n' > "{home}/hooks/post-checkout" || echo DENIED-HOOKS
chmod +x "{home}/hooks/post-checkout" 2>/dev/null
printf '[core]\\n\\thooksPath = %s/hooks\\n' "{home}" >> "$GIT_CONFIG_GLOBAL" || echo DENIED-CONFIG
""",
                ),
            )
            assert run["status"] == "succeeded", (run, lines)
            assert "DENIED-HOOKS" in lines and "DENIED-CONFIG" in lines, lines
            sha = commit(repo, "release", author="alice", files={"notes.txt": "1.0\n"})
            change = (
                await wait_for(
                    engine,
                    "SELECT * FROM change_requests WHERE head_sha = ? AND status = 'open'",
                    (sha,),
                )
            )[0]
            with Store(ws.db_path, session="test:bob") as store:
                assert approvals.decide(store, ws, change["id"], "bob", "approve", "").ok
            assert (await wait_run_done(engine, change["run_id"]))["status"] == "succeeded"
        assert gitconfig.read_text() == before and not (home / "hooks").exists()
        assert (ws.root / "live" / "prod" / "index.html").read_text() == "v1\n"
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_branch_step_gets_a_writable_private_home(tmp_path: Path) -> None:
    """Builds write caches under $HOME: a sandboxed step gets a private one (the engine's own
    home is read-only in the sandbox), and nothing reaches the real home."""
    ws = make_ws(tmp_path / "ws")
    real_home = Path(os.environ["HOME"])
    before = sorted(p.name for p in real_home.iterdir())
    async with Engine(ws) as engine:
        run, lines = await branch_run(
            engine,
            branch_commit(
                ws,
                "cache",
                """
mkdir -p "$HOME/.cache/tool" && echo cached > "$HOME/.cache/tool/x" && cat "$HOME/.cache/tool/x"
echo "home=$HOME"
""",
            ),
        )
    assert run["status"] == "succeeded", (run, lines)
    assert "cached" in lines and "home=/tmp/home" in lines
    assert sorted(p.name for p in real_home.iterdir()) == before


async def test_a_system_config_path_does_not_break_dev_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIT_CONFIG_GLOBAL=/dev/null (a common way to ignore user config) must not make /dev
    read-only and nodev in the sandbox: steps write to /dev/null all the time."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        run, lines = await branch_run(
            engine, branch_commit(ws, "devnull", "echo quiet > /dev/null && echo ok")
        )
    assert run["status"] == "succeeded", (run, lines)
    assert lines == ["ok"]
