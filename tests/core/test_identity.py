"""Identity that cannot be claimed, revocation that bites, approvals a row cannot forge.

Real CLI subprocesses, real consoles over a real store, a real engine at a real gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import approvals
from core.api.session import ClientSession
from core.engine import Engine
from core.errors import PermissionDenied
from core.services import Actor, Revoked
from core.store.db import Store
from core.workspace import Workspace, current_os_user
from tests.conftest import commit
from tests.core.helpers import query, store_rows
from tests.core.test_approvals import decide, make_ws, waiting_change

ROOT = Path(__file__).parents[2]


def ahead(
    ws: Workspace, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def edit(ws: Workspace, old: str, new: str) -> None:
    text = ws.file.read_text()
    assert old in text
    ws.file.write_text(text.replace(old, new))


def test_logname_and_user_do_not_make_you_someone_else(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    me = current_os_user()
    assert me != "carol"
    edit(
        ws,
        f"  - name: carol\n    roles: [approver]\n    emails: [carol@example.com]\n    os_users: [{me}]\n",
        "  - name: carol\n    roles: [operator, approver]\n    emails: [carol@example.com]\n    os_users: [carol]\n",
    )
    claimed = ahead(
        ws,
        "--as",
        "carol",
        "trigger",
        "service",
        env={"LOGNAME": "carol", "USER": "carol", "LNAME": "carol", "USERNAME": "carol"},
    )
    assert claimed.returncode == 3, claimed.stdout + claimed.stderr
    assert f"carol's os_users in {ws.file} do not list the OS user {me!r}" in claimed.stderr
    approve = ahead(ws, "--as", "carol", "approve", "1", env={"LOGNAME": "carol", "USER": "carol"})
    assert approve.returncode == 3 and "do not list the OS user" in approve.stderr


async def started(ws: Workspace, actor: Actor) -> ClientSession:
    session = ClientSession(ws, actor, embed_engine=False)
    await session.start()
    return session


async def test_an_operator_removed_from_ahead_yml_is_refused_by_their_open_console(
    tmp_path: Path,
) -> None:
    ws = make_ws(tmp_path / "ws")
    session = await started(ws, Actor("bob", ("operator", "approver")))
    try:
        first = await session.trigger("service")
        edit(
            ws,
            "  - name: bob\n    roles: [operator, approver]\n    emails: [bob@example.com]\n"
            f"    os_users: [{current_os_user()}]\n",
            "",
        )
        for command in (
            session.trigger("service"),
            session.cancel(first),
            session.retry(first),
            session.drift_ack("service", "prod", None, "because", 60.0),
            session.drift_reconcile("service", "prod"),
        ):
            with pytest.raises(Revoked, match="no longer an operator of this workspace"):
                await command
        verdict = None
        with pytest.raises(Revoked):
            verdict = await session.approve(1)
        assert verdict is None
        assert session.actor.roles == () and not session.actor.may("trigger")  # read-only now
        assert session.revoked is not None and "no longer an operator" in session.revoked
        runs = await store_rows(session, "SELECT id, actor FROM runs")
        assert [(r["id"], r["actor"]) for r in runs] == [(first, "bob")]  # nothing more as bob
    finally:
        await session.aclose()


async def test_a_role_removed_is_refused_without_a_restart(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    session = await started(ws, Actor("bob", ("operator", "approver")))
    try:
        async with Engine(ws) as engine:
            change = await waiting_change(engine, commit(repo, "Release", author="dave"))
            edit(
                ws,
                "  - name: bob\n    roles: [operator, approver]\n",
                "  - name: bob\n    roles: [viewer]\n",
            )
            with pytest.raises(
                PermissionDenied, match="bob may not trigger: needs the operator role"
            ):
                await session.trigger("service")
            verdict = await session.approve(change["id"])
            assert (
                not verdict.ok and "bob cannot approve: not an approver for prod" in verdict.message
            )
            assert session.actor.roles == ("viewer",)
            edit(
                ws,
                "  - name: bob\n    roles: [viewer]\n",
                "  - name: bob\n    roles: [operator, approver]\n",
            )
            verdict = await session.approve(
                change["id"]
            )  # given back: works again, still no restart
            assert verdict.ok, verdict.message
    finally:
        await session.aclose()


async def test_a_broken_ahead_yml_refuses_commands_instead_of_using_the_old_roles(
    tmp_path: Path,
) -> None:
    ws = make_ws(tmp_path / "ws")
    session = await started(ws, Actor("bob", ("operator", "approver")))
    try:
        good = ws.file.read_text()
        ws.file.write_text(good.replace("operators:\n", "operators: [\n"))
        with pytest.raises(PermissionDenied, match="cannot be used to check who you are"):
            await session.trigger("service")
        with pytest.raises(PermissionDenied, match="cannot be used to check who you are"):
            await session.approve(1)
        ws.file.write_text(good)
        assert await session.trigger("service") == 1
    finally:
        await session.aclose()


async def test_a_decision_put_in_by_hand_does_not_count_and_is_reported(tmp_path: Path) -> None:
    # two approvals; alice writes the commit, so bob, carol, erin and frank may approve
    ws = make_ws(
        tmp_path / "ws",
        extra_operators="  - name: erin\n    roles: [approver]\n"
        "  - name: frank\n    roles: [approver]\n",
    )
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        change = await waiting_change(engine, commit(repo, "Release", author="alice"))
        assert decide(ws, change["id"], "carol").ok
        with Store(ws.db_path) as store, store.transaction() as conn:
            real = conn.execute("SELECT * FROM decisions").fetchone()
            columns = "change_id, operator, verdict, comment, session, created_at, expires_at, mac"
            # approvals by bob and erin, who never approved: no MAC, and a made-up one
            conn.execute(
                f"INSERT INTO decisions ({columns}) VALUES (?, 'bob', 'approve', '', 'x', ?, NULL, NULL)",
                (change["id"], real["created_at"]),
            )
            conn.execute(
                f"INSERT INTO decisions ({columns}) VALUES (?, 'erin', 'approve', '', 'x', ?, NULL, ?)",
                (change["id"], real["created_at"], real["mac"]),
            )
        with Store(ws.db_path) as store:
            outcome, reason, _ = approvals.check_gate(store, ws, change["id"])
        assert (outcome, reason) == ("wait", "1 of 2 approvals")
        verify = ahead(ws, "audit", "verify")
        assert verify.returncode == 1, verify.stdout + verify.stderr
        assert "decision 2 (bob approves change 1): has no MAC" in verify.stderr
        assert "decision 3 (erin approves change 1): its MAC does not match" in verify.stderr
        assert "decision 1 " not in verify.stderr
        session = await started(ws, Actor("carol"))  # the console's audit screen says it too
        try:
            ok, _, problem = await session.verify_audit()
        finally:
            await session.aclose()
        assert not ok and problem.startswith(
            "2 decision(s) do not verify: decision 2 (bob approves"
        )
        shown = ahead(ws, "change", str(change["id"]))
        assert "bob approved" in shown.stdout and "NOT AUTHENTICATED" in shown.stdout
        refused = decide(ws, change["id"], "bob")  # the forged row takes bob's place: said plainly
        assert (
            not refused.ok
            and "decision 2 in the store, bob's on change 1, does not verify" in refused.message
        )
        assert decide(ws, change["id"], "frank").ok
        with Store(ws.db_path) as store:
            outcome, _, _ = approvals.check_gate(store, ws, change["id"])
        assert outcome == "pass"
        passed = await query(engine, "SELECT detail FROM audit WHERE action = 'gate.passed'")
        assert json.loads(passed[0]["detail"])["approvers"] == [
            "carol",
            "frank",
        ]  # only who approved


def test_the_decision_key_is_private_and_never_in_the_store(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    path = approvals.key_path(ws)
    assert (
        approvals.decision_key(ws, create=False) is None and not path.exists()
    )  # readers make none
    key = approvals.decision_key(ws)
    assert key is not None
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert approvals.decision_key(ws) == key  # made once
    with Store(ws.db_path):
        pass
    assert key.hex().encode() not in ws.db_path.read_bytes()
    path.chmod(0o640)  # a key others may read authenticates nothing
    with pytest.raises(PermissionDenied, match="chmod 600"):
        approvals.decision_key(ws)


async def test_a_local_console_loses_an_operator_whose_os_users_no_longer_list_you(
    tmp_path: Path,
) -> None:
    ws = make_ws(tmp_path / "ws")
    me = current_os_user()
    session = await started(ws, Actor.local(ws, "bob"))
    try:
        assert session.actor.os_user == me
        assert await session.trigger("service") == 1
        edit(
            ws,
            f"    emails: [bob@example.com]\n    os_users: [{me}]\n",
            "    emails: [bob@example.com]\n    os_users: [somebody-else]\n",
        )
        with pytest.raises(Revoked, match=f"no longer lists the OS user '{me}' in bob's os_users"):
            await session.trigger("service")
    finally:
        await session.aclose()
