"""A process on a real pseudo-terminal, read by a thread: what a terminal emulator would see.

The reader thread drains the pty as fast as the process writes (so it never blocks on a full
pty buffer), stamps every chunk with `time.monotonic()` (one clock for every process on the
machine), optionally feeds a pyte screen, and answers two kinds of waits:

- `wait_screen(predicate)`: the first moment the emulated screen satisfies `predicate`;
- `wait_bytes(needle, after)`: the first moment `needle` appears in the output written after
  byte offset `after` (cheap enough to keep up with a log flood, where pyte would not).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable

import pyte

Predicate = Callable[[list[str]], bool]


class PtyProcess:
    def __init__(
        self,
        argv: list[str],
        *,
        cols: int = 120,
        rows: int = 40,
        env: dict[str, str] | None = None,
        screen: bool = True,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.master = master
        self.screen = pyte.Screen(cols, rows) if screen else None
        self._stream = pyte.ByteStream(self.screen) if self.screen is not None else None
        self._cond = threading.Condition()
        self._buf = bytearray()  # recent output, for wait_bytes
        self._buf_start = 0  # absolute offset of _buf[0]
        self.total = 0  # bytes read so far
        self.first_output_at: float | None = None
        self.closed = False
        self._screen_waits: list[tuple[Predicate, list[float]]] = []
        full_env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLUMNS": str(cols),
            "LINES": str(rows),
            **(env or {}),
        }
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=full_env,
            pass_fds=pass_fds,
        )
        os.close(slave)
        self._thread = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._thread.start()

    # -- reading ---------------------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            now = time.monotonic()
            with self._cond:
                if not data:
                    self.closed = True
                    self._cond.notify_all()
                    return
                if self.first_output_at is None:
                    self.first_output_at = now
                self.total += len(data)
                self._buf += data
                if len(self._buf) > 4 << 20:  # keep the last 1 MiB
                    drop = len(self._buf) - (1 << 20)
                    del self._buf[:drop]
                    self._buf_start += drop
                if self._stream is not None:
                    self._stream.feed(data)
                    if self._screen_waits:
                        display = self.screen.display if self.screen is not None else []
                        for predicate, result in self._screen_waits:
                            if not result and predicate(display):
                                result.append(now)
                self._cond.notify_all()

    def wait_screen(self, predicate: Predicate, timeout: float = 30.0) -> float | None:
        """When (monotonic) the screen first satisfied `predicate`; None after `timeout`."""
        result: list[float] = []
        with self._cond:
            if self.screen is not None and predicate(self.screen.display):
                return time.monotonic()
            self._screen_waits.append((predicate, result))
            try:
                self._cond.wait_for(lambda: bool(result) or self.closed, timeout)
            finally:
                self._screen_waits.remove((predicate, result))
        return result[0] if result else None

    def watch_screen(self, predicate: Predicate) -> list[float]:
        """Like `wait_screen`, without waiting: the returned list gets the time when it happens."""
        result: list[float] = []
        with self._cond:
            self._screen_waits.append((predicate, result))
        return result

    def wait_bytes(self, needle: bytes, after: int, timeout: float = 10.0) -> float | None:
        """When `needle` first appeared in the output after byte offset `after`."""
        found: list[float] = []
        searched = after

        def look() -> bool:
            nonlocal searched
            start = max(searched - len(needle), after, self._buf_start) - self._buf_start
            if self._buf.find(needle, start) >= 0:
                found.append(time.monotonic())
                return True
            searched = self.total
            return self.closed

        with self._cond:
            self._cond.wait_for(look, timeout)
        return found[0] if found else None

    def stop_screen(self) -> None:
        """Stop emulating the screen (keep reading): pyte cannot keep up with a log flood."""
        with self._cond:
            self._stream = None

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.screen.display) if self.screen is not None else ""

    # -- writing and ending ------------------------------------------------------------------------

    def send(self, data: bytes) -> float:
        """Write keys to the terminal; returns when (monotonic) they were written."""
        os.write(self.master, data)
        return time.monotonic()

    def finish(self, quit_keys: bytes | None = b"q", timeout: float = 15.0) -> int | None:
        """Quit with `quit_keys` and wait; kill the process group if it does not exit."""
        if quit_keys and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send(quit_keys)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return self.proc.returncode
