"""Exhausting `ahead serve`: idle connections, channels, listings, open files.

The flood test runs the real `ahead serve` in a subprocess whose open-file limit is 256 (soft
and hard, so it cannot raise it) and holds more idle TCP connections than that from one address
and from thirty (127.0.0.0/8 is all loopback): an operator still logs in, a run on the engine in
the same process still succeeds, and the logs stay a few lines long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from core.serve import guard
from core.serve.keys import host_key_path
from core.workspace import Workspace
from tests.conftest import commit
from tests.ssh.conftest import connect, make_ws, serving

ROOT = Path(__file__).parents[2]
QUICK = "stages:\n  - name: build\n    steps:\n      - run: echo built\n"


async def idle(address: str, port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` TCP connections from `address` that never speak; those the server drops are left out."""

    async def one() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0)), 3
            )
            return writer
        except (OSError, TimeoutError):
            return None

    return [w for w in await asyncio.gather(*(one() for _ in range(count))) if w is not None]


def ahead(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


async def test_a_flood_of_idle_connections_leaves_logins_and_runs_working(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    ws = make_ws(tmp_path / "ws", keys)
    commit(
        ws.repo_dir(ws.repo("service")),
        "quick pipeline",
        author="dave",
        files={".ahead/pipeline.yml": QUICK},
    )
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.cli",
                "--workspace",
                str(ws.root),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit_files,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    held: list[asyncio.StreamWriter] = []
    try:
        deadline = time.monotonic() + 15
        while "serving " not in out.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        port = int(out.read_text().split(" on 127.0.0.1:")[1].split(":")[0])
        held += await idle("127.0.0.2", port, 30)  # one address: its cap, 10
        for i in range(3, 33):  # thirty addresses, ten each: 330 tries in all, over the 256 files
            held += await idle(f"127.0.0.{i}", port, 10)
            await asyncio.sleep(
                0.02
            )  # the listen queue is short (half the files' reserve): let it drain
        await asyncio.sleep(0.3)
        assert len(os.listdir(f"/proc/{serve.pid}/fd")) < 256 - 32  # headroom kept for the engine
        key = asyncssh.read_private_key(
            str(host_key_path(ws.settings.state_dir))
        ).convert_to_public()
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="alice",
            client_keys=[str(keys["alice"])],
            agent_path=None,
            config=None,
            known_hosts=([key], [], []),
            connect_timeout=20,
        ) as conn:
            listed = await conn.run("status --json", timeout=20)
            assert listed.exit_status == 0 and "service" in str(listed.stdout), listed.stderr
        run = await asyncio.to_thread(ahead, ws.root, "trigger", "service", "--wait")
        assert run.returncode == 0 and "succeeded" in run.stdout, run.stdout + run.stderr
    finally:
        for writer in held:
            writer.close()
        serve.terminate()
        serve.wait(20)
    log = (ws.settings.state_dir / "serve.log").read_text()
    errors = err.read_text()
    assert "Too many open files" not in log + errors and "Traceback" not in log + errors
    refusals = [line for line in log.splitlines() if "refused" in line or "dropped" in line]
    assert 1 <= len(refusals) <= 8, log  # one line per kind of refusal, not one per connection
    assert len(log.splitlines()) < 30 and len(errors.splitlines()) < 10, (log, errors)


async def test_unauthenticated_connections_are_capped_and_a_newcomer_evicts_the_heaviest_address(
    ssh_ws: Workspace, keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ahead.serve")
    async with serving(ssh_ws, max_preauth=4) as server:
        held = await idle("127.0.0.2", server.port, 4)
        await asyncio.sleep(0.1)
        assert server.preauth_total == 4
        more = await idle("127.0.0.2", server.port, 20)  # the heaviest address itself: refused
        await asyncio.sleep(0.1)
        assert server.preauth_total == 4 and server.per_source["127.0.0.2"] == 4
        async with await connect(server, "alice", keys["alice"]) as conn:  # evicts one of .2's
            assert (await conn.run("status --json")).exit_status == 0
            assert server.preauth_total == 3 and len(server.preauth["127.0.0.2"]) == 3
        for writer in held + more:
            writer.close()
    refused = [r for r in caplog.records if "unauthenticated connections already" in r.getMessage()]
    assert len(refused) == 1  # twenty refusals, one line (the summary comes when the window ends)


async def test_session_channels_and_listing_processes_are_capped(
    ssh_ws: Workspace, keys: dict[str, Path]
) -> None:
    async with serving(ssh_ws, max_listings=3) as server:
        async with (
            await connect(server, "alice", keys["alice"]) as one,
            await connect(server, "bob", keys["bob"]) as two,
        ):
            first = [one.run("status --json") for _ in range(5)]  # 4 channels, 2 listings at once
            second = [two.run("runs --json") for _ in range(2)]  # a third listing in all
            results = await asyncio.gather(*first, *second, return_exceptions=True)
    opened = [r for r in results if isinstance(r, asyncssh.ChannelOpenError)]
    assert len(opened) == 1 and results.index(opened[0]) < 5  # the fifth channel of one connection
    done = [r for r in results if isinstance(r, asyncssh.SSHCompletedProcess)]
    ran = [r for r in done if r.exit_status == 0]
    busy = [
        r
        for r in done
        if r.exit_status == 1 and "too many listings" in str(r.stderr) + str(r.stdout)
    ]
    assert (len(ran), len(busy)) == (3, 3), results
    assert sum(1 for r in results[:5] if r in ran) <= 2


def test_burst_log_logs_once_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ahead.test")
    burst = guard.BurstLog(logging.getLogger("ahead.test"))
    for i in range(50):
        burst.refused("flood", "refused 127.0.0.%d", i)
    burst.flush("flood")
    burst.refused("flood", "refused again")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 127.0.0.0",
        "49 more refused in the last 10 s (flood)",
        "refused again",
    ]


def test_serve_raises_its_open_file_limit_to_the_hard_limit() -> None:
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from core.serve.guard import raise_fd_limit\n"
            "import resource\nprint(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])",
        ],
        capture_output=True,
        text=True,
        preexec_fn=low,
        check=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.split() == ["512", "512"]
    assert "raise_fd_limit()" in (ROOT / "core" / "cli" / "commands.py").read_text()


def test_burst_filter_passes_one_record_a_window_without_repeating_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("ahead.test.accept")
    logger.addFilter(guard.BurstFilter(window=0.2))
    caplog.set_level(logging.INFO, "ahead.test.accept")
    try:
        raise OSError(24, "Too many open files")
    except OSError as exc:
        for _ in range(100):
            logger.error("socket.accept() out of system resource", exc_info=exc)
    time.sleep(0.25)
    logger.error("socket.accept() out of system resource")
    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource",
        "socket.accept() out of system resource (and 99 more like it in the last 0.2 s)",
    ]
