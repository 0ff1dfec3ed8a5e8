"""One SSH session channel: the console on its own pseudo-terminal, or a read-only listing.

The console runs as its own process (forked by the zygote) on a fresh PTY: one operator's
console cannot stall the engine or the others. Measured pitfalls, all handled here: the PTY is
set raw and to the client's size before the child starts (else early keys echo as garbage and
the first frame has the wrong size); the child makes it its controlling terminal (setsid +
TIOCSCTTY, in the zygote), so resizes arrive as SIGWINCH and closing the master hangs it up; the
master is non-blocking and read only while the SSH channel can take more (flow control).

A command (`ssh host status --json`), or a session without a PTY, runs only the read-only
listings in LISTINGS, as a subprocess of `core.serve.listing`; anything else is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import shlex
import struct
import sys
import termios
import tty
from typing import TYPE_CHECKING, Any

import asyncssh

from core import presence
from core.aio import wait_at_most
from core.serve.listing import LISTINGS
from core.serve.zygote import Child

if TYPE_CHECKING:
    from core.serve.server import Connection, SSHServer

log = logging.getLogger("ahead.serve")
TERM_NAME = re.compile(r"^[A-Za-z0-9._+-]{1,40}$")
LISTING_TIMEOUT = 60.0
BUSY = b"ahead: too many listings running at once; try again when one has finished\n"
USAGE = (
    "This door gives the console to a terminal (ssh -t), or runs one of: "
    + ", ".join(LISTINGS)
    + " (each takes --json).\r\n"
)


def set_winsize(fd: int, cols: int, rows: int) -> None:
    # struct winsize is rows, cols, xpixel, ypixel: rows first
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(rows, 1), max(cols, 1), 0, 0))


class Session(asyncssh.SSHServerSession[bytes]):
    """A session channel of an authenticated operator."""

    def __init__(
        self, server: SSHServer, operator: str, source: str, connection: Connection | None = None
    ) -> None:
        self.server = server
        self.connection = connection  # counts this channel and its listings against its caps
        self.operator = operator
        self.source = source
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term = "xterm-256color"
        self.size = (80, 24)
        self.has_pty = False
        self.command: str | None = None
        self.master: int | None = None
        self.child: Child | None = None
        self.presence_id: int | None = None
        self._inbuf = bytearray()
        self._reading = False
        self._eof = asyncio.Event()
        self._ending: asyncio.Task[None] | None = None
        self._closed = False

    # -- asyncssh callbacks -------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self.has_pty = True
        if TERM_NAME.match(term_type or ""):
            self.term = term_type
        if term_size[0] and term_size[1]:
            self.size = (term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True  # answered in session_started: a listing, or a refusal with the reason

    def subsystem_requested(self, subsystem: str) -> bool:
        log.info("%s from %s: refused subsystem %r", self.operator, self.source, subsystem[:40])
        return False

    def session_started(self) -> None:
        if self.command is not None:
            self.server.spawn(self._listing(self.command), "ssh-listing")
        elif not self.has_pty:
            self._finish(USAGE.encode(), 2)
        elif self.server.zygote is None:
            self._finish(b"This server has no console installed; use the listings.\r\n", 2)
        elif len(self.server.sessions) >= self.server.options.max_sessions:
            self._finish(b"Too many consoles are open; try again later.\r\n", 1)
        else:
            self.server.sessions.add(self)
            self.server.spawn(self._console_or_apology(), "ssh-console")

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.size = (width, height)
        if self.master is not None:
            set_winsize(self.master, width, height)  # the kernel sends SIGWINCH to the child

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._inbuf += data
        if self.master is not None:
            self._flush_input()

    def eof_received(self) -> bool:
        return True  # the client sent all its input (`ssh host status </dev/null`): answer anyway

    def pause_writing(self) -> None:
        if self._reading and self.master is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    def resume_writing(self) -> None:
        if not self._reading and self.master is not None and not self._eof.is_set():
            asyncio.get_running_loop().add_reader(self.master, self._read_master)
            self._reading = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.channels -= 1  # asyncssh calls this once per channel
        self._closed = True
        self.server.spawn(self.end(), "ssh-session-end")

    def _finish(self, text: bytes, status: int) -> None:
        if self.chan is not None and not self._closed:
            self.chan.write(text)
            self.chan.exit(status)

    # -- the console ---------------------------------------------------------------------------

    async def _console_or_apology(self) -> None:
        try:
            await self._console()
        except Exception:
            log.exception("%s from %s: the console did not start", self.operator, self.source)
            self._finish(b"\r\nThe console could not start; it is logged on the server.\r\n", 1)
            await self.end()

    async def _console(self) -> None:
        self.presence_id = await self.server.db.call(
            presence.open_session, self.server.db.store, self.operator, "ssh", self.source
        )
        master, slave = os.openpty()
        try:
            set_winsize(master, *self.size)
            tty.setraw(slave)  # before the child starts: early keys must not echo
            os.set_blocking(master, False)
            request = {
                "workspace": str(self.server.ws.file),
                "operator": self.operator,
                "presence": self.presence_id,
                "source": self.source,
                "term": self.term,
                "log": str(self.server.ws.settings.state_dir / "serve.log"),
            }
            assert self.server.zygote is not None
            self.child = await self.server.zygote.spawn(request, slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        log.info(
            "%s from %s: console pid %s (%dx%d %s)",
            self.operator,
            self.source,
            self.child.pid,
            *self.size,
            self.term,
        )
        if self._closed:  # the client left while the console was starting
            await self.end()
            return
        asyncio.get_running_loop().add_reader(master, self._read_master)
        self._reading = True
        self._flush_input()
        await self.child.exited.wait()
        if not self._closed:
            await wait_at_most(self._eof.wait(), 1.0)  # relay its last bytes (leave alt screen)
            if self.chan is not None and not self._closed:
                self.chan.exit(0)
        await self.end()

    def _read_master(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the child closed its side of the terminal
            if exc.errno != errno.EIO:
                log.info("console pty read: %s", exc)
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False
            self._eof.set()
            return
        if self.chan is not None and not self._closed:
            self.chan.write(data)

    def _flush_input(self) -> None:
        loop = asyncio.get_running_loop()
        while self._inbuf and self.master is not None:
            try:
                written = os.write(self.master, self._inbuf)
            except BlockingIOError:  # the PTY's input queue is full: go on when it drains
                loop.add_writer(self.master, self._on_writable)
                return
            except OSError:
                self._inbuf.clear()
                return
            del self._inbuf[:written]

    def _on_writable(self) -> None:
        if self.master is not None:
            asyncio.get_running_loop().remove_writer(self.master)
            self._flush_input()

    async def revoke(self, message: str) -> None:
        """The operator was removed: say so on the terminal, then end like a hang-up."""
        if self.chan is not None and not self._closed:
            with contextlib.suppress(Exception):
                self.chan.write(message.encode())
                self.chan.exit(1)
        await self.end()

    def end(self) -> asyncio.Task[None]:
        """Close the PTY (hang-up), stop the child, drop the presence row. Idempotent."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end())
        return self._ending

    async def _end(self) -> None:
        self._closed = True
        self._eof.set()
        if self.master is not None:
            loop = asyncio.get_running_loop()
            if self._reading:
                loop.remove_reader(self.master)
            loop.remove_writer(self.master)
            os.close(self.master)  # SIGHUP to the console's session
            self.master = None
        if self.child is not None:
            await self.child.stop()
        if self.chan is not None:
            with contextlib.suppress(Exception):
                self.chan.close()
        if self.presence_id is not None:
            with contextlib.suppress(Exception):
                await self.server.db.call(
                    presence.close_session, self.server.db.store, self.presence_id
                )
            self.presence_id = None
        self.server.sessions.discard(self)

    # -- listings ------------------------------------------------------------------------------

    async def _listing(self, command: str) -> None:
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        if not argv or argv[0] not in LISTINGS:
            self._finish(USAGE.encode(), 2)
            return
        conn, options = self.connection, self.server.options
        if (
            conn is not None
            and conn.listings >= options.max_listings_per_connection
            or self.server.listings >= options.max_listings
        ):
            self.server.refusals.refused(
                "listings",
                "%s from %s: refused a listing: %d running on the connection, %d in all",
                self.operator,
                self.source,
                conn.listings if conn else 0,
                self.server.listings,
            )
            self._finish(BUSY, 1)
            return
        self.server.listings += 1
        if conn is not None:
            conn.listings += 1
        try:
            await self._run_listing(argv)
        finally:
            self.server.listings -= 1
            if conn is not None:
                conn.listings -= 1

    async def _run_listing(self, argv: list[str]) -> None:
        log.info("%s from %s: listing %s", self.operator, self.source, shlex.join(argv)[:200])
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.serve.listing",
            str(self.server.ws.file),
            self.operator,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            result = await wait_at_most(proc.communicate(), LISTING_TIMEOUT)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.chan is None or self._closed:
            return
        if result is None:
            self._finish(b"ahead: the listing took too long\n", 1)
            return
        out, err = result
        newline = b"\r\n" if self.has_pty else b"\n"
        self.chan.write(out.replace(b"\n", newline))
        if err:
            self.chan.write_stderr(err.replace(b"\n", newline))
        self.chan.exit(
            proc.returncode if proc.returncode is not None and proc.returncode >= 0 else 1
        )
