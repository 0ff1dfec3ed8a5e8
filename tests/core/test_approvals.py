"""Change control, attacked: every way around an approval gate must fail.

Real git repos, a real engine, real SQLite; decisions go through the same service the CLI and
the console use (core.approvals.decide), each in its own transaction.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core import approvals, workspace
from core.engine import Engine
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace, current_os_user
from tests.conftest import commit, git, make_repo
from tests.core.helpers import query, wait_for, wait_run_done

ROOT = Path(__file__).parents[2]
PIPELINE = """\
stages:
  - name: build
    steps:
      - run: echo build > build.txt
        artifact: build.txt
  - name: deploy-prod
    environment: prod
    steps:
      - run: echo "deploying $AHEAD_COMMIT to prod"
"""


def make_ws(
    root: Path, policy: str = "approvals: 2", extra_operators: str = "", pipeline: str = PIPELINE
) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    make_repo(root / "repos" / "service", pipeline)
    me = current_os_user()
    (root / "ahead.yml").write_text(f"""\
repos:
  - name: service
    path: repos/service
environments: [dev, prod]
policies:
  prod:
    {policy}
operators:
  - name: alice
    roles: [operator, approver]
    emails: [alice@example.com, alice@home.example]
    os_users: [{me}]
  - name: bob
    roles: [operator, approver]
    emails: [bob@example.com]
    os_users: [{me}]
  - name: carol
    roles: [approver]
    emails: [carol@example.com]
    os_users: [{me}]
  - name: dave
    roles: [viewer]
    emails: [dave@example.com]
  - name: root-admin
    roles: [admin]
    os_users: [{me}]
{extra_operators}settings:
  cancel_grace: 2s
""")
    return workspace.read(root / "ahead.yml")


def decide(
    ws: Workspace, change_id: int, who: str, verdict: str = "approve", comment: str = ""
) -> approvals.Verdict:
    with Store(ws.db_path, session=f"test:{who}") as store:
        return approvals.decide(store, ws, change_id, who, verdict, comment)


async def waiting_change(engine: Engine, sha: str) -> dict[str, Any]:
    rows = await wait_for(
        engine,
        "SELECT c.* FROM change_requests c WHERE c.head_sha = ? AND c.status = 'open'",
        (sha,),
    )
    run = (await query(engine, "SELECT status FROM runs WHERE id = ?", (rows[0]["run_id"],)))[0]
    assert run["status"] == "waiting"
    return rows[0]


async def deploys(engine: Engine) -> list[str]:
    return [
        r["commit_sha"]
        for r in await query(
            engine, "SELECT commit_sha FROM deployments WHERE environment = 'prod' ORDER BY id"
        )
    ]


async def test_happy_path_two_approvals_deploy_exactly_the_approved_commit(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "Release 1.2.0", author="alice")
        change = await waiting_change(engine, sha)
        assert json.loads(change["commits"])[0]["sha"] == sha and change["required"] == 2
        assert "build.txt" not in change["diffstat"] and "README" in change["diffstat"]
        first = decide(ws, change["id"], "bob", comment="looks right")
        assert first.ok and first.status == "open" and "1 more needed" in first.message
        assert await deploys(engine) == []
        second = decide(ws, change["id"], "carol")
        assert second.ok and second.status == "approved"
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "succeeded"
        assert await deploys(engine) == [sha]
        actions = [a["action"] for a in await query(engine, "SELECT action FROM audit ORDER BY id")]
        assert actions == [
            "run.trigger",
            "gate.opened",
            "change.approve",
            "change.approve",
            "change.approved",
            "gate.passed",
            "deploy.start",
            "deploy",
        ]
        ok, _, problem = await engine.db.call(engine.db.store.verify_audit)
        assert ok, problem


@pytest.mark.parametrize(
    ("who", "author", "committer", "expect"),
    [
        ("alice", ("alice", "alice@example.com"), None, "alice cannot approve: author of"),
        ("alice", ("alice", "alice@home.example"), None, "alice cannot approve: author of"),
        (
            "bob",
            ("dave", "dave@example.com"),
            ("bob", "bob@example.com"),
            "bob cannot approve: committer of",
        ),
        (
            "dave",
            ("carol", "carol@example.com"),
            None,
            "dave cannot approve: not an approver for prod",
        ),
        (
            "root-admin",
            ("carol", "carol@example.com"),
            None,
            "root-admin cannot approve: not an approver",
        ),
        (
            "mallory",
            ("carol", "carol@example.com"),
            None,
            "mallory cannot approve: not an operator",
        ),
    ],
)
async def test_people_who_may_not_approve_are_refused(
    tmp_path: Path,
    who: str,
    author: tuple[str, str],
    committer: tuple[str, str] | None,
    expect: str,
) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        env = {}
        if committer:
            env = {"GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}
        (repo / "f").write_text(who)
        git(repo, "add", "-A")
        git(
            repo,
            "commit",
            "-qm",
            "change",
            env={
                "GIT_AUTHOR_NAME": author[0],
                "GIT_AUTHOR_EMAIL": author[1],
                "GIT_COMMITTER_NAME": author[0],
                "GIT_COMMITTER_EMAIL": author[1],
                **env,
            },
        )
        sha = git(repo, "rev-parse", "HEAD")
        change = await waiting_change(engine, sha)
        verdict = decide(ws, change["id"], who)
        assert not verdict.ok and expect in verdict.message, verdict
        assert await query(engine, "SELECT * FROM decisions") == []
        refused = await query(
            engine, "SELECT actor, action FROM audit WHERE action LIKE '%refused'"
        )
        assert refused == [{"actor": who, "action": "change.approve.refused"}]


async def test_triggerer_may_not_approve(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        run_id = await engine.db.call(
            svc.trigger, "service", Actor("bob", ("operator", "approver"))
        )
        rows = await wait_for(engine, "SELECT * FROM change_requests WHERE run_id = ?", (run_id,))
        verdict = decide(ws, rows[0]["id"], "bob")
        assert not verdict.ok and f"bob cannot approve: triggered run #{run_id}" in verdict.message


async def test_each_operator_counts_once(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="carol")
        change = await waiting_change(engine, sha)
        assert decide(ws, change["id"], "bob").ok
        again = decide(ws, change["id"], "bob")
        assert not again.ok and "each operator counts once" in again.message
        assert (await query(engine, "SELECT status FROM change_requests"))[0]["status"] == "open"
        assert await deploys(engine) == []


async def test_approval_after_expiry_is_refused_and_the_run_fails(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", "approvals: 1\n    expires: 1s")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="carol")
        change = await waiting_change(engine, sha)
        await asyncio.sleep(1.2)
        verdict = decide(ws, change["id"], "bob")
        assert not verdict.ok and "expired" in verdict.message
        run = await wait_run_done(engine, change["run_id"], timeout=15)
        assert run["status"] == "failed" and "expired" in run["error"]
        assert await deploys(engine) == []


async def test_an_expired_approval_no_longer_counts(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", "approvals: 2\n    approval_expires: 1s")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        assert decide(ws, change["id"], "bob").ok
        await asyncio.sleep(1.2)
        late = decide(ws, change["id"], "carol")
        assert late.ok and late.status == "open" and "(1 of 2)" in late.message
        assert await deploys(engine) == []


async def test_no_approval_during_a_freeze_and_the_gate_stays_shut(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", 'approvals: 1\n    freeze: ["00:00 - 24:00 UTC"]')
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        verdict = decide(ws, change["id"], "bob")
        assert not verdict.ok and "prod is frozen (00:00 - 24:00 UTC)" in verdict.message
        await asyncio.sleep(0.5)
        assert await deploys(engine) == []


async def test_approved_then_frozen_waits_until_the_freeze_ends(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws = make_ws(root, "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        # freeze prod before the gate is reached; decisions are refused while frozen, so this
        # approval is written as it would have been just before the freeze began
        text = (root / "ahead.yml").read_text()
        (root / "ahead.yml").write_text(
            text.replace("approvals: 1", 'approvals: 1\n    freeze: ["00:00 - 24:00 UTC"]')
        )
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        frozen = workspace.read(root / "ahead.yml")
        assert not decide(frozen, change["id"], "bob").ok
        await asyncio.sleep(0.3)
        assert await deploys(engine) == []
        (root / "ahead.yml").write_text(text)  # the freeze is lifted: the policy changed too
        rows = await wait_for(
            engine,
            "SELECT * FROM change_requests WHERE status = 'open' AND id != ?",
            (change["id"],),
            timeout=15,
        )
        voided = (
            await query(
                engine, "SELECT status, reason FROM change_requests WHERE id = ?", (change["id"],)
            )
        )[0]
        assert voided["status"] == "voided" and "policy changed" in voided["reason"]
        assert decide(workspace.read(root / "ahead.yml"), rows[0]["id"], "bob").ok
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "succeeded" and await deploys(engine) == [sha]


async def test_a_new_commit_supersedes_and_old_approvals_never_deploy_it(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        old = commit(repo, "old", author="alice")
        change = await waiting_change(engine, old)
        assert decide(ws, change["id"], "bob").ok
        new = commit(repo, "new", author="alice")
        old_run = await wait_run_done(engine, change["run_id"])
        assert old_run["status"] == "skipped" and "superseded by run" in old_run["error"]
        late = decide(ws, change["id"], "carol")
        assert not late.ok and "superseded" in late.message
        fresh = await waiting_change(engine, new)
        assert fresh["base_sha"] is None and len(json.loads(fresh["commits"])) == 3
        assert decide(ws, fresh["id"], "bob").ok  # bob's old approval did not carry over
        assert (
            await query(engine, "SELECT status FROM change_requests WHERE id = ?", (fresh["id"],))
        )[0]["status"] == "open"
        assert decide(ws, fresh["id"], "carol").ok
        await wait_run_done(engine, fresh["run_id"])
        assert await deploys(engine) == [new]


async def test_a_moved_base_voids_the_approvals(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        with Store(ws.db_path) as store:  # prod changes under the request (e.g. a hotfix run)
            from core import runstate

            other = runstate.queue_run(
                store,
                repo="service",
                branch="hotfix",
                ref="refs/heads/hotfix",
                sha=sha,
                on_main=False,
                trigger="manual",
                actor="bob",
            )
            stages = runstate.create_plan(
                store, other, "d", [("deploy", "prod", True, [("x", "true")])]
            )
            runstate.record_deployment(store, stages[0]["id"])
        verdict = decide(ws, change["id"], "carol")
        assert not verdict.ok and "prod moved from nothing to" in verdict.message
        assert (
            await query(engine, "SELECT status FROM change_requests WHERE id = ?", (change["id"],))
        )[0]["status"] == "voided"


async def test_policy_cannot_be_loosened_from_the_repo(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        loosened = PIPELINE + "policies:\n  prod:\n    approvals: 0\n"
        sha = commit(repo, "drop the gate", author="alice", files={".ahead/pipeline.yml": loosened})
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "failed" and "policies: unknown key" in run["error"]
        renamed = PIPELINE.replace("  - name: deploy-prod", "  - name: sneaky")
        sha = commit(
            repo, "rename the stage", author="alice", files={".ahead/pipeline.yml": renamed}
        )
        change = await waiting_change(engine, sha)  # still gated: the gate follows the environment
        assert change["environment"] == "prod"
        assert await deploys(engine) == []


async def test_rejection_stops_the_run_and_needs_a_comment(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        bare = decide(ws, change["id"], "bob", "reject")
        assert not bare.ok and "needs a comment" in bare.message
        assert decide(ws, change["id"], "bob", "reject", "not during the sale").ok
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "failed" and "rejected by bob: not during the sale" in run["error"]
        assert await deploys(engine) == []


async def test_cancel_at_the_gate(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        await engine.db.call(Services(ws, engine.db.store).cancel, change["run_id"], Actor("bob"))
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "cancelled"
        assert not decide(ws, change["id"], "carol").ok


async def test_concurrent_approvals_make_exactly_one_transition(tmp_path: Path) -> None:
    approvers = "".join(f"  - name: a{i}\n    roles: [approver]\n" for i in range(10))
    ws = make_ws(tmp_path / "ws", "approvals: 3", extra_operators=approvers)
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        results: list[approvals.Verdict] = []
        errors: list[BaseException] = []

        def approve(name: str) -> None:
            try:
                results.append(decide(ws, change["id"], name))
            except BaseException as exc:  # any error reaching a user fails the test
                errors.append(exc)

        threads = [threading.Thread(target=approve, args=(f"a{i % 10}",)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(1 for r in results if r.ok) == 10  # each approver once; the rest counted once
        transitions = await query(engine, "SELECT * FROM audit WHERE action = 'change.approved'")
        assert len(transitions) == 1
        await wait_run_done(engine, change["run_id"])
        assert await deploys(engine) == [sha]


async def test_waiting_run_survives_an_engine_restart(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        assert decide(ws, change["id"], "bob").ok
    assert decide(ws, change["id"], "carol").ok  # decided while no engine runs
    async with Engine(ws) as engine:
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "succeeded"
        assert await deploys(engine) == [sha]
        logs = await query(engine, "SELECT line FROM log_lines ORDER BY step_id, seq")
        assert logs[-1]["line"] == f"deploying {sha} to prod"


async def test_an_engine_stopped_before_a_resumed_run_is_back_at_its_gate_leaves_it_waiting(
    tmp_path: Path,
) -> None:
    """A resumed run is stopped in its checkout (before its gate is reached again): it stays
    waiting for the next engine, not interrupted (core/demo.py's settle relies on it)."""
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
    workdir = ws.state_dir / "work" / "service" / str(change["run_id"])
    async with Engine(ws) as engine:
        async with asyncio.timeout(10):
            while not workdir.exists():  # the resumed run is checking out its commit
                await asyncio.sleep(0.001)
    async with Engine(ws, only_runs=set()) as engine:
        run = (await query(engine, "SELECT status FROM runs WHERE id = ?", (change["run_id"],)))[0]
        assert run["status"] == "waiting"
        assert decide(ws, change["id"], "bob").ok and decide(ws, change["id"], "carol").ok
    async with Engine(ws) as engine:
        assert (await wait_run_done(engine, change["run_id"]))["status"] == "succeeded"


async def test_a_run_past_its_gate_keeps_no_waiting_note(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        await wait_for(
            engine,
            "SELECT id FROM runs WHERE id = ? AND error LIKE 'waiting for approval:%'",
            (change["run_id"],),
        )
        assert decide(ws, change["id"], "bob").ok and decide(ws, change["id"], "carol").ok
        run = await wait_run_done(engine, change["run_id"])
        assert (run["status"], run["error"]) == ("succeeded", None)


async def test_a_broken_policy_file_keeps_the_gate_shut(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws = make_ws(root, "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        assert decide(ws, change["id"], "bob").ok
        good = (root / "ahead.yml").read_text()
        (root / "ahead.yml").write_text(good + "policies: [broken\n")
        await asyncio.sleep(0.5)
        # approved, but the engine can no longer read the policy: nothing deploys
        run = (
            await query(engine, "SELECT status, error FROM runs WHERE id = ?", (change["run_id"],))
        )[0]
        del run
        (root / "ahead.yml").write_text(good)
        await wait_run_done(engine, change["run_id"])
        assert await deploys(engine) == [sha]


def test_cli_changes_change_approve_reject_and_identity(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ahead(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    engine = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        time.sleep(1.0)
        sha = commit(repo, "Release", author="alice")
        for _ in range(100):
            listed = json.loads(ahead("changes", "--json").stdout)["changes"]
            if listed:
                break
            time.sleep(0.1)
        change = listed[0]["id"]
        assert "deploys " + sha[:7] in ahead("change", str(change)).stdout
        own = ahead("--as", "alice", "approve", str(change))
        assert own.returncode == 3 and "alice cannot approve: author of " + sha[:7] in own.stderr
        assert (
            ahead("--as", "dave", "approve", str(change)).returncode == 3
        )  # dave's os_users: none
        assert ahead("--as", "carol", "reject", str(change)).returncode == 3  # needs a comment
        done = ahead("--as", "bob", "approve", str(change), "--comment", "ship it")
        assert done.returncode == 0 and "approved change" in done.stdout
        for _ in range(100):
            status = json.loads(ahead("status", "--json").stdout)
            if status["repos"][0]["environments"]["prod"]["deployed_commit"] == sha:
                break
            time.sleep(0.1)
        assert status["repos"][0]["environments"]["prod"]["deployed_commit"] == sha
        audit = ahead("audit")
        assert "change.approve" in audit.stdout and "gate.passed" in audit.stdout
        assert ahead("audit", "verify").returncode == 0
    finally:
        engine.terminate()
        engine.wait(10)


def test_read_only_identity_cannot_trigger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ws"
    make_repo(root / "repos" / "app")
    (root / "ahead.yml").write_text(
        "repos:\n  - {name: app, path: repos/app}\nenvironments: [dev]\n"
        "operators:\n  - name: someone-else\n    roles: [admin]\n    os_users: [nobody-here]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(root), "trigger", "app"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 3 and "read-only" in done.stderr
    as_other = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "--workspace",
            str(root),
            "--as",
            "someone-else",
            "trigger",
            "app",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert as_other.returncode == 3 and "do not list the OS user" in as_other.stderr


async def test_a_long_range_does_not_hide_an_author(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    commit(repo, "alice's early work", author="alice")
    # More than the 200 commits a change request lists, by Dave: each sets the file n to its
    # number. One `git fast-import` makes them (615 git calls, one commit at a time, took seconds).
    when = f"{int(time.time())} +0000"
    stream = "".join(
        f"commit refs/heads/main\nauthor Dave <dave@example.com> {when}\n"
        f"committer Dave <dave@example.com> {when}\ndata {len(f'c{i}')}\nc{i}\n"
        + (f"from {git(repo, 'rev-parse', 'HEAD')}\n" if i == 0 else "")
        + f"M 100644 inline n\ndata {len(str(i))}\n{i}\n\n"
        for i in range(205)
    )
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=stream, text=True, check=True
    )
    git(repo, "reset", "-q", "--hard")
    assert (
        git(repo, "log", "-1", "--format=%an %s") == "Dave c204"
        and (repo / "n").read_text() == "204"
    )
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        run_id = await engine.db.call(svc.trigger, "service", Actor("root-admin", ("admin",)))
        rows = await wait_for(engine, "SELECT * FROM change_requests WHERE run_id = ?", (run_id,))
        assert len(json.loads(rows[0]["commits"])) == 200
        verdict = decide(ws, rows[0]["id"], "alice")
        assert not verdict.ok and "alice cannot approve: author of" in verdict.message


async def test_a_change_voided_by_a_decision_gets_a_new_request(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws = make_ws(root, "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = await waiting_change(engine, sha)
        text = (root / "ahead.yml").read_text()
        (root / "ahead.yml").write_text(
            text.replace("approvals: 1", "approvals: 1\n    approval_expires: 1h")
        )
        edited = workspace.read(root / "ahead.yml")
        verdict = decide(edited, change["id"], "bob")  # the decision sees the policy change first
        assert not verdict.ok and verdict.status == "voided"
        rows = await wait_for(engine, "SELECT * FROM change_requests WHERE status = 'open'")
        assert rows[0]["id"] != change["id"] and rows[0]["run_id"] == change["run_id"]
        assert decide(edited, rows[0]["id"], "bob").ok
        assert (await wait_run_done(engine, change["run_id"]))["status"] == "succeeded"


async def test_whoever_triggered_any_run_of_the_commit_may_not_approve(tmp_path: Path) -> None:
    # roles come from ahead.yml at each command: erin is an operator and an approver there
    ws = make_ws(
        tmp_path / "ws", extra_operators="  - name: erin\n    roles: [operator, approver]\n"
    )
    async with Engine(ws) as engine:
        svc = Services(ws, engine.db.store)
        first = await engine.db.call(
            svc.trigger, "service", Actor("erin", ("operator", "approver"))
        )
        await wait_for(engine, "SELECT * FROM change_requests WHERE run_id = ?", (first,))
        await engine.db.call(svc.cancel, first, Actor("erin"))
        await wait_run_done(engine, first)
        retry = await engine.db.call(svc.retry, first, Actor("bob", ("operator", "approver")))
        rows = await wait_for(
            engine, "SELECT * FROM change_requests WHERE run_id = ? AND status = 'open'", (retry,)
        )
        verdict = decide(ws, rows[0]["id"], "erin")
        assert not verdict.ok and f"erin cannot approve: triggered run #{first}" in verdict.message


async def test_the_consoles_may_i_is_the_refusal_decide_gives(tmp_path: Path) -> None:
    """The console asks the door (`Api.may_decide`) before offering approve/reject: its answer
    is the message `decide` refuses with, computed by the same code (approvals.refusal)."""
    from core.api import Api

    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit(repo, "x", author="alice")
        change = (await waiting_change(engine, sha))["id"]
        with Api.open(ws) as api:
            for who in ("alice", "dave"):  # the author; a viewer who is no approver
                said = api.may_decide(Actor(who), change)
                verdict = decide(ws, change, who)
                assert not verdict.ok and said == verdict.message, (who, said)
            assert api.may_decide(Actor("bob"), change) is None
            assert decide(ws, change, "bob").ok
            said = api.may_decide(Actor("bob"), change)
            assert said is not None and said == decide(ws, change, "bob").message
