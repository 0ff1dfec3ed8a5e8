"""Remote runners against a real SSH server on 127.0.0.1.

The server stands in for a runner host: it accepts only the engine's client key and runs each
requested command for real with `/bin/sh -c` in its own home directory, piping stdin, stdout and
stderr like sshd (stdin closed when the connection goes). Per-test host and client keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from core import cli, sshclient, workspace
from core.engine import Engine
from core.errors import ConfigError
from core.pipeline import parse as parse_pipeline
from core.remote import STEP, as_bytes, escape, request
from core.services import Actor, Services
from core.workspace import Workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import alive, query, wait_for, wait_run_done


@dataclass
class Host:
    """The fake runner host: its address, home, keys and live connections."""

    port: int
    home: Path
    host_key: asyncssh.SSHKey
    connections: list[asyncssh.SSHServerConnection] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def address(self) -> str:
        return f"runner@127.0.0.1:{self.port}"


class HostServer(asyncssh.SSHServer):
    def __init__(self, host: Host) -> None:
        self.host = host

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.host.connections.append(conn)


async def run_like_sshd(host: Host, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the command with /bin/sh -c, pipe the streams, report the exit status."""
    command = process.command or ""
    host.commands.append(command)
    env = {"HOME": str(host.home), "PATH": os.environ["PATH"], "LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=host.home,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    async def feed() -> None:
        try:
            while data := await process.stdin.read(65536):
                stdin.write(data)
                await stdin.drain()
        except (OSError, asyncssh.Error):
            pass
        finally:
            stdin.close()  # EOF, as sshd gives when the channel or connection closes

    async def copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
        while data := await source.read(65536):
            with contextlib.suppress(OSError, asyncssh.Error):
                sink.write(data)

    feeder = asyncio.ensure_future(feed())
    await asyncio.gather(copy(proc.stdout, process.stdout), copy(proc.stderr, process.stderr))
    code = await proc.wait()
    feeder.cancel()
    with contextlib.suppress(OSError, asyncssh.Error):
        process.exit(code if code >= 0 else 128 - code)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    home = tmp_path / "runner-home"
    home.mkdir()
    host = Host(0, home, asyncssh.generate_private_key("ssh-ed25519"))
    tasks: set[asyncio.Task[None]] = set()

    def factory(process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.ensure_future(run_like_sshd(host, process))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    state = tmp_path / "ws" / ".ahead"
    engine_key = sshclient.client_key(
        state
    )  # the workspace's engine key, made before the workspace
    authorized = asyncssh.import_authorized_keys(engine_key.export_public_key().decode())
    server = await asyncssh.create_server(
        lambda: HostServer(host),
        "127.0.0.1",
        0,
        server_host_keys=[host.host_key],
        authorized_client_keys=authorized,
        process_factory=factory,
        encoding=None,
        line_editor=False,
        allow_scp=False,
    )
    host.port = server.sockets[0].getsockname()[1]
    yield host
    server.close()
    for conn in host.connections:
        conn.abort()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


def remote_ws(tmp_path: Path, host: Host, pipeline: str, trust: bool = True) -> Workspace:
    ws = make_workspace(
        tmp_path / "ws",
        {"app": pipeline},
        extra=f"runners:\n  - name: far\n    ssh: {host.address()}\n",
    )
    if trust:
        address = ws.runner("far").ssh
        assert address is not None
        sshclient.trust(ws.state_dir, address, host.host_key)
    return ws


async def run_once(ws: Workspace) -> tuple[Engine, int]:
    engine = Engine(ws)
    await engine.start()
    run_id = await engine.db.call(Services(ws, engine.db.store).trigger, "app", Actor("alice"))
    return engine, run_id


async def log_of(engine: Engine, run_id: int) -> list[str]:
    rows = await query(
        engine,
        "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
        "WHERE s.run_id = ? ORDER BY s.id, l.seq",
        (run_id,),
    )
    return [r["line"] for r in rows]


REMOTE = """\
stages:
  - name: build
    runner: far
    env: {GREETING: "it's a \\"quoted\\" $HOME \\\\ value\\nsecond line é"}
    steps:
      - run: echo "one"; echo "pwd=$(pwd)"; echo "two" >&2; test -f README && echo "code here"
      - run: [printf, "<%s>\\n", "a b", "$HOME", "-x", ""]
      - run: printf '%s\\n' "$GREETING" "$AHEAD_SUBJECT" "runner=$AHEAD_RUNNER" "$AHEAD_COMMIT"
      - run: mkdir -p out && echo built > out/result.txt
        artifact: out/result.txt
  - name: use
    steps:
      - run: cat out/result.txt
"""


async def test_remote_step_runs_streams_and_brings_artifacts_back(
    tmp_path: Path, host: Host
) -> None:
    ws = remote_ws(tmp_path, host, REMOTE)
    canary = tmp_path / "canary"
    sha = commit(
        ws.repo_dir(ws.repos[0]), f"hostile $(touch {canary}) `touch {canary}` ; touch {canary}"
    )
    engine, run_id = await run_once(ws)
    try:
        run = await wait_run_done(engine, run_id)
        lines = await log_of(engine, run_id)
        assert run["status"] == "succeeded", (run, lines)
        assert lines[0] == "one" and lines[2] == "two"
        pwd = next(line for line in lines if line.startswith("pwd="))
        assert pwd.startswith(f"pwd={host.home}/.ahead-runner/run.")
        assert "code here" in lines
        assert ["<a b>", "<$HOME>", "<-x>", "<>"] == [x for x in lines if x.startswith("<")]
        assert 'it\'s a "quoted" $HOME \\ value' in lines and "second line é" in lines
        assert f"hostile $(touch {canary}) `touch {canary}` ; touch {canary}" in lines
        assert "runner=far" in lines and sha in lines
        assert not canary.exists()
        assert lines[-1] == "built"  # the local stage read the artifact fetched from the runner
        artifacts = await query(
            engine, "SELECT path, size FROM artifacts WHERE run_id = ?", (run_id,)
        )
        assert [(a["path"], a["size"]) for a in artifacts] == [("out/result.txt", 6)]
        steps = await query(
            engine, "SELECT status, exit_code FROM steps WHERE run_id = ?", (run_id,)
        )
        assert all(s["status"] == "succeeded" and s["exit_code"] == 0 for s in steps)
        assert await emptied(host)  # the stage's directory on the runner goes when the run ends
    finally:
        await engine.aclose()
    # no command string carried commit metadata
    assert not any("hostile" in c or sha in c for c in host.commands)


async def test_exit_code_is_recorded_and_output_streams_while_running(
    tmp_path: Path, host: Host
) -> None:
    pipeline = (
        "stages:\n  - name: s\n    runner: far\n    steps:\n"
        "      - run: echo started; sleep 0.7; echo done; exit 7\n"
    )
    ws = remote_ws(tmp_path, host, pipeline)
    engine, run_id = await run_once(ws)
    try:
        await wait_for(
            engine,
            "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.run_id = ? AND s.status = 'running' AND l.line = 'started'",
            (run_id,),
        )
        run = await wait_run_done(engine, run_id)
        assert run["status"] == "failed"
        step = (await query(engine, "SELECT * FROM steps WHERE run_id = ?", (run_id,)))[0]
        assert (step["status"], step["exit_code"], step["error"]) == ("failed", 7, "exited with 7")
        assert await log_of(engine, run_id) == ["started", "done"]
    finally:
        await engine.aclose()


LONG = (
    "stages:\n  - name: s\n    runner: far\n    steps:\n"
    "      - run: sleep 60 & echo $! > child; echo $$ > shell; echo started; wait\n"
)


async def wait_started(engine: Engine, run_id: int) -> None:
    await wait_for(
        engine,
        "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
        "WHERE s.run_id = ? AND l.line = 'started'",
        (run_id,),
    )


def remote_pids(host: Host) -> list[int]:
    [directory] = list((host.home / ".ahead-runner").iterdir())
    return [int((directory / name).read_text()) for name in ("shell", "child")]


async def emptied(host: Host) -> bool:
    for _ in range(100):
        if not list((host.home / ".ahead-runner").iterdir()):
            return True
        await asyncio.sleep(0.05)
    return False


async def gone(pids: list[int], seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not any(alive(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


@contextlib.asynccontextmanager
async def long_step(
    tmp_path: Path, host: Host, pipeline: str = LONG
) -> AsyncIterator[tuple[Engine, int, list[int]]]:
    """An engine whose run's remote step has started: (engine, run id, remote pids)."""
    engine, run_id = await run_once(remote_ws(tmp_path, host, pipeline))
    try:
        await wait_started(engine, run_id)
        pids = remote_pids(host)
        assert all(alive(pid) for pid in pids)
        yield engine, run_id, pids
    finally:
        await engine.aclose()


async def first_step(engine: Engine, run_id: int) -> dict[str, Any]:
    return (await query(engine, "SELECT * FROM steps WHERE run_id = ? ORDER BY id", (run_id,)))[0]


async def test_cancel_kills_the_remote_process_group(tmp_path: Path, host: Host) -> None:
    async with long_step(tmp_path, host) as (engine, run_id, pids):
        svc = Services(engine.ws, engine.db.store)
        assert await engine.db.call(svc.cancel, run_id, Actor("alice")) == "cancelling"
        run = await wait_run_done(engine, run_id, timeout=10)
        assert run["status"] == "cancelled"
        assert await gone(pids, 3)
        step = await first_step(engine, run_id)
        assert step["status"] == "cancelled" and step["pid"] > 0
        assert any("kill" in c and "TERM" in c for c in host.commands)  # over a second channel


async def test_lost_connection_marks_the_step_interrupted(tmp_path: Path, host: Host) -> None:
    async with long_step(tmp_path, host) as (engine, run_id, pids):
        for conn in host.connections:
            conn.abort()  # the network goes
        run = await wait_run_done(engine, run_id, timeout=10)
        step = await first_step(engine, run_id)
        assert step["status"] == "interrupted" and run["status"] == "interrupted"
        assert "lost the connection to runner far" in step["error"]
        assert any("lost the connection" in line for line in await log_of(engine, run_id))
        assert await gone(pids, 5)  # the wrapper on the runner ended the group when stdin closed
        assert await emptied(host)  # the run reconnected to remove its directory


async def test_timeout_ends_the_remote_group(tmp_path: Path, host: Host) -> None:
    async with long_step(tmp_path, host, LONG.replace("wait\n", "wait\n        timeout: 1s\n")) as (
        engine,
        run_id,
        pids,
    ):
        await wait_run_done(engine, run_id, timeout=10)
        step = await first_step(engine, run_id)
        assert step["status"] == "failed" and step["error"] == "timed out after 1s"
        assert await gone(pids, 3)


async def test_engine_stop_mid_step_ends_the_remote_group(tmp_path: Path, host: Host) -> None:
    async with long_step(tmp_path, host) as (_engine, _run_id, pids):
        pass  # the engine stops mid-step
    assert await gone(pids, 3)


async def test_changed_host_key_is_refused(tmp_path: Path, host: Host) -> None:
    ws = remote_ws(tmp_path, host, REMOTE, trust=False)
    address = ws.runner("far").ssh
    assert address is not None
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    sshclient.trust(ws.state_dir, address, impostor)  # what we pinned is not what the host shows
    engine, run_id = await run_once(ws)
    try:
        run = await wait_run_done(engine, run_id)
        step = await first_step(engine, run_id)
        assert run["status"] == "failed" and step["status"] == "failed"
        assert "HOST KEY CHANGED" in step["error"]
        assert sshclient.fingerprint(impostor) in step["error"]
        assert sshclient.fingerprint(host.host_key) in step["error"]
    finally:
        await engine.aclose()
    assert host.commands == []


async def test_untrusted_host_is_refused(tmp_path: Path, host: Host) -> None:
    ws = remote_ws(tmp_path, host, REMOTE, trust=False)
    engine, run_id = await run_once(ws)
    try:
        run = await wait_run_done(engine, run_id)
        step = await first_step(engine, run_id)
        assert run["status"] == "failed"
        assert "not trusted yet" in step["error"] and "ahead runner trust" in step["error"]
        assert any("not trusted yet" in line for line in await log_of(engine, run_id))
    finally:
        await engine.aclose()
    assert host.commands == []


async def test_runner_trust_shows_the_fingerprint_and_pins_it(
    tmp_path: Path, host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = remote_ws(tmp_path, host, REMOTE, trust=False)
    address = ws.runner("far").ssh
    assert address is not None
    expected = sshclient.fingerprint(host.host_key)
    base = ["--workspace", str(ws.root), "runner", "trust", "far"]

    def ahead(*extra: str) -> int:
        return cli.main([*base, *extra])

    monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
    assert await asyncio.to_thread(ahead) == cli.FAILED  # a person said no
    assert sshclient.pinned(ws.state_dir, address) == []
    assert await asyncio.to_thread(ahead, "--fingerprint", "SHA256:not-it") == cli.FAILED
    assert sshclient.pinned(ws.state_dir, address) == []
    out = capsys.readouterr()
    assert expected in out.out and "refusing" in out.err

    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    assert await asyncio.to_thread(ahead) == cli.OK
    out = capsys.readouterr().out
    assert expected in out and "trusted: pinned" in out
    assert sshclient.public_key_line(ws.state_dir) in out
    assert [sshclient.fingerprint(k) for k in sshclient.pinned(ws.state_dir, address)] == [expected]
    assert await asyncio.to_thread(ahead, "--fingerprint", expected) == cli.OK
    assert "already trusted" in capsys.readouterr().out

    # pinned for real: the engine now runs the remote stage
    engine, run_id = await run_once(ws)
    try:
        assert (await wait_run_done(engine, run_id))["status"] == "succeeded"
        audit = await query(engine, "SELECT action, subject FROM audit WHERE action = 'host.trust'")
        assert [(a["action"], a["subject"]) for a in audit] == [("host.trust", "runner/far")]
    finally:
        await engine.aclose()


def test_runner_config_errors_name_line_field_and_fix(tmp_path: Path) -> None:
    from core import workspace

    head = "repos: []\nenvironments: [dev]\nrunners:\n"
    cases = [
        ("  - name: far\n    ssh: not an address\n", 5, "runners[0].ssh", "user@host[:port]"),
        (
            "  - name: far\n    ssh: u@h\n    workdir: relative/dir\n",
            6,
            "runners[0].workdir",
            "absolute",
        ),
        ("  - name: local\n    ssh: u@h\n", 5, "runners[0].ssh", "either local or ssh"),
        ("  - name: far\n    workdir: /x\n", 5, "runners[0].workdir", "only a remote runner"),
        (
            "  - name: far\n    ssh: u@h\n  - name: far\n    ssh: u@h\n",
            6,
            "runners[1].name",
            "twice",
        ),
    ]
    for text, line, where, words in cases:
        with pytest.raises(ConfigError) as info:
            workspace.parse(head + text, tmp_path / "ahead.yml")
        assert (info.value.line, info.value.field) == (line, where), info.value
        assert words in str(info.value) and info.value.fix
    ws = workspace.parse(
        head + "  - name: far\n    ssh: ci@10.0.0.5:2222\n", tmp_path / "ahead.yml"
    )
    far = ws.runner("far")
    assert (far.kind, str(far.ssh), far.workdir) == ("ssh", "ci@10.0.0.5:2222", "~/.ahead-runner")
    assert ws.runner_names == ("local", "far")


def test_pipeline_refuses_an_unknown_runner_with_a_suggestion() -> None:
    text = "stages:\n  - name: a\n    runner: fra\n    steps: [x]\n"
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, "app@abc1234:.ahead/pipeline.yml", ("dev",), runners=("local", "far"))
    assert (info.value.line, info.value.field) == (3, "stages[0].runner")
    assert 'did you mean "far"?' in str(info.value)
    assert (
        parse_pipeline(text.replace("fra", "far"), "p", ("dev",), runners=("local", "far"))
        .stages[0]
        .runner
        == "far"
    )


def test_request_escapes_every_shell_character() -> None:
    hostile = "$(id) `id` ; | & > < ' \" \\ \n * ? [ ] ~ # !"
    encoded = escape(hostile)
    assert set(encoded) <= set(
        "\\0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_./:=+@%,-"
    )
    assert request(["sh", "-c", hostile], {"X": hostile}).count(b"\n") == 5
    with pytest.raises(ValueError):
        request([], {"BAD NAME": "x"})


async def test_a_request_cut_short_runs_nothing(tmp_path: Path, host: Host) -> None:
    ws = remote_ws(tmp_path, host, REMOTE)
    canary = tmp_path / "ran"
    full = request(["touch", str(canary)], {"A": "1"})
    address = ws.runner("far").ssh
    assert address is not None
    async with await sshclient.connect(ws.state_dir, address) as conn:
        command = shlex.join(["sh", "-c", STEP, "ahead-step", str(host.home), "1"])
        done = await conn.run(
            command, input=full[: full.rindex(b"G -")], encoding=None, check=False
        )
        assert done.exit_status == 125 and b"incomplete request" in as_bytes(done.stdout)
        assert not canary.exists()
        process = await conn.create_process(command, encoding=None)
        process.stdin.write(full)  # stdin stays open while the step runs, as the engine keeps it
        done = await process.wait(check=False, timeout=10)
        assert done.exit_status == 0 and canary.exists()


SECRET = "s3cr3t-remote-Value/+="


async def test_remote_step_gets_its_secret_masked_and_never_in_a_command(
    tmp_path: Path, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMOTE_TOKEN_SOURCE", SECRET)
    pipeline = (
        "stages:\n  - name: s\n    runner: far\n    steps:\n"
        '      - run: echo "raw=$TOKEN"; printf %s "$TOKEN" | base64; echo "len=${#TOKEN}"\n'
        "        secrets: [TOKEN]\n"
    )
    ws = make_workspace(
        tmp_path / "ws",
        {"app": pipeline},
        extra=f"runners:\n  - name: far\n    ssh: {host.address()}\n"
        "secrets:\n  TOKEN: {env: REMOTE_TOKEN_SOURCE}\n",
    )
    address = ws.runner("far").ssh
    assert address is not None
    sshclient.trust(ws.state_dir, address, host.host_key)
    engine, run_id = await run_once(ws)
    try:
        run = await wait_run_done(engine, run_id)
        lines = await log_of(engine, run_id)
        assert run["status"] == "succeeded", (run, lines)
        assert lines == ["raw=***", "***", f"len={len(SECRET)}"], lines
    finally:
        await engine.aclose()
    assert not any(SECRET in c for c in host.commands)


async def test_a_remote_artifact_is_streamed_and_stopped_past_the_cap(
    tmp_path: Path, host: Host
) -> None:
    pipeline = (
        "stages:\n  - name: s\n    runner: far\n    steps:\n"
        "      - run: mkdir -p out && head -c 700000 /dev/zero > out/fits\n        artifact: out/fits\n"
        "      - run: head -c 3000000 /dev/zero > out/big\n        artifact: out/big\n"
    )
    ws = remote_ws(tmp_path, host, pipeline)
    ws.file.write_text(
        ws.file.read_text().replace(
            "  poll_interval: 0.2", "  poll_interval: 0.2\n  artifact_max_bytes: 1MiB"
        )
    )
    ws = workspace.read(ws.file)
    engine, run_id = await run_once(ws)
    try:
        run = await wait_run_done(engine, run_id)
        lines = await log_of(engine, run_id)
        assert run["status"] == "failed", (run, lines)
        assert (
            lines[-1]
            == "[ahead] artifact out/big is over the 1.0 MiB cap (settings.artifact_max_bytes)"
        )
        kept = await query(engine, "SELECT path, size FROM artifacts WHERE run_id = ?", (run_id,))
        assert [(a["path"], a["size"]) for a in kept] == [("out/fits", 700000)]
    finally:
        await engine.aclose()
