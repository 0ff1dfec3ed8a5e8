"""Run one step as a subprocess in its own process group and stream its output.

The command is an argv list (a string `run:` is `sh -c TEXT`, with TEXT from the pipeline file,
never from commit metadata); commit metadata reaches the step only as environment variables.
Output is read in 64 KiB chunks (a readline loop is ~11x slower), split into lines and handed
to a sink in batches. Timeout and cancel send SIGTERM to the whole group, wait a grace period,
then SIGKILL. Secrets are masked in the batcher (core.secrets), before any sink sees a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from core.aio import wait_at_most
from core.secrets import Masker

MAX_LINE = 16 * 1024
BATCH_LINES = 1000
BATCH_SECONDS = 0.05

LogSink = Callable[[list[tuple[int, float, str]]], Awaitable[None]]


@dataclass
class StepResult:
    status: str  # succeeded, failed, cancelled
    exit_code: int | None
    error: str | None = None


class LineBatcher:
    """Turns output chunks into numbered lines, flushed to `sink` every 1,000 lines or 50 ms.

    One flusher task at a time keeps batches in order; the reader never waits on the store
    unless a whole batch is still being written.
    """

    def __init__(self, sink: LogSink, masker: Masker | None = None) -> None:
        self._sink = sink
        self._masker = masker if masker else None
        self._partial = b""
        self._pending: list[tuple[int, float, str]] = []
        self._seq = 0
        self._flusher: asyncio.Task[None] | None = None
        self._first_at = 0.0

    def feed(self, chunk: bytes) -> None:
        """Split output into lines. Secrets are masked in whole lines, so a value split between
        two reads is still found; a line longer than MAX_LINE is cut, holding back the bytes
        a secret could continue from."""
        data = self._partial + chunk
        parts = data.split(b"\n")
        self._partial = parts.pop()
        masker = self._masker
        if masker is not None:
            parts = [masker.mask(part) for part in parts]
        if len(self._partial) > MAX_LINE:
            if masker is None:
                parts.append(self._partial)
                self._partial = b""
            else:
                masked = masker.mask(self._partial)
                cut = max(len(masked) - masker.tail, 0)
                parts.append(masked[:cut])
                self._partial = masked[cut:]
        now = time.time()
        if parts and not self._pending:
            self._first_at = now
        for part in parts:
            for start in range(0, max(len(part), 1), MAX_LINE):
                text = part[start : start + MAX_LINE].rstrip(b"\r").decode("utf-8", "replace")
                self._pending.append((self._seq, now, text))
                self._seq += 1

    def note(self, text: str) -> None:
        """A line from the engine itself (e.g. why a step was stopped)."""
        if self._masker is not None:
            text = self._masker.mask_text(text)
        self._pending.append((self._seq, time.time(), text))
        self._seq += 1

    def due(self) -> bool:
        return len(self._pending) >= BATCH_LINES or (
            bool(self._pending) and time.time() - self._first_at >= BATCH_SECONDS
        )

    def failure(self) -> BaseException | None:
        """Why the last flush failed (the store cannot be written), or None."""
        flusher = self._flusher
        if flusher is None or not flusher.done() or flusher.cancelled():
            return None
        return flusher.exception()

    async def maybe_flush(self) -> None:
        if not self.due():
            return
        if (failure := self.failure()) is not None:
            # raise once, never start more flushers chained to a failed one: each of them would
            # re-raise the same exception and grow its traceback without bound
            raise failure
        if self._flusher is not None and not self._flusher.done():
            if len(self._pending) < BATCH_LINES * 10:
                return  # let the store catch up; keep reading
            await self._flusher
        self._start_flush()

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, []
        previous = self._flusher

        async def flush() -> None:
            if previous is not None:
                await previous
            await self._sink(batch)

        self._flusher = asyncio.ensure_future(flush())

    async def close(self) -> None:
        if (failure := self.failure()) is not None:
            raise failure
        if self._partial:
            last = self._masker.mask(self._partial) if self._masker is not None else self._partial
            self._pending.append(
                (self._seq, time.time(), last.rstrip(b"\r").decode("utf-8", "replace"))
            )
            self._seq += 1
            self._partial = b""
        if self._pending:
            self._start_flush()
        if self._flusher is not None:
            await self._flusher


async def _drain(read: Callable[[int], Awaitable[bytes]]) -> None:
    while await read(65536):
        pass


async def run_step(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    sink: LogSink,
    timeout: float,
    cancel: asyncio.Event,
    grace: float,
    on_start: Callable[[int], Awaitable[None]],
    masker: Masker | None = None,
) -> StepResult:
    """Run `argv` to the end, a timeout or a cancel; every output line goes to `sink`, with
    the secrets of `masker` masked."""
    batcher = LineBatcher(sink, masker)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        batcher.note(f"[ahead] cannot start {argv[0]!r}: {exc.strerror}")
        await batcher.close()
        return StepResult("failed", None, f"cannot start {argv[0]!r}: {exc.strerror}")
    await on_start(proc.pid)
    assert proc.stdout is not None
    outcome: str | None = None
    try:
        outcome = await follow(
            proc.stdout.read, batcher, cancel, timeout, grace, lambda: stop_group(proc, grace)
        )
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            await stop_group(proc, 0)
        await batcher.close()
    if outcome is None:
        kill_group(proc.pid, signal.SIGKILL)  # leftovers the step started and did not wait for
    return result_of(outcome, code, timeout)


async def follow(
    read: Callable[[int], Awaitable[bytes]],
    batcher: LineBatcher,
    cancel: asyncio.Event,
    timeout: float,
    grace: float,
    stop: Callable[[], Awaitable[None]],
) -> str | None:
    """Stream a step's output from `read` into `batcher` until EOF, a cancel or the timeout.

    On a cancel or timeout it notes why in the log, awaits `stop` (which ends the step's process
    group, local or remote) and reads what is left for up to 5 s. Shared by local and remote
    steps. Returns None at EOF, else "cancelled" or "timeout". Does not close the batcher.
    """

    async def pump() -> None:
        while True:
            chunk = await read(65536)
            if not chunk:
                return
            batcher.feed(chunk)
            await batcher.maybe_flush()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(BATCH_SECONDS)
            await batcher.maybe_flush()

    reader = asyncio.ensure_future(pump())
    tick = asyncio.ensure_future(ticker())
    cancelled = asyncio.ensure_future(cancel.wait())
    outcome: str | None = None
    try:
        done, _ = await asyncio.wait(
            {reader, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if reader in done and reader.exception() is not None:
            # the log cannot be stored (a full disk): stop the step rather than let it block on a
            # pipe nobody reads until its timeout; the error goes up from batcher.close() below
            await stop()
            await wait_at_most(_drain(read), 5)  # to EOF, so the pipe transport closes now
        elif reader not in done:
            outcome = "cancelled" if cancelled in done else "timeout"
            reason = (
                "cancel requested" if outcome == "cancelled" else f"timed out after {timeout:.0f}s"
            )
            batcher.note(
                f"[ahead] {reason}: stopping the step (SIGTERM, then SIGKILL after {grace:.0f}s)"
            )
            await stop()
            await wait_at_most(reader, 5)
    finally:
        for task in (reader, tick, cancelled):
            task.cancel()
        if tick.done() and not tick.cancelled():
            tick.exception()  # a failed flush, raised again by batcher.close() below
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    return outcome


def result_of(outcome: str | None, code: int | None, timeout: float) -> StepResult:
    """The step's result from how `follow` ended and the exit code (negative: a signal)."""
    if outcome == "cancelled":
        return StepResult("cancelled", code, "cancelled")
    if outcome == "timeout":
        return StepResult("failed", code, f"timed out after {timeout:.0f}s")
    if code == 0:
        return StepResult("succeeded", 0)
    if code is None:
        return StepResult("failed", None, "ended without an exit status")
    return StepResult(
        "failed", code, f"exited with {code}" if code > 0 else f"killed by signal {-code}"
    )


def kill_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the process group, `grace` seconds to go, then SIGKILL."""
    if kill_group(proc.pid, signal.SIGTERM) and grace > 0:
        await wait_at_most(proc.wait(), grace)
    kill_group(proc.pid, signal.SIGKILL)
    await wait_at_most(proc.wait(), 5)


def kill_leftovers(token: str) -> int:
    """Kill every process whose environment carries this step token (a step of a dead engine).

    Reads /proc (Linux); elsewhere it does nothing. Returns how many were signalled.
    """
    needle = f"AHEAD_STEP_TOKEN={token}".encode()
    killed = 0
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
