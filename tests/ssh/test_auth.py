"""`ahead serve`'s door: who gets in, who does not, and what nobody may do once in.

A real asyncssh server on 127.0.0.1 port 0 with keys made per test, real clients. No consoles
here (tests/ssh/test_console.py has them): sessions are the read-only listings.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from core import workspace
from core.errors import ConfigError
from core.serve import guard
from core.serve.keys import KeyProblem, parse_public_key
from core.serve.server import Connection
from core.workspace import Workspace
from tests.ssh.conftest import connect, host_key, public, serving

REFUSED = (asyncssh.PermissionDenied, asyncssh.DisconnectError, ConnectionError, OSError)


async def test_operator_logs_in_with_own_key_and_login_logout_are_audited(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws) as server:
        async with await connect(server, "alice", keys["alice"]) as conn:
            result = await conn.run("status --json")
            assert result.exit_status == 0, result.stderr
            assert json.loads(str(result.stdout))["repos"][0]["name"] == "service"
            process = await conn.create_process(
                "status"
            )  # stdin closed first, as `ssh host status </dev/null`
            process.stdin.write_eof()
            done = await process.wait(timeout=10)
            assert done.exit_status == 0 and "service" in str(done.stdout), done.stderr
        await asyncio.sleep(0.1)
        rows = await server.db.call(
            server.db.store.query,
            "SELECT actor, action, subject FROM audit WHERE action LIKE 'ssh.%' ORDER BY id",
        )
    assert [(r["actor"], r["action"], r["subject"]) for r in rows] == [
        ("alice", "ssh.login", "127.0.0.1"),
        ("alice", "ssh.logout", "127.0.0.1"),
    ]


@pytest.mark.parametrize(
    "user,key", [("bob", "alice"), ("alice", "mallory"), ("mallory", "mallory"), ("root", "alice")]
)
async def test_wrong_user_or_unknown_key_is_refused(
    ssh_ws: Workspace, keys: dict[str, Path], user: str, key: str
) -> None:
    async with serving(ssh_ws) as server:
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, user, keys[key])
        await asyncio.sleep(0.1)
        rows = await server.db.call(
            server.db.store.query, "SELECT * FROM audit WHERE action = 'ssh.login_failed'"
        )
    assert [(r["actor"], r["subject"]) for r in rows] == [(user, "127.0.0.1")]


async def test_password_and_none_auth_are_refused(ssh_ws: Workspace, keys: dict[str, Path]) -> None:
    async with serving(ssh_ws) as server:
        with pytest.raises(asyncssh.PermissionDenied):  # no credentials at all: 'none' auth
            await connect(server, "alice", None)
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, "alice", None, password="alice")
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, "alice", None, kbdint_auth=True, password="alice")


async def test_a_falsy_begin_auth_would_let_anyone_in_so_ours_is_always_true(
    ssh_ws: Workspace, tmp_path: Path
) -> None:
    """asyncssh's footgun, shown on a bare server, and our answer to it."""

    class Careless(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False  # e.g. a forgotten return

    key = asyncssh.generate_private_key("ssh-ed25519")
    bare = await asyncssh.create_server(Careless, "127.0.0.1", 0, server_host_keys=[key])
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            bare.get_port(),
            username="anyone",
            client_keys=[],
            agent_path=None,
            config=None,
            known_hosts=([key.convert_to_public()], [], []),
        ) as conn:
            assert conn.get_extra_info("username") == "anyone"  # in, with no credentials
    finally:
        bare.close()
    async with serving(ssh_ws) as server:
        ours = Connection(server)
        for name in ("alice", "", "root", "x" * 500, "\x00"):
            assert ours.begin_auth(name) is True


async def test_offered_key_does_not_bind_the_identity(
    ssh_ws: Workspace, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offer alice's key (the server answers 'ok, sign with it'), then sign with bob's as bob:
    the session is bob's. Signing with bob's key while still claiming alice is refused."""
    from asyncssh import auth as client_auth

    bob_key = asyncssh.read_private_key(str(keys["bob"]))
    switch_user: list[str] = []

    def sign_with_bob(self: Any, _pkttype: int, _pktid: int, packet: Any) -> None:
        packet.get_string()
        packet.get_string()
        packet.check_end()
        if switch_user:
            self._conn._username = switch_user[0]
        self._keypair = asyncssh.load_keypairs([bob_key])[0]
        self.create_task(self._send_signed_request())

    monkeypatch.setitem(
        client_auth._ClientPublicKeyAuth._packet_handlers,
        client_auth.MSG_USERAUTH_PK_OK,
        sign_with_bob,
    )
    async with serving(ssh_ws) as server:
        switch_user.append("bob")
        async with await connect(server, "alice", keys["alice"]) as conn:
            result = await conn.run("status --json")
            assert result.exit_status == 0
        await asyncio.sleep(0.1)
        rows = await server.db.call(
            server.db.store.query, "SELECT actor FROM audit WHERE action = 'ssh.login'"
        )
        assert [r["actor"] for r in rows] == ["bob"]
        switch_user.clear()
        with pytest.raises(asyncssh.PermissionDenied):  # alice's name, bob's signature
            await connect(server, "alice", keys["alice"])


async def test_forwarding_sftp_and_other_commands_are_refused(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws) as server:
        async with await connect(server, "alice", keys["alice"]) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
            with pytest.raises((asyncssh.SFTPError, asyncssh.ChannelOpenError)):
                await conn.start_sftp_client()
            for command in (
                "approve 1",
                "trigger service",
                "sh -c id",
                "scp -t /tmp",
                "status --workspace /etc",
                "--as bob status",
                "",
            ):
                result = await conn.run(command)
                assert result.exit_status == 2, (command, result.stdout, result.stderr)
                assert "approved" not in str(result.stdout)
            result = await conn.run("changes --json")
            assert result.exit_status == 0 and "changes" in json.loads(str(result.stdout))
            result = await conn.run("runs --json")
            assert result.exit_status == 0 and "runs" in json.loads(str(result.stdout))


async def test_host_key_is_made_once_private_and_stable(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    fingerprints = []
    for _ in range(3):
        async with serving(ssh_ws) as server:
            assert server.host_key_path is not None
            assert stat.S_IMODE(os.stat(server.host_key_path).st_mode) == 0o600
            fingerprints.append(host_key(server).get_fingerprint())
            async with await connect(server, "carol", keys["carol"]):
                pass
    assert len(set(fingerprints)) == 1


async def test_lockout_survives_a_restart(ssh_ws: Workspace, keys: dict[str, Path]) -> None:
    policy = guard.LockoutPolicy(lock_after=3, window=60, lock_for=60)
    async with serving(ssh_ws, lockout=policy) as server:
        for _ in range(3):
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(server, "alice", keys["mallory"])
        for _ in range(50):
            if server.is_locked("127.0.0.1"):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(REFUSED):
            await connect(server, "alice", keys["alice"])
    async with serving(ssh_ws, lockout=policy) as server:
        with pytest.raises(REFUSED):  # the right key, but the address is locked out
            await connect(server, "alice", keys["alice"])


async def test_connections_per_address_are_capped(ssh_ws: Workspace, keys: dict[str, Path]) -> None:
    async with serving(ssh_ws, max_per_source=2) as server:
        first = await connect(server, "alice", keys["alice"])
        second = await connect(server, "bob", keys["bob"])
        with pytest.raises(REFUSED):
            await connect(server, "carol", keys["carol"])
        first.close()
        await first.wait_closed()
        await asyncio.sleep(0.1)
        async with await connect(server, "carol", keys["carol"]):
            pass
        second.close()


async def test_unauthenticated_connections_time_out(ssh_ws: Workspace) -> None:
    async with serving(ssh_ws, login_timeout=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        banner = await reader.readline()
        assert banner.startswith(b"SSH-2.0-")
        assert await asyncio.wait_for(reader.read(), 5) is not None  # closed by the server
        writer.close()


def test_keys_in_ahead_yml_are_validated_with_line_and_field(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    good = public(keys["alice"])
    kind, fingerprint = parse_public_key(good)
    assert kind == "ssh-ed25519"
    assert fingerprint == asyncssh.read_public_key(str(keys["alice"]) + ".pub").get_fingerprint()
    for bad, problem in [
        ("ssh-ed25519", "expected"),
        ("ssh-ed25519 !!!!", "base64"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "unsupported"),
        ("ssh-rsa " + good.split()[1], "not a ssh-rsa key"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- x", "private key"),
    ]:
        with pytest.raises(KeyProblem, match=problem):
            parse_public_key(bad)
    file = tmp_path / "ahead.yml"
    file.write_text(
        "repos: []\nenvironments: [dev]\noperators:\n  - name: alice\n    keys:\n"
        f'      - "{good}"\n      - "ssh-ed25519 AAAA"\n'
    )
    with pytest.raises(ConfigError) as info:
        workspace.read(file)
    assert info.value.line == 7 and info.value.field == "operators[0].keys[1]"
    assert "not an SSH public key" in str(info.value)
    file.write_text(
        "repos: []\nenvironments: [dev]\noperators:\n  - name: alice\n    keys:\n"
        f'      - "{good}"\n  - name: bob\n    keys: ["{good}"]\n'
    )
    with pytest.raises(ConfigError, match="already alice's"):
        workspace.read(file)


async def test_a_key_removed_from_ahead_yml_stops_working_without_a_restart(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws) as server:
        async with await connect(server, "bob", keys["bob"]):
            pass
        text = ssh_ws.file.read_text().replace(public(keys["bob"]), public(keys["mallory"]))
        ssh_ws.file.write_text(text)
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, "bob", keys["bob"])
        async with await connect(server, "bob", keys["mallory"]):  # bob's new key
            pass


async def test_a_connection_may_try_only_so_many_keys(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    strangers = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(6)]
    async with serving(ssh_ws, max_auth_attempts=6) as server:
        with pytest.raises(REFUSED):  # six keys refused: closed before alice's own comes
            await connect(server, "alice", None, client_keys=[*strangers, str(keys["alice"])])
        async with await connect(
            server, "alice", None, client_keys=[*strangers[:5], str(keys["alice"])]
        ):
            pass
