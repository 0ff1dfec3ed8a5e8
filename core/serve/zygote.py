"""Starting console processes fast: the client side of the pre-imported fork server.

The server never forks itself (it runs an event loop, threads and asyncssh). It starts one
small single-threaded "zygote" process (a program the UI package provides, given as argv) that
imports the console once and forks a child per session; the child inherits the imported pages
copy-on-write and starts in tens of milliseconds instead of ~200 ms. Per session the server
sends one message on a private socketpair: a JSON request (workspace, operator, presence id,
terminal) and the PTY's slave end as an SCM_RIGHTS fd; the zygote answers with the child's pid.
The operator therefore reaches the child only through this socket, from the server, never from
anything the SSH client sets. Children are watched through pidfds (the zygote reaps them).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from typing import Any

from core.aio import wait_at_most

log = logging.getLogger("ahead.serve")
REQUEST_MAX = 65536


class Child:
    """A console process forked by the zygote, watched through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = asyncio.Event()
        self._pidfd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self.exited.set()

    def signal(self, sig: int) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    async def stop(self, grace: float = 1.0) -> None:
        """Let it go after its terminal closed (SIGHUP), then SIGTERM, then SIGKILL."""
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self.signal(sig)
            if await wait_at_most(self.exited.wait(), grace):
                return
        log.warning("console process %s did not exit", self.pid)


class Zygote:
    """Owns the fork server process; `spawn` is serialised (one request in flight)."""

    def __init__(self, argv: list[str], ahead_yml: str) -> None:
        self.argv = argv
        self.ahead_yml = ahead_yml  # the zygote warms a console up on it before forking
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                str(theirs.fileno()),
                self.ahead_yml,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours

    async def spawn(self, request: dict[str, Any], slave_fd: int) -> Child:
        """Fork a console for `request` on the PTY `slave_fd`; restarts a dead zygote once."""
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                await self._restart()
            try:
                return await self._spawn(request, slave_fd)
            except (OSError, ValueError, KeyError):
                log.warning("the console zygote did not answer; starting it again")
                await self._restart()
                return await self._spawn(request, slave_fd)

    async def _spawn(self, request: dict[str, Any], slave_fd: int) -> Child:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        self._sock.sendmsg(
            [json.dumps(request).encode()],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [slave_fd]))],
        )
        async with asyncio.timeout(10):
            reply = await loop.sock_recv(self._sock, REQUEST_MAX)
        return Child(int(json.loads(reply)["pid"]))

    async def _restart(self) -> None:
        await self.aclose()
        await self.start()

    async def aclose(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the zygote reads EOF and exits
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if not await wait_at_most(proc.wait(), 2.0):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
