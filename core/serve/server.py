"""The SSH server of `ahead serve`: operators log in with their keys and get the console.

Authentication is public key only, against the operators' `keys` in ahead.yml (re-read when the
file changes, so a removed key stops working at the next login); the user name must be the
key's operator. asyncssh calls `validate_public_key` for keys a client only offers, before any
signature, so nothing is bound there: the operator is bound in `auth_completed`, from the key
validated last, which with public key as the only method is the key whose signature was just
checked (the CVE-2024-45337 class of bug is binding the first or any offered key). `begin_auth`
returns True for every user: asyncssh logs in a user whose `begin_auth` is falsy with no
credentials at all.

Limits: a login timeout, keepalives, at most `max_per_source` connections per address, at most
`max_auth_attempts` keys tried per connection, and a failed-login lockout per address kept in
the store (core.serve.guard). Exhaustion: at most `max_preauth` unauthenticated connections in
all (when full, a newcomer evicts the oldest unauthenticated connection of the address holding
the most, if that address holds more than the newcomer's would; else it is refused); no new
connection while the process's open files exceed its limit less `fd_reserve` (kept for the
engine, which shares the process); per connection at most `max_channels` session channels and
`max_listings_per_connection` listing processes (`max_listings` in all). Refusals are dropped
at once (abort: no wait, no disconnect message) and logged once per burst (guard.BurstLog). No port forwarding (the hooks are not overridden, so asyncssh
refuses), no agent or X11 forwarding, no SFTP or SCP, no subsystems; environment requests are
accepted by the protocol and never read.

Sessions (core.serve.session): with a PTY and no command, the console as its own process on its
own pseudo-terminal; with a command (or without a PTY), only the read-only listings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from core import presence, workspace
from core.errors import CoreError, PermissionDenied
from core.serve import guard
from core.serve.keys import KeyProblem, load_or_create_host_key, parse_public_key
from core.serve.zygote import Zygote
from core.store.db import AsyncStore, Store
from core.workspace import Workspace

log = logging.getLogger("ahead.serve")
SESSION = "ssh-server"
REVOKED = (
    "\x1b[?1049l\r\nahead: you are no longer an operator of this workspace (you, or this "
    "key, were removed from ahead.yml); closing.\r\n"
)


@dataclass(frozen=True)
class ServeOptions:
    """How `ahead serve` listens and what it tolerates."""

    host: str = "127.0.0.1"
    port: int = 8022
    login_timeout: float = 30.0
    keepalive_interval: float = 30.0
    keepalive_count_max: int = 3
    max_per_source: int = 10
    max_auth_attempts: int = 6  # keys refused on one connection before it is closed
    max_sessions: int = 200  # consoles at once, every operator together
    max_preauth: int = 64  # unauthenticated connections at once, every address together
    max_channels: int = 4  # session channels open at once on one connection
    max_listings_per_connection: int = 2  # listing processes running at once for one connection
    max_listings: int = 16  # listing processes running at once, every connection together
    fd_reserve: int = 0  # open files kept for the engine; 0: a quarter of the limit, at least 32
    accept_backlog: int = 0  # listen queue, and how many asyncio accepts at once before any check:
    # 0: half the reserve (8 to 128), so one burst of accepts stays inside the reserve
    lockout: guard.LockoutPolicy = field(default_factory=guard.LockoutPolicy)
    console_argv: tuple[str, ...] = ()  # the zygote program (from the UI package); () = no console
    revoke_interval: float = 2.0  # how often ahead.yml is checked for operators and keys removed


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8022' → ('127.0.0.1', 8022); '[::1]:8022' for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8022")
    return host.strip("[]"), int(port)


class KeyBook:
    """Fingerprint → operator, from ahead.yml, read again whenever the file changes (inode, size
    or mtime). A file that cannot be read or is invalid fails closed: no key is anyone's until
    it is fixed (`broken` says so; open sessions are left to refuse their own commands)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._watch = workspace.WorkspaceWatch(ws)  # the same re-read rule every command uses
        self._owners: dict[str, str] = {}
        self.broken = False
        self._load(ws)

    def refresh(self) -> None:
        try:
            current = self._watch.current()
        except PermissionDenied as exc:
            if not self.broken:
                log.warning("refusing every key until it is fixed: %s", exc)
            self._owners, self.broken = {}, True
            return
        if current is not self.ws or self.broken:
            self._load(current)

    def _load(self, current: Workspace) -> None:
        owners: dict[str, str] = {}
        for operator in current.operators:
            for key in operator.keys:
                with contextlib.suppress(KeyProblem):
                    owners[parse_public_key(key)[1]] = operator.name
        self.ws, self._owners, self.broken = current, owners, False

    def owner(self, fingerprint: str) -> str | None:
        return self._owners.get(fingerprint)


class SSHServer:
    """`ahead serve`'s SSH side: start, then `aclose` (ends every session, leaves no process)."""

    def __init__(self, ws: Workspace, options: ServeOptions) -> None:
        self.ws = ws
        self.options = options
        self.db = AsyncStore(Store(ws.db_path, session=SESSION))
        self.keys = KeyBook(ws)
        self.zygote = (
            Zygote(list(options.console_argv), str(ws.file)) if options.console_argv else None
        )
        self.per_source: Counter[str] = Counter()
        self.preauth: dict[
            str, dict[Connection, None]
        ] = {}  # address → its unauthenticated, oldest first
        self.preauth_total = 0
        self.listings = 0  # listing processes running
        self.refusals = guard.BurstLog(log)
        self.fd_ceiling = 0  # no new connection above this many open files (set in start)
        self.locked: dict[str, float] = {}
        self.sessions: set[Any] = set()  # core.serve.session.Session objects
        self.connections: set[Connection] = set()  # authenticated ones
        self._watcher: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.host_key_path: Path | None = None

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return int(self._acceptor.get_port())

    async def start(self) -> None:
        limit = guard.fd_limit()
        reserve = self.options.fd_reserve or max(32, limit // 4)
        self.fd_ceiling = limit - reserve
        backlog = self.options.accept_backlog or max(8, min(128, reserve // 2))
        for name in ("asyncio", "asyncssh"):  # accept errors (EMFILE) and per-connection noise
            logger = logging.getLogger(name)
            if not any(isinstance(f, guard.BurstFilter) for f in logger.filters):
                logger.addFilter(guard.BurstFilter())
        await self.db.open()
        await self.db.call(presence.sweep, self.db.store)
        self.locked = dict(await self.db.call(self._load_locks, self.db.store))
        self.host_key_path = load_or_create_host_key(self.ws.settings.state_dir)
        if self.zygote is not None:
            await self.zygote.start()
        o = self.options
        try:
            self._acceptor = await self._listen(o, backlog)
        except OSError as exc:
            await self.aclose()
            if exc.errno == errno.EADDRINUSE:
                raise CoreError(busy_port(o.host, o.port)) from None
            raise CoreError(f"cannot listen on {o.host}:{o.port}: {exc.strerror or exc}") from None
        log.info("ssh server listening on %s:%s", o.host, self.port)
        self._watcher = asyncio.create_task(self._watch_operators(), name="ssh-revocations")

    async def _listen(self, o: ServeOptions, backlog: int) -> Any:
        return await asyncssh.create_server(
            lambda: Connection(self),
            o.host,
            o.port,
            backlog=backlog,
            server_host_keys=[str(self.host_key_path)],
            config=None,
            public_key_auth=True,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_host=None,
            x509_trusted_certs=None,
            known_client_hosts=None,
            login_timeout=o.login_timeout,
            keepalive_interval=o.keepalive_interval,
            keepalive_count_max=o.keepalive_count_max,
            rdns_lookup=False,
            allow_pty=True,
            line_editor=False,
            encoding=None,
            x11_forwarding=False,
            agent_forwarding=False,
            sftp_factory=None,
            allow_scp=False,
        )

    async def _watch_operators(self) -> None:
        """End the connections of operators removed from ahead.yml, or whose key was removed,
        within `revoke_interval`: logging in again is refused, and so is staying."""
        while True:
            await asyncio.sleep(self.options.revoke_interval)
            try:
                self.revoke_gone()
            except Exception:
                log.exception("could not check ahead.yml for removed operators")

    def revoke_gone(self) -> None:
        self.keys.refresh()
        if self.keys.broken:
            return  # cannot tell who is gone: no login now, and every console command is refused
        for conn in list(self.connections):
            if conn.operator is not None and self.keys.owner(conn.fingerprint) != conn.operator:
                conn.revoke()

    def _load_locks(self, store: Store) -> dict[str, float]:
        rows = store.query(
            "SELECT source, locked_until FROM login_failures WHERE locked_until > "
            "strftime('%s', 'now')"
        )
        return {r["source"]: r["locked_until"] for r in rows}

    def is_locked(self, source: str) -> bool:
        until = self.locked.get(source)
        return until is not None and until > time.time()

    def admit(self, conn: Connection) -> bool:
        """May this new connection go on to authenticate? Counts it when it may."""
        source, options = conn.source, self.options
        if self.is_locked(source):
            self.refusals.refused(
                "locked out", "refused %s: locked out after failed logins", source
            )
            return False
        if self.per_source[source] >= options.max_per_source:
            self.refusals.refused(
                "per address",
                "refused %s: %d connections from it already (max_per_source)",
                source,
                self.per_source[source],
            )
            return False
        fds = guard.open_fds()
        if fds is not None and fds > self.fd_ceiling:
            self.refusals.refused(
                "file descriptors",
                "refused %s: %d files open, the rest of the limit (%d) is kept for the engine",
                source,
                fds,
                guard.fd_limit(),
            )
            return False
        if self.preauth_total >= options.max_preauth and not self._evict_for(source):
            self.refusals.refused(
                "unauthenticated",
                "refused %s: %d unauthenticated connections already (max_preauth)",
                source,
                self.preauth_total,
            )
            return False
        self.per_source[source] += 1
        self.preauth.setdefault(source, {})[conn] = None
        self.preauth_total += 1
        return True

    def _evict_for(self, source: str) -> bool:
        """Make room for a newcomer from `source`: drop the oldest unauthenticated connection of
        the address holding the most, if it holds more than `source` will."""
        heaviest = max(self.preauth, key=lambda s: len(self.preauth[s]), default=None)
        if heaviest is None or len(self.preauth[heaviest]) <= len(self.preauth.get(source, ())) + 1:
            return False
        victim = next(iter(self.preauth[heaviest]))
        self.authenticated(victim)
        self.refusals.refused(
            "evicted",
            "dropped an unauthenticated connection from %s to let %s in",
            heaviest,
            source,
        )
        if victim.conn is not None:
            asyncio.get_running_loop().call_soon(victim.conn.abort)
        return True

    def authenticated(self, conn: Connection) -> None:
        """`conn` no longer counts as unauthenticated (logged in, gone, or evicted)."""
        held = self.preauth.get(conn.source)
        if held is not None and conn in held:
            del held[conn]
            self.preauth_total -= 1
            if not held:
                del self.preauth[conn.source]

    def spawn(self, coro: Any, name: str) -> None:
        """Run `coro` as an owned task; failures are logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.refusals.refused(
                f"{task.get_name()} failed", "%s failed", task.get_name(), exc_info=task.exception()
            )

    async def failed_login(self, source: str, username: str, reason: str) -> None:
        until = await self.db.call(
            guard.record_failure,
            self.db.store,
            source,
            username,
            reason,
            self.options.lockout,
            SESSION,
        )
        if until is not None:
            self.locked[source] = until
            log.warning("locked out %s until %s after repeated failed logins", source, until)

    async def logged_in(self, operator: str, source: str, fingerprint: str) -> None:
        def write(store: Store) -> None:
            guard.clear_failures(store, source)
            with store.transaction():
                store.audit(operator, "ssh.login", source, {"key": fingerprint}, session=SESSION)

        await self.db.call(write, self.db.store)

    async def logged_out(self, operator: str, source: str) -> None:
        def write(store: Store) -> None:
            with store.transaction():
                store.audit(operator, "ssh.logout", source, {}, session=SESSION)

        await self.db.call(write, self.db.store)

    async def aclose(self) -> None:
        """Stop listening, end every session and its process, stop the zygote, close the store."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._acceptor is not None:
            self._acceptor.close()
            with contextlib.suppress(Exception):
                await self._acceptor.wait_closed()
            self._acceptor = None
        await asyncio.gather(*(s.end() for s in list(self.sessions)), return_exceptions=True)
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        if self.zygote is not None:
            await self.zygote.aclose()
        await self.db.aclose()


class Connection(asyncssh.SSHServer):
    """One client connection: authentication, then sessions bound to its operator."""

    def __init__(self, server: SSHServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = ""
        self.username = ""
        self.operator: str | None = None  # bound only when authentication completes
        self.fingerprint = ""
        self._candidate: tuple[str, str] | None = None
        self._attempts = 0
        self._counted = False
        self.channels = 0  # session channels open
        self.listings = 0  # listing processes running
        self._revoked = False
        self.sessions: set[Any] = set()  # core.serve.session.Session objects of this connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        self.source = str(peer[0])
        if not self.server.admit(self):
            asyncio.get_running_loop().call_soon(conn.abort)  # before key exchange, no goodbye
            return
        self._counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.authenticated(self)
        self.server.connections.discard(self)
        if self._counted:
            self.server.per_source[self.source] -= 1
            if self.server.per_source[self.source] <= 0:
                del self.server.per_source[self.source]
        if self.operator is not None:
            self.server.spawn(self.server.logged_out(self.operator, self.source), "ssh-logout")
        elif self.username or self._attempts:
            reason = "no accepted key" if self._attempts else "no authentication"
            self.server.spawn(
                self.server.failed_login(self.source, self.username, reason), "ssh-failed"
            )

    # -- authentication ----------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        # Always True: a falsy value here makes asyncssh accept the user with no credentials.
        try:
            self.username = username[:64]
        finally:
            return True  # noqa: B012 -- nothing may turn this into a falsy return

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Is `key` one of `username`'s keys? Called for offered keys too: binds nothing."""
        self._candidate = None
        if self._attempts >= self.server.options.max_auth_attempts:
            return False  # already closing
        self.server.keys.refresh()
        fingerprint = key.get_fingerprint()
        owner = self.server.keys.owner(fingerprint)
        if owner is None or owner != username or self.server.is_locked(self.source):
            self._attempts += (
                1  # keys refused; a key that is asked about and then signs counts none
            )
            if self._attempts >= self.server.options.max_auth_attempts and self.conn is not None:
                asyncio.get_running_loop().call_soon(self.conn.close)
            return False
        self._candidate = (owner, fingerprint)
        return True

    def auth_completed(self) -> None:
        """Bind the operator: the key validated last is the one whose signature was checked."""
        assert self.conn is not None
        candidate = self._candidate
        if candidate is None or candidate[0] != self.conn.get_extra_info("username"):
            log.error("authentication completed without a matching key; closing")
            self.conn.close()
            return
        self.operator, self.fingerprint = candidate
        self.server.authenticated(self)
        self.server.connections.add(self)
        log.info("%s logged in from %s with %s", self.operator, self.source, self.fingerprint)
        self.server.spawn(
            self.server.logged_in(self.operator, self.source, self.fingerprint), "ssh-login"
        )

    # -- sessions ------------------------------------------------------------------------------

    def session_requested(self) -> Any:
        if self.operator is None:
            return False
        if self.channels >= self.server.options.max_channels:
            self.server.refusals.refused(
                "session channels",
                "%s from %s: refused a session channel: %d open on the connection (max_channels)",
                self.operator,
                self.source,
                self.channels,
            )
            return False
        from core.serve.session import Session

        self.channels += 1
        session = Session(self.server, self.operator, self.source, self)
        self.sessions.add(session)
        return session

    def revoke(self) -> None:
        """The operator or their key is gone from ahead.yml: tell every session, end it, close."""
        if self._revoked or self.conn is None:
            return
        self._revoked = True
        log.warning(
            "%s from %s: no longer an operator with key %s in ahead.yml; closing their connection",
            self.operator,
            self.source,
            self.fingerprint,
        )
        self.server.spawn(self._revoke(), "ssh-revoke")

    async def _revoke(self) -> None:
        assert self.conn is not None and self.operator is not None
        operator = self.operator

        def write(store: Store) -> None:
            with store.transaction():
                store.audit(
                    operator, "ssh.revoked", self.source, {"key": self.fingerprint}, session=SESSION
                )

        with contextlib.suppress(Exception):
            await self.server.db.call(write, self.server.db.store)
        await asyncio.gather(
            *(s.revoke(REVOKED) for s in list(self.sessions)), return_exceptions=True
        )
        self.conn.close()


def port_in_use(host: str, port: int) -> str:
    """Before the engine starts: "" when `host:port` can be listened on, else the one-line reason
    (the server's own bind says the same if the port is taken in between)."""
    if port == 0:
        return ""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return ""  # let the server report a name that does not resolve
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return busy_port(host, port)
    return ""


def busy_port(host: str, port: int) -> str:
    pid = port_owner(port)
    by = f" (by pid {pid})" if pid else ""
    return f"port {port} on {host} is in use{by}; choose another with --listen {host}:PORT"


def port_owner(port: int) -> int | None:
    """(Linux, best effort) The pid of a process of ours listening on TCP `port`, else None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
            except OSError:
                continue
    return None
