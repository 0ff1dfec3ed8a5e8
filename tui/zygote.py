"""The fork server `ahead serve` starts SSH consoles from (core.serve.zygote is its client).

Run as `python -m tui.zygote FD` by the server, FD being its end of a SEQPACKET socketpair. It
imports the console once, freezes the garbage collector (so children keep the imported pages
shared), then for each request forks a child that: becomes a session leader with the PTY as its
controlling terminal (resizes arrive as SIGWINCH, a closed connection as SIGHUP), reads the
workspace, and runs the real console bound to the operator the request names; the request
comes only from the server, over this socket. A crash shows the operator one short line and
goes, with its traceback, to the state directory's serve.log. Single-threaded: it must be, to
fork safely.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import gc
import importlib
import io
import json
import logging
import os
import signal
import socket
import sys
import termios
import threading
from pathlib import Path
from typing import Any

# What every console needs, imported once here instead of once per session.
import textual.drivers.linux_driver  # noqa: F401
from rich.console import Console

import tui.app
from core import workspace
from core.api import Actor
from core.api.session import ClientSession
from core.errors import CoreError
from tui.launch import run_console

log = logging.getLogger("ahead.serve.console")
REQUEST_MAX = 65536
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "TZ")
CRASHED = (
    "\x1b[?1049l\x1b[?25h\x1b[0m\r\nThe console stopped because of an error; it is logged "
    "on the server. Log in again to continue.\r\n"
)


def preload() -> None:
    """Import every screen, so a session's first frame needs no imports."""
    for module in ("tui.screens.confirm", "tui.screens.decision", "tui.screens.help"):
        importlib.import_module(module)
    tui.app.AheadApp.all_commands()


def warm_up(ahead_yml: Path) -> None:
    """Run one console headless on the workspace before forking anything: each session then
    starts with Textual's and Rich's caches (parsed CSS selectors, styles, dispatch tables)
    already filled. Read-only (a viewer, no presence row). Leaves no thread behind: forking
    with a live thread could leave a lock held in the child."""

    session = ClientSession(
        workspace.read(ahead_yml), Actor("warm-up", ("viewer",)), embed_engine=False, presence_id=0
    )

    async def run() -> None:
        app = tui.app.AheadApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(100):
                if app.is_ready:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            await pilot.pause()
        await session.aclose()

    try:
        asyncio.run(run())
    except Exception:  # a cold start is slower, not wrong
        log.warning("console warm-up failed", exc_info=True)
    if threading.active_count() != 1:
        log.warning("threads left after the warm-up: %s", threading.enumerate())


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(REQUEST_MAX, socket.CMSG_LEN(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def main(fd: int, ahead_yml: Path | None = None) -> int:
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    preload()
    if ahead_yml is not None:
        warm_up(ahead_yml)
    gc.collect()
    gc.freeze()
    while True:
        msg, fds = receive(sock)
        if not msg:
            return 0  # the server went away
        if len(fds) != 1:
            for extra in fds:
                os.close(extra)
            sock.send(b'{"pid": -1}')
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()
                code = child(json.loads(msg), fds[0])
            finally:
                os._exit(code)
        os.close(fds[0])
        sock.send(json.dumps({"pid": pid}).encode())


def take_terminal(slave: int) -> None:
    """Become a session leader whose controlling terminal is the PTY on fds 0-2."""
    os.setsid()
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def child(request: dict[str, Any], slave: int) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    take_terminal(slave)
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    os.environ.clear()
    os.environ.update(env, TERM=str(request["term"]), COLORTERM="truecolor")
    os.environ.setdefault("LANG", "C.UTF-8")
    logging.basicConfig(
        filename=request["log"],
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        return run(request)
    except CoreError as exc:
        log.warning("console of %s could not start: %s", request.get("operator"), exc)
        os.write(1, f"\r\nThe console could not start: {exc}\r\n".encode(errors="replace"))
        return 1
    except BaseException:
        log.exception("console of %s crashed", request.get("operator"))
        os.write(1, CRASHED.encode())
        return 1


def run(request: dict[str, Any]) -> int:
    ws = workspace.read(Path(request["workspace"]))
    operator = ws.operator(str(request["operator"]))
    if operator is None:
        raise CoreError(f"{request['operator']} is no longer an operator of this workspace")
    session = ClientSession(
        ws,
        Actor(operator.name, operator.roles),
        embed_engine=False,
        presence_id=int(request["presence"]),
        origin=f"ssh:{operator.name}@{request['source']}#{request['presence']}",
    )
    errors = io.StringIO()

    def capture_errors(app: Any) -> None:
        # Textual prints an unhandled error's traceback (locals included) to the terminal as
        # it exits: keep it for the log instead.
        app.error_console = Console(
            file=errors, width=120, markup=False, highlight=False, color_system=None
        )

    code = run_console(session, capture_errors)
    if errors.getvalue().strip():
        log.error("console of %s crashed:\n%s", operator.name, errors.getvalue())
        os.write(1, CRASHED.encode())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(
        main(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None)
    )
