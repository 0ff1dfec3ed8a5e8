"""The SFTP mirror: a live directory on a host brought into a local directory, so that a
`files` target on a host is compared like a local one (checks.py).

Only entries whose (size, mtime, mode) changed since the last mirror are fetched; links are
recreated as links and never followed; names with a slash or NUL, `.` and `..` are refused.

Depends on core.sshclient (connections, host keys) and the file system only: may not depend on
the store, the checks, the scheduler or the drift records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from core.errors import InvalidRequest, NotFound


async def mirror_remote(
    state_dir: Path, host: str, remote: str, mirror: Path, timeout: float
) -> list[str]:
    """Bring `remote` on `host` into the local directory `mirror`; return the unreadable paths.

    One SFTP session; directories are listed in parallel and only files whose (size, mtime,
    mode) changed since the last mirror are fetched. Links are recreated as links, never
    followed; names with a slash or NUL, `.` and `..` are refused.

    Raises:
        CoreError: (HostKeyError, Unreachable) the host cannot be trusted or reached;
            NotFound: the remote directory does not exist.
    """
    import asyncssh

    from core import sshclient

    address = sshclient.parse_address(host)
    if address is None:
        raise InvalidRequest(f"{host!r} is not user@host[:port]")
    manifest_path = mirror.parent / "manifest.json"
    old = await asyncio.to_thread(_read_manifest, manifest_path, mirror)
    seen: dict[str, list[Any]] = {}
    denied: list[str] = []
    conn = await sshclient.connect(state_dir, address, timeout=min(timeout, 15.0))
    try:
        async with conn, conn.start_sftp_client() as sftp:
            try:
                attrs = await sftp.stat(remote)
            except asyncssh.SFTPNoSuchFile:
                raise NotFound(f"{host}:{remote} does not exist") from None
            if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                raise NotFound(f"{host}:{remote} is not a directory")
            fetch: list[tuple[str, int]] = []

            async def walk(rel: str) -> None:
                path = remote.rstrip("/") + ("/" + rel if rel else "")
                try:
                    names = await sftp.readdir(path)
                except (asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure):
                    denied.append(rel)
                    return
                subdirs = []
                for entry in names:
                    name = (
                        entry.filename
                        if isinstance(entry.filename, str)
                        else entry.filename.decode("utf-8", "surrogateescape")
                    )
                    if name in (".", "..") or "/" in name or "\0" in name:
                        continue
                    child = f"{rel}/{name}" if rel else name
                    a = entry.attrs
                    mode = a.permissions or 0
                    if a.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                        seen[child] = ["d", 0, 0, 0]
                        subdirs.append(child)
                    elif a.type == asyncssh.FILEXFER_TYPE_SYMLINK:
                        target = await sftp.readlink(remote.rstrip("/") + "/" + child)
                        seen[child] = ["l", target, 0, 0]
                    elif a.type == asyncssh.FILEXFER_TYPE_REGULAR:
                        seen[child] = ["f", a.size or 0, a.mtime or 0, mode & 0o777]
                        if old.get(child) != seen[child] or not os.path.lexists(mirror / child):
                            fetch.append((child, mode & 0o777))
                await asyncio.gather(*(walk(d) for d in subdirs))

            await walk("")
            await asyncio.to_thread(_sync_tree, mirror, seen, old)  # local disk work off the loop
            semaphore = asyncio.Semaphore(64)

            async def get(child: str, mode: int) -> None:
                async with semaphore:
                    try:
                        async with sftp.open(remote.rstrip("/") + "/" + child, "rb") as handle:
                            data = await handle.read()
                    except (asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure):
                        denied.append(child)
                        seen.pop(child, None)
                        return
                    except asyncssh.SFTPNoSuchFile:  # removed while we looked: next check sees it
                        seen.pop(child, None)
                        return
                await asyncio.to_thread(
                    _place,
                    mirror,
                    child,
                    data=data if isinstance(data, bytes) else data.encode(),
                    mode=mode,
                )

            await asyncio.gather(*(get(c, m) for c, m in fetch))
            try:  # a directory removed while we copied it is not "every file removed"
                await sftp.stat(remote)
            except asyncssh.SFTPNoSuchFile:
                raise NotFound(f"{host}:{remote} disappeared during the check") from None
    except (OSError, asyncssh.Error) as exc:
        from core.sshclient import Unreachable

        raise Unreachable(f"{address}: {exc}") from exc
    await asyncio.to_thread(_finish_mirror, mirror, manifest_path, seen, denied)
    return denied


def _read_manifest(path: Path, mirror: Path) -> dict[str, list[Any]]:
    """(worker thread) What the last mirror fetched: {path: [type, size, mtime, mode]}."""
    mirror.mkdir(parents=True, exist_ok=True)
    try:
        old: dict[str, list[Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old


def _sync_tree(mirror: Path, seen: dict[str, list[Any]], old: dict[str, list[Any]]) -> None:
    """(worker thread) Remove what the host no longer has; make its directories and links."""
    _prune_mirror(mirror, seen)
    for child, info in seen.items():
        if info[0] == "d":
            _ensure_dir(mirror, child)
        elif info[0] == "l" and old.get(child) != info:
            _place(mirror, child, link=str(info[1]))


def _finish_mirror(
    mirror: Path, manifest_path: Path, seen: dict[str, list[Any]], denied: list[str]
) -> None:
    """(worker thread) Leave out what we could not read; remember what was fetched."""
    for child in denied:
        with contextlib.suppress(OSError):
            _remove(mirror / child)
    manifest_path.write_text(json.dumps(seen))


def _ensure_dir(mirror: Path, rel: str) -> None:
    path = mirror / rel
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        _remove(path)
    path.mkdir(parents=True, exist_ok=True)


def _place(
    mirror: Path, rel: str, *, data: bytes | None = None, mode: int = 0o644, link: str | None = None
) -> None:
    """Write one mirrored entry; its parent directories are real directories of the mirror."""
    path = mirror / rel
    for parent in reversed(path.relative_to(mirror).parents[:-1]):
        p = mirror / parent
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            _remove(p)
        p.mkdir(exist_ok=True)
    if os.path.lexists(path):
        _remove(path)
    if link is not None:
        os.symlink(link, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data or b"")
    os.chmod(path, mode & 0o777 | 0o400, follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _prune_mirror(mirror: Path, seen: dict[str, list[Any]]) -> None:
    for dirpath, dirnames, filenames in os.walk(mirror, topdown=True):
        rel_dir = os.path.relpath(dirpath, mirror)
        for name in list(dirnames) + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            info = seen.get(rel)
            if info is None:
                _remove(Path(dirpath) / name)
                if name in dirnames:
                    dirnames.remove(name)
