"""The real `ahead` command on a real pseudo-terminal, read back through a VT emulator (pyte):
what an operator over SSH or in a terminal actually sees."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyte

from core.workspace import Workspace

ROOT = Path(__file__).parents[2]


class Terminal:
    def __init__(
        self, argv: list[str], cols: int = 100, rows: int = 30, env: dict[str, str] | None = None
    ) -> None:
        import fcntl
        import struct
        import termios

        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={
                **os.environ,
                "TERM": "xterm-256color",
                "COLUMNS": str(cols),
                "LINES": str(rows),
                **(env or {}),
            },
        )
        os.close(slave)
        self.master = master

    def pump(self, seconds: float = 0.1) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if needle in self.text():
                return self.text()
        raise AssertionError(f"{needle!r} never appeared; screen:\n{self.text()}")

    def wait_gone(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if needle not in self.text():
                return self.text()
        raise AssertionError(f"{needle!r} never went away; screen:\n{self.text()}")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        os.close(self.master)


def test_real_ahead_on_a_pty(ws: Workspace) -> None:
    term = Terminal(
        [sys.executable, "-m", "tui.launch", "--workspace", str(ws.root)],
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        term.wait_for("engine: here")
        screen = term.wait_for("PROD")  # the table shows once loaded
        assert "REPO" in screen and "DEV" in screen
        term.send("t")
        term.wait_for("Trigger (y)")
        term.send("y")
        term.wait_for("#1 ✓✓")
        term.send("r")
        screen = term.wait_for("✓ succeeded")  # the stage strip can finish before the run row
        assert "TRIGGER" in screen and "manual" in screen
        term.send("\r")
        screen = term.wait_for("run #1")
        assert "deploying to dev" in term.wait_for("deploying to dev")
        term.send("?")
        term.wait_for("Keys · Run")
        term.send("\x1b")
        # q only once the escape was read on its own: read together, they would be alt+q
        term.wait_gone("Keys · Run")
        term.send("q")
        deadline = time.monotonic() + 15
        while term.proc.poll() is None and time.monotonic() < deadline:
            term.pump(0.1)
        assert term.proc.returncode == 0
    finally:
        term.close()
    # the embedded engine released the workspace on the way out
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert "engine: not running" in done.stdout


def test_without_a_terminal_ahead_prints_help_instead_of_hanging(ws: Workspace) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.launch", "--workspace", str(ws.root)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 2 and "usage: ahead" in done.stdout
