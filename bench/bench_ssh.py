"""The console over SSH (`ahead serve`), each measurement beside a same-run baseline.

The server is the real `ahead serve --listen 127.0.0.1:0` in its own process (engine, SSH
server, console zygote), on a small workspace of its own; clients are asyncssh in this process,
each console read back through pyte, as an operator's terminal would.

1. Connect → first frame: from `asyncssh.connect` to the overview showing the repo row, per
   fresh connection; against the same connection, authentication and session whose answer is
   the server's one-line usage text (no console): the SSH cost alone.
2. Memory per extra session: private memory (Private_Clean + Private_Dirty of smaps_rollup) of
   each console process with 10 open, against the resident size of the zygote they are forked
   from (about what a plainly spawned console would cost).
3. Key → screen with 10 sessions open while a run streams its log (50 lines/s): the nine
   other consoles on the overview, then all following the log; the tenth switches between the
   overview and the runs list (`r` / `o`), timed from the key leaving the client to the new
   screen in pyte; against the same keys with one session and nothing running. Also the CPU
   each console process uses meanwhile.

    .venv/bin/python bench/bench_ssh.py [--connects 15] [--keys 30]

Writes bench/results/bench_ssh.json; `bench/run_all.py` renders docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import fixtures
import pyte
from common import percentile, print_section, row, summary, write_results

from core.serve.keys import generate_key_pair, host_key_path
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import read as read_workspace

Section = dict[str, Any]
AHEAD = str(Path(sys.executable).with_name("ahead"))
COLS, ROWS = 120, 40
STREAM = (
    "import sys, time\n"
    "for i in range(60000):\n"
    "    print(f'line {{i}} of a step that streams its log', flush=True)\n"
    "    time.sleep({pause})\n"
)


def make_workspace(root: Path, rate: float) -> tuple[Path, dict[str, Path]]:
    """One repo whose pipeline streams `rate` log lines a second; operators op0..op9 with a key
    each."""
    repo = root / "repos" / "stream"
    repo.mkdir(parents=True)
    (repo / ".ahead").mkdir()
    (repo / "stream.py").write_text(STREAM.format(pause=1 / rate))
    (repo / ".ahead" / "pipeline.yml").write_text(
        "stages:\n  - name: stream\n    steps:\n      - run: python3 stream.py\n"
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "stream"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    keys: dict[str, Path] = {}
    operators = ""
    for i in range(10):
        name = f"op{i}"
        public = generate_key_pair(root / "keys" / name, name)
        keys[name] = root / "keys" / name
        operators += f'  - name: {name}\n    roles: [operator]\n    keys: ["{public}"]\n'
    (root / "ahead.yml").write_text(
        "repos:\n  - name: stream\n    path: repos/stream\nenvironments: [dev]\n"
        f"operators:\n{operators}settings:\n  max_parallel_runs: 10\n"
    )
    return root, keys


class Server:
    """`ahead serve` in its own process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.host_key: asyncssh.SSHKey | None = None

    async def __aenter__(self) -> Server:
        self.proc = await asyncio.create_subprocess_exec(
            AHEAD,
            "--workspace",
            str(self.root),
            "serve",
            "--listen",
            "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        self.port = int(line.split("ssh -p ")[1].split()[0])
        key = asyncssh.read_private_key(str(host_key_path(self.root / ".ahead")))
        self.host_key = key.convert_to_public()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 30)

    async def connect(self, user: str, key: Path) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            self.port,
            username=user,
            client_keys=[str(key)],
            agent_path=None,
            config=None,
            known_hosts=([self.host_key], [], []),
        )


class Term(asyncssh.SSHClientSession[bytes]):
    """A client terminal: pyte when `render`, else bytes are read and dropped."""

    def __init__(self, render: bool = True) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.render = render
        self.changed = asyncio.Event()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.render:
            self.stream.feed(data)
            self.changed.set()

    def text(self) -> str:
        return "\n".join(self.screen.display)

    async def wait_for(self, needle: str, timeout: float = 20.0, gone: bool = False) -> None:
        try:
            async with asyncio.timeout(timeout):
                while (needle in self.text()) == gone:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{needle!r} {'still' if gone else 'not'} on screen:\n{self.text()}"
            ) from None


async def open_console(
    server: Server, user: str, key: Path, render: bool = True
) -> tuple[asyncssh.SSHClientConnection, Any, Term]:
    conn = await server.connect(user, key)
    chan, term = await conn.create_session(
        lambda: Term(render), term_type="xterm-256color", term_size=(COLS, ROWS), encoding=None
    )
    return conn, chan, term


# -- 1. connect to first frame -----------------------------------------------------------------------


async def first_frames(
    server: Server, keys: dict[str, Path], n: int
) -> tuple[list[float], list[float]]:
    consoles, baseline = [], []
    for i in range(n + 1):  # the first of each is a warm-up
        start = time.perf_counter()
        conn, _, term = await open_console(server, "op0", keys["op0"])
        await term.wait_for("stream ")
        took = (time.perf_counter() - start) * 1000
        conn.close()
        await conn.wait_closed()
        start = time.perf_counter()
        async with await server.connect("op1", keys["op1"]) as plain:
            result = await plain.run()
            assert result.exit_status == 2
        plain_took = (time.perf_counter() - start) * 1000
        if i:
            consoles.append(took)
            baseline.append(plain_took)
        await asyncio.sleep(0.2)
    return consoles, baseline


def bench_first_frame(values: list[float], baseline: list[float]) -> Section:
    p50, base = statistics.median(values), statistics.median(baseline)
    return {
        "title": "SSH: connect → first frame of the console",
        "rows": [
            row(
                "connect, authenticate, open a PTY session → overview on screen (p50)",
                p50,
                "ms",
                baseline=base,
                baseline_label="connect, authenticate, session answered without a console",
                max_value=300,
                target="p50 < 300 ms (SSH issue)",
                stats=summary(values),
                baseline_stats=summary(baseline),
            ),
            row("same, p95", percentile(values, 95), "ms"),
        ],
        "notes": [
            "Fresh connection each time from an asyncssh client in another process than "
            "`ahead serve`; the console is forked from the pre-imported zygote."
        ],
    }


# -- 2. memory -------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def memory_kb(pid: int, fields: tuple[str, ...]) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            total += int(rest.split()[0])
    return total


def bench_memory(serve_pid: int) -> Section:
    (zygote,) = [
        p for p in children(serve_pid) if b"tui.zygote" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    consoles = children(zygote)
    private = [memory_kb(p, ("Private_Clean", "Private_Dirty")) / 1024 for p in consoles]
    rss_zygote = memory_kb(zygote, ("Rss",)) / 1024
    per = statistics.mean(private)
    return {
        "title": "SSH: memory per extra session",
        "rows": [
            row(
                f"private memory per console process ({len(consoles)} open)",
                per,
                "MB",
                baseline=rss_zygote,
                baseline_label="resident size of the zygote (the whole console)",
                max_value=25,
                target="≤ 25 MB (a plainly spawned console measured ~26 MB)",
                stats=summary(private),
            ),
        ],
        "notes": [
            "Forked from the zygote, a console shares the imported code and data pages "
            "copy-on-write; what it writes after the fork is its own."
        ],
    }


# -- 3. key latency -------------------------------------------------------------------------------


async def key_latency(term: Term, chan: Any, n: int) -> list[float]:
    """Time `r` (runs list) and `o` (back to the overview), each until the screen shows it."""
    times = []
    await term.wait_for("stream ")
    for i in range(n + 2):
        for key, needle, gone in ((b"r", "TRIGGER", False), (b"o", "TRIGGER", True)):
            start = time.perf_counter()
            chan.write(key)
            await term.wait_for(needle, gone=gone)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.05)
    return times


@contextlib.asynccontextmanager
async def streaming(root: Path) -> AsyncIterator[int]:
    ws = read_workspace(root / "ahead.yml")
    with Store(ws.db_path) as store:
        run_id = Services(ws, store).trigger("stream", Actor("op0", ("operator",)))
    yield run_id
    with Store(ws.db_path) as store:
        Services(ws, store).cancel(run_id, Actor("op0", ("operator",)))


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def console_cpu(serve_pid: int, seconds: float = 3.0) -> float:
    """Mean CPU of each console process over `seconds`, in % of a core."""
    (zygote,) = [
        p for p in children(serve_pid) if b"tui.zygote" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    consoles = children(zygote)
    before = cpu_seconds(consoles)
    await asyncio.sleep(seconds)
    return (cpu_seconds(consoles) - before) / seconds / len(consoles) * 100


async def bench_keys(
    server: Server, keys: dict[str, Path], n: int, rate: float
) -> tuple[Section, Section]:
    """Idle, then 10 consoles while a run streams its log: the nine others first on the
    overview (live run states), then following the log on the run screen."""
    assert server.proc is not None
    conn, chan, term = await open_console(server, "op0", keys["op0"])
    idle = await key_latency(term, chan, n)
    others = [
        await open_console(server, f"op{i}", keys[f"op{i}"], render=(i == 1)) for i in range(1, 10)
    ]
    watcher = others[0][2]
    await watcher.wait_for("stream ")
    async with streaming(server.root) as run_id:
        await asyncio.sleep(2.0)
        memory = bench_memory(server.proc.pid)
        cpu_overview = await console_cpu(server.proc.pid)
        on_overview = await key_latency(term, chan, n)
        for _, other_chan, _ in others:  # now every other console follows the run's log
            other_chan.write(b"r")
        await watcher.wait_for(f"#{run_id}")
        await asyncio.sleep(1.0)  # an enter right as the list first shows can be lost
        for _, other_chan, _ in others:
            other_chan.write(b"\r")
        await watcher.wait_for("line ")
        await asyncio.sleep(1.0)
        cpu_log = await console_cpu(server.proc.pid)
        on_log = await key_latency(term, chan, max(n // 3, 5))
    for other_conn, _, _ in others:
        other_conn.close()
    conn.close()
    base50, base95 = statistics.median(idle), percentile(idle, 95)
    label = "same keys, one session, nothing running"
    section = {
        "title": "SSH: key → screen with 10 sessions open while a run streams its log",
        "rows": [
            row(
                "r / o → new screen, 9 other consoles on the overview (p50)",
                statistics.median(on_overview),
                "ms",
                baseline=base50,
                baseline_label=label,
                stats=summary(on_overview),
                baseline_stats=summary(idle),
            ),
            row(
                "same, p95",
                percentile(on_overview, 95),
                "ms",
                baseline=base95,
                baseline_label="idle p95",
                max_value=200,
                target="p95 ≤ 200 ms",
            ),
            row("CPU of each console process meanwhile (mean of 10)", cpu_overview, "% of a core"),
            row(
                "r / o → new screen, 9 other consoles following the log (p50)",
                statistics.median(on_log),
                "ms",
                baseline=base50,
                baseline_label=label,
                stats=summary(on_log),
            ),
            row(
                "same, p95",
                percentile(on_log, 95),
                "ms",
                baseline=base95,
                baseline_label="idle p95",
            ),
            row("CPU of each console process meanwhile (mean of 10)", cpu_log, "% of a core"),
        ],
        "notes": [
            f"The step prints {rate:g} lines/s. One of the nine other consoles is rendered "
            "through pyte, eight are read and dropped; the engine, the SSH server and the "
            "ten console processes share the machine's cores. Keys: `r` (runs list) and "
            "`o` (back to the overview), each timed until the client's screen shows it."
        ],
    }
    return section, memory


async def run(args: argparse.Namespace) -> list[Section]:
    scratch = Path(tempfile.mkdtemp(prefix="ahead-bench-ssh-"))
    try:
        root, keys = make_workspace(scratch / "ws", args.rate)
        async with Server(root) as server:
            values, baseline = await first_frames(server, keys, args.connects)
            sections = [bench_first_frame(values, baseline)]
            print_section(sections[-1])
            latency, memory = await bench_keys(server, keys, args.keys, args.rate)
            sections += [memory, latency]
            print_section(memory)
            print_section(latency)
        return sections
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="SSH console benchmarks with same-run baselines.")
    parser.add_argument(
        "--root", type=Path, default=fixtures.DEFAULT_ROOT, help="(unused: own workspace)"
    )
    parser.add_argument("--connects", type=int, default=15)
    parser.add_argument("--keys", type=int, default=30, help="r/o pairs per condition")
    parser.add_argument(
        "--rate", type=float, default=50, help="log lines a second of the streaming step"
    )
    args = parser.parse_args()
    started = time.monotonic()
    load_before = list(os.getloadavg())
    sections = asyncio.run(run(args))
    path = write_results("bench_ssh", sections, started, load_before)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
