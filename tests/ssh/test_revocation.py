"""Revocation over SSH: an operator removed from ahead.yml (or whose key was) loses the open
console within seconds, without a restart of `ahead serve`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncssh
import pytest

from core.workspace import Workspace
from tests.core.helpers import alive
from tests.ssh.conftest import connect, open_console, public, serving


def drop_operator(ws: Workspace, name: str) -> None:
    """Rewrite ahead.yml without `name`'s entry (five lines: name, roles, keys, emails, os_users)."""
    lines = ws.file.read_text().splitlines(keepends=True)
    start = lines.index(f"  - name: {name}\n")
    ws.file.write_text("".join(lines[:start] + lines[start + 5 :]))


async def closed_within(term: object, seconds: float) -> float:
    start = time.perf_counter()
    await asyncio.wait_for(term.closed.wait(), seconds)  # type: ignore[attr-defined]
    return time.perf_counter() - start


async def test_an_operator_removed_from_ahead_yml_loses_the_open_console(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, console=True, revoke_interval=0.2) as server:
        _, _, bob = await open_console(server, "bob", keys["bob"])
        _, _, alice = await open_console(server, "alice", keys["alice"])
        await bob.wait_for("· bob ·")
        await alice.wait_for("· alice ·")
        child = next(s.child for s in server.sessions if s.operator == "bob")
        drop_operator(ssh_ws, "bob")
        await closed_within(bob, 5.0)
        assert b"you are no longer an operator of this workspace" in bob.raw
        for _ in range(100):  # the console's process is gone too
            if not alive(child.pid):
                break
            await asyncio.sleep(0.05)
        assert not alive(child.pid)
        await asyncio.sleep(0.5)
        assert not alice.closed.is_set()  # the others stay
        assert [s.operator for s in server.sessions] == ["alice"]


async def test_a_removed_key_ends_the_connection_it_logged_in_with(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, console=True, revoke_interval=0.2) as server:
        _, _, bob = await open_console(server, "bob", keys["bob"])
        await bob.wait_for("· bob ·")
        ssh_ws.file.write_text(
            ssh_ws.file.read_text().replace(public(keys["bob"]), public(keys["mallory"]))
        )
        await closed_within(bob, 5.0)
        assert b"you are no longer an operator of this workspace" in bob.raw


async def test_a_broken_ahead_yml_refuses_logins_but_keeps_sessions(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, revoke_interval=0.2) as server:
        good = ssh_ws.file.read_text()
        ssh_ws.file.write_text(good + "operators: [\n")
        with pytest.raises(asyncssh.PermissionDenied):  # fail closed: the old keys grant nothing
            await connect(server, "bob", keys["bob"])
        ssh_ws.file.write_text(good)
        async with await connect(server, "bob", keys["bob"]):
            pass
