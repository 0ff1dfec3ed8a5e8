"""Outgoing SSH: the engine as a client of other hosts (drift targets, remote runners).

Host keys are pinned in the state directory's `known_hosts`; nothing connects to a host whose
key is not there, and a key that changed is refused with both fingerprints named. A host is
trusted only by an explicit operator command (`ahead drift trust`, `ahead runner trust`) that
shows the fingerprint first. `known_hosts=None` (asyncssh's "accept anything") is never used,
and neither the user's ~/.ssh/config nor an SSH agent is read: what the engine does over SSH
depends only on the workspace.

The engine's own client key is `state/ssh/id_ed25519`, created on first use with mode 0600;
`ahead drift trust` / `ahead runner trust` print its public half for the target's
authorized_keys.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from core.errors import CoreError

ADDRESS = re.compile(
    r"^(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]{0,63})@(?P<host>[A-Za-z0-9.][A-Za-z0-9.-]{0,252}"
    r"|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)


class HostKeyError(CoreError):
    """The host is not trusted yet, or its key changed since it was trusted."""


class Unreachable(CoreError):
    """The host could not be reached or refused our key."""


@dataclass(frozen=True)
class Address:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def pattern(self) -> str:
        """How known_hosts names this host."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_address(text: str) -> Address | None:
    """`user@host[:port]`, or None when it is not one (hosts never start with '-')."""
    m = ADDRESS.match(text)
    if not m:
        return None
    port = int(m["port"] or 22)
    if not 0 < port < 65536:
        return None
    return Address(m["user"], m["host"].strip("[]"), port)


def known_hosts_path(state_dir: Path) -> Path:
    return state_dir / "known_hosts"


def client_key(state_dir: Path) -> asyncssh.SSHKey:
    """The engine's client key, created once (mode 0600)."""
    path = state_dir / "ssh" / "id_ed25519"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="change-ahead engine")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
        return key
    return asyncssh.read_private_key(str(path))


def public_key_line(state_dir: Path) -> str:
    return client_key(state_dir).export_public_key().decode().strip()


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def pinned(state_dir: Path, address: Address) -> list[asyncssh.SSHKey]:
    """The host keys trusted for this host (empty when it was never trusted)."""
    path = known_hosts_path(state_dir)
    if not path.exists():
        return []
    trusted = asyncssh.read_known_hosts(str(path))
    keys, _ca, _revoked, _x509, _, _, _ = trusted.match(address.host, "", address.port)
    return list(keys)


async def scan_host_key(address: Address, timeout: float = 10.0) -> asyncssh.SSHKey:
    """The key the host presents now (for an operator to compare before trusting it)."""
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(address.host, address.port, config=None)
    except (OSError, asyncssh.Error) as exc:
        raise Unreachable(f"{address}: cannot reach the host: {exc}") from exc
    if key is None:
        raise Unreachable(f"{address}: the host sent no key")
    return key


def trust(state_dir: Path, address: Address, key: asyncssh.SSHKey) -> None:
    """Pin `key` for `address` (replacing an older pin for the same host and port)."""
    path = known_hosts_path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split(" ", 1)[0] != address.pattern]
    kept.append(f"{address.pattern} {key.export_public_key().decode().strip()}")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(kept) + "\n")
    os.replace(tmp, path)


async def connect(
    state_dir: Path, address: Address, timeout: float = 10.0
) -> asyncssh.SSHClientConnection:
    """A connection to a pinned host with the engine's key.

    Raises:
        HostKeyError: the host was never trusted, or it presents another key than the pinned one.
        Unreachable: connection refused, timed out, or our key was not accepted.
    """
    keys = pinned(state_dir, address)
    if not keys:
        raise HostKeyError(
            f"{address}: host key not trusted yet (check its fingerprint and run "
            f"`ahead drift trust` or `ahead runner trust` for it)"
        )
    try:
        return await asyncssh.connect(
            address.host,
            address.port,
            username=address.user,
            known_hosts=str(known_hosts_path(state_dir)),
            client_keys=[client_key(state_dir)],
            agent_path=None,
            config=None,
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            connect_timeout=timeout,
            login_timeout=timeout,
            keepalive_interval=15,
            keepalive_count_max=3,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        try:
            now = fingerprint(await scan_host_key(address, timeout))
        except Unreachable:
            now = "unknown"
        pinned_prints = ", ".join(fingerprint(k) for k in keys)
        raise HostKeyError(
            f"{address}: HOST KEY CHANGED: pinned {pinned_prints}, the host now "
            f"presents {now}. Refusing to connect. If the change is expected, "
            f"trust the new key explicitly."
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise Unreachable(
            f"{address}: our key was refused (add the engine's public key to "
            f"{address.user}'s authorized_keys)"
        ) from exc
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise Unreachable(f"{address}: cannot connect: {exc}") from exc
