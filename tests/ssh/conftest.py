"""A real `ahead serve` SSH server on 127.0.0.1 port 0, keys made per test, and a terminal.

The client is asyncssh; a console session is read through pyte, a terminal emulator, so tests
see what an operator sees. Host keys are checked against the server's own key file (never
`known_hosts=None`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pyte
import pytest

from core import workspace
from core.serve.keys import generate_key_pair
from core.serve.server import ServeOptions, SSHServer
from core.workspace import Workspace, current_os_user
from tests.conftest import commit, git
from tui.launch import ZYGOTE_ARGV

PIPELINE = """\
stages:
  - name: build
    steps:
      - run: echo build
  - name: deploy-prod
    environment: prod
    steps:
      - run: echo "deploying $AHEAD_COMMIT to prod"
"""
PEOPLE = ("alice", "bob", "carol", "mallory")  # mallory has a key, but is not an operator


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """A fresh ed25519 key pair per person: name → private key file."""
    folder = tmp_path / "client-keys"
    made = {}
    for name in PEOPLE:
        generate_key_pair(folder / name, f"{name}@test")
        made[name] = folder / name
    return made


def public(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


def make_ws(root: Path, keys: dict[str, Path], policy: str = "approvals: 2") -> Workspace:
    """A workspace with one gated service repo (written by dave, who is not an operator, so
    alice, bob and carol may all approve) and operators who log in with `keys`."""
    repo = root / "repos" / "service"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "initial", author="dave", files={".ahead/pipeline.yml": PIPELINE})
    me = current_os_user()
    operators = "".join(
        f'  - name: {name}\n    roles: [{roles}]\n    keys: ["{public(keys[name])}"]\n'
        f"    emails: [{name}@example.com]\n    os_users: [{me}]\n"
        for name, roles in (
            ("alice", "operator, approver"),
            ("bob", "operator, approver"),
            ("carol", "approver"),
        )
    )
    (root / "ahead.yml").write_text(
        "repos:\n  - name: service\n    path: repos/service\nenvironments: [dev, prod]\n"
        f"policies:\n  prod:\n    {policy}\noperators:\n{operators}"
        "settings:\n  cancel_grace: 2s\n  poll_interval: 0.2\n"
    )
    return workspace.read(root / "ahead.yml")


@pytest.fixture
def ssh_ws(tmp_path: Path, keys: dict[str, Path]) -> Workspace:
    return make_ws(tmp_path / "ws", keys)


@asynccontextmanager
async def serving(ws: Workspace, console: bool = False, **options: Any) -> AsyncIterator[SSHServer]:
    """A started server on 127.0.0.1:0 (with consoles when `console`), closed after."""
    argv = ZYGOTE_ARGV if console is True else (console or ())
    server = SSHServer(ws, ServeOptions(port=0, console_argv=tuple(argv), **options))
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


def host_key(server: SSHServer) -> asyncssh.SSHKey:
    assert server.host_key_path is not None
    return asyncssh.read_private_key(str(server.host_key_path)).convert_to_public()


async def connect(
    server: SSHServer, user: str, key: Path | None, **kwargs: Any
) -> asyncssh.SSHClientConnection:
    """Log in as `user` with `key` (None: no key at all), checking the server's host key."""
    options: dict[str, Any] = {
        "client_keys": [str(key)] if key else [],
        "agent_path": None,
        "password": None,
        "config": None,
        "known_hosts": ([host_key(server)], [], []),
    }
    options.update(kwargs)
    return await asyncssh.connect("127.0.0.1", server.port, username=user, **options)


class Term(asyncssh.SSHClientSession[bytes]):
    """The client's terminal: pyte renders what the server sends."""

    def __init__(self, cols: int, rows: int) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.exit_status: int | None = None
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.raw += data
        self.stream.feed(data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def text(self) -> str:
        return "\n".join(self.screen.display)

    async def wait_for(self, needle: str, timeout: float = 10.0) -> float:
        """Seconds until `needle` is on screen; fails with the screen after `timeout`."""
        start = time.perf_counter()
        while needle not in self.text():
            if time.perf_counter() - start > timeout:
                raise AssertionError(f"{needle!r} not on screen after {timeout}s:\n{self.text()}")
            await asyncio.sleep(0.01)
        return time.perf_counter() - start


async def open_console(
    server: SSHServer, user: str, key: Path, cols: int = 100, rows: int = 30, **kwargs: Any
) -> tuple[asyncssh.SSHClientConnection, Any, Term]:
    conn = await connect(server, user, key)
    chan, term = await conn.create_session(
        lambda: Term(cols, rows),
        term_type="xterm-256color",
        term_size=(cols, rows),
        encoding=None,
        **kwargs,
    )
    return conn, chan, term
