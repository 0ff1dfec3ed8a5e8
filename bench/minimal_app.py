"""Minimal Textual apps: the same-run baselines of the console benchmarks (bench_console.py).

    python bench/minimal_app.py start           # a Static and a Log with a few lines (T6)
    python bench/minimal_app.py flood N         # Log.write_lines of N lines in 1,000-line chunks

($AHEAD_BENCH_FLOOD_CHUNK and $AHEAD_BENCH_FLOOD_PAUSE change the chunk size and the pause
between chunks, 1,000 lines and 0 s by default, for what-if runs.)

Started exactly like the console (a fresh interpreter on the same pty), so the difference is
what the console does beyond Textual itself. `flood` shows a status line that `f` toggles
between "following" and "paused (f to follow)", as the console's run screen does, and reports
every `Log.write_lines` call (monotonic time, lines), when the follow action ran and the
next frame after it, on the file descriptor named by $AHEAD_BENCH_PROBE_FD (see
console_probe.py for the format). Imports nothing from the project.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import Log, Static

READY_TEXT = "minimal app ready"
CHUNK = int(os.environ.get("AHEAD_BENCH_FLOOD_CHUNK", "1000"))
PAUSE = float(os.environ.get("AHEAD_BENCH_FLOOD_PAUSE", "0"))  # seconds between chunks


class StartApp(App[None]):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Static(READY_TEXT)
        yield Log()

    def on_mount(self) -> None:
        self.query_one(Log).write_lines([f"line {i}" for i in range(20)])


class FloodApp(App[None]):
    BINDINGS = [("q", "quit", "Quit"), ("f", "follow", "Follow")]
    CSS = "Log { height: 1fr; } #status { height: 1; }"

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines
        self.follow = True
        self.written = 0
        self.action_pending = False
        fd = os.environ.get("AHEAD_BENCH_PROBE_FD")
        self.probe_fd = int(fd) if fd else None

    def compose(self) -> ComposeResult:
        yield Static(READY_TEXT, id="title")
        yield Log(max_lines=50_000)
        yield Static("", id="status")

    def on_mount(self) -> None:
        self.update_status()
        self.run_worker(self.flood(), name="flood")

    def report(self, text: str) -> None:
        if self.probe_fd is not None:
            os.write(self.probe_fd, text.encode())

    async def flood(self) -> None:
        await asyncio.sleep(0.5)  # let the bench see the first frame and get ready
        log = self.query_one(Log)
        self.report(f"go {time.monotonic():.6f}\n")
        for start in range(0, self.lines, CHUNK):
            batch = [
                f"step output line {i:07d} lorem ipsum dolor"
                for i in range(start, min(start + CHUNK, self.lines))
            ]
            log.write_lines(batch, scroll_end=self.follow)
            self.written += len(batch)
            self.report(f"w {time.monotonic():.6f} {len(batch)}\n")
            self.update_status()
            await asyncio.sleep(PAUSE)  # let input and the screen update in between chunks
        self.report(f"done {time.monotonic():.6f}\n")

    def update_status(self) -> None:
        state = "following" if self.follow else "paused (f to follow)"
        self.query_one("#status", Static).update(f"flood · {self.written} lines · {state}")

    def _display(self, screen: Any, renderable: Any) -> None:  # timed like the console's
        super()._display(screen, renderable)
        if renderable is not None and self.action_pending:
            self.action_pending = False
            self.report(f"f {time.monotonic():.6f}\n")

    def action_follow(self) -> None:
        self.report(f"k {time.monotonic():.6f}\n")
        self.action_pending = True
        self.follow = not self.follow
        log = self.query_one(Log)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self.update_status()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "start"
    if mode == "start":
        StartApp().run()
    elif mode == "flood":
        FloodApp(int(sys.argv[2])).run()
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
