"""The console over SSH: a real server, real asyncssh clients on PTYs, read through pyte.

Each console is its own process forked by the zygote, bound to the operator who logged in.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from core.engine import Engine
from core.serve.keys import host_key_path
from core.services import Services
from core.store.db import Store
from core.workspace import Workspace
from tests.conftest import git
from tests.core.helpers import alive, wait_for
from tests.ssh.conftest import connect, open_console, serving

ROOT = Path(__file__).parents[2]


def trigger(ws: Workspace) -> int:
    """Queue a run of main's head as CI would (ci is no operator: a command as ci is refused)."""
    repo = ws.repo("service")
    with Store(ws.db_path) as store:
        return Services(ws, store).queue(
            repo,
            "main",
            "refs/heads/main",
            git(ws.repo_dir(repo), "rev-parse", "main"),
            "manual",
            "ci",
        )


async def test_alice_approves_and_bob_sees_it_within_a_second(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with Engine(ssh_ws) as engine, serving(ssh_ws, console=True) as server:
        trigger(ssh_ws)
        await wait_for(engine, "SELECT id FROM change_requests WHERE status = 'open'")
        _, alice_chan, alice = await open_console(server, "alice", keys["alice"])
        _, bob_chan, bob = await open_console(server, "bob", keys["bob"])
        await bob.wait_for("never   0/2")
        await alice.wait_for("never   0/2")
        assert "· alice ·" in alice.text() and "· bob ·" in bob.text()
        alice_chan.write(b"a")
        await alice.wait_for("alice may approve or reject")
        alice_chan.write(b"\r")
        await alice.wait_for("change #1")
        alice_chan.write(b"A")
        await alice.wait_for("Type prod to confirm")
        alice_chan.write(b"prod\r")
        rows = await wait_for(engine, "SELECT operator FROM decisions")
        decided = time.perf_counter()
        assert [r["operator"] for r in rows] == ["alice"]  # the session's operator, nobody else
        audited = await wait_for(
            engine, "SELECT actor, session FROM audit WHERE action = 'change.approve'"
        )
        assert audited[0]["actor"] == "alice" and audited[0]["session"].startswith(
            "ssh:alice@127.0.0.1#"
        )
        await bob.wait_for("never   1/2", timeout=1.0)
        assert time.perf_counter() - decided < 1.0
        assert "also here: alice" in bob.text() and "also here: bob" in alice.text()
        bob_chan.write(b"W")  # who: alice, over SSH, looking at the change
        await bob.wait_for("ssh 127.0.0.1")
        row = next(line for line in bob.screen.display if "ssh 127.0.0.1" in line)
        assert row.split()[0] == "alice" and row.split()[-1] == "Change", bob.text()


async def test_resize_reaches_the_console_and_client_env_is_ignored(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, console=True) as server:
        _, chan, term = await open_console(
            server,
            "carol",
            keys["carol"],
            cols=80,
            rows=24,
            env={"USER": "alice", "AHEAD_WORKSPACE": "/", "TERM": "dumb"},
        )
        await term.wait_for("q Quit")
        assert "· carol ·" in term.text()
        assert "Quit" in term.screen.display[23]
        chan.change_terminal_size(120, 30)
        term.screen.resize(30, 120)
        start = time.perf_counter()
        while "Quit" not in term.screen.display[29]:
            assert time.perf_counter() - start < 3, term.text()
            await asyncio.sleep(0.02)
        chan.write(b"q")
        await asyncio.wait_for(term.closed.wait(), 5)
        assert term.exit_status == 0


async def test_dropping_the_client_leaves_no_process(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, console=True) as server:
        conn, _, term = await open_console(server, "alice", keys["alice"])
        await term.wait_for("service")
        (session,) = server.sessions
        pid = session.child.pid
        assert alive(pid)
        rows = await server.db.call(server.db.store.query, "SELECT operator, kind FROM sessions")
        assert [(r["operator"], r["kind"]) for r in rows] == [("alice", "ssh")]
        conn.abort()
        start = time.perf_counter()
        while alive(pid) or server.sessions:
            assert time.perf_counter() - start < 3, "the console outlived its connection"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert await server.db.call(server.db.store.query, "SELECT * FROM sessions") == []


async def test_a_crash_shows_a_short_message_and_is_logged(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    crashing = (sys.executable, "-m", "tests.ssh.crashing_zygote")
    async with serving(ssh_ws, console=crashing) as server:
        _, _, term = await open_console(server, "alice", keys["alice"])
        await term.wait_for("The console stopped because of an error")
        await asyncio.wait_for(term.closed.wait(), 5)
    seen = term.raw.decode(errors="replace")
    assert "Traceback" not in seen and "hunter2" not in seen
    log = (ssh_ws.settings.state_dir / "serve.log").read_text()
    assert "console of alice crashed" in log and "injected bug" in log


async def test_without_a_terminal_only_listings(ssh_ws: Workspace, keys: dict[str, Path]) -> None:
    async with (
        serving(ssh_ws, console=True) as server,
        await connect(server, "bob", keys["bob"]) as conn,
    ):
        result = await conn.run()
        assert result.exit_status == 2 and "status, runs, changes, drift" in str(result.stdout)
        result = await conn.run("status", term_type="xterm", term_size=(80, 24))
        assert result.exit_status == 0 and "service" in str(result.stdout)
        result = await conn.run("drift --json")
        assert result.exit_status in (0, 1, 2) and '"drift": [' in str(result.stdout), result.stderr
        for writes in (
            "drift check",
            "drift ack service prod --reason x",
            "drift reconcile service prod",
            "drift trust service prod --yes",
        ):
            result = await conn.run(writes)
            assert (
                result.exit_status == 2
                and "only these listings" in f"{result.stdout}{result.stderr}"
            ), writes


async def test_ahead_serve_runs_engine_and_consoles_and_stops_cleanly(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    """The real command: `ahead serve --listen 127.0.0.1:0`, a console over SSH, then SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.launch",
        "--workspace",
        str(ssh_ws.root),
        "serve",
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        port = int(line.split("ssh -p ")[1].split()[0])
        server = type(
            "Server", (), {"port": port, "host_key_path": host_key_path(ssh_ws.state_dir)}
        )()
        conn, _, term = await open_console(server, "alice", keys["alice"])  # type: ignore[arg-type]
        await term.wait_for("engine: elsewhere")  # the engine runs in `ahead serve`
        children = [
            p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == proc.pid
        ]
        assert children, "no console zygote"
        conn.close()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert not [p for p in children if alive(int(p.name))], "a process outlived ahead serve"


def _parent(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
