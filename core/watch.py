"""Notice new commits within moments: inotify on ref directories, with a stat-poll safety net.

Linux inotify through ctypes (no dependency): a watch on each repo's `refs/heads` (and its
subdirectories) and on the common git dir for `packed-refs`; an event makes the engine re-read
that repo's ref files. The poll sweep (a few `stat` calls per repo) covers other platforms,
inotify queue overflows and anything a watch missed. Depends on nothing but the stdlib.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY
_HEADER = struct.Struct("iIII")


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    """The C library, loaded once (finding it runs ldconfig: milliseconds, on the UI's loop)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        if not hasattr(_LIBC, "inotify_init1"):
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return _LIBC


class Inotify:
    """A minimal inotify reader, to be registered with `loop.add_reader(fd, ...)`.

    `on_change(key)` is called with the key given to `watch_repo` for every relevant event;
    `on_overflow()` when the kernel queue overflowed (re-read everything).
    """

    def __init__(self, on_change: Callable[[str], None], on_overflow: Callable[[], None]) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int = fd
        self._watches: dict[int, tuple[str, Path, bool]] = {}  # wd -> (key, dir, is common dir)
        self._on_change = on_change
        self._on_overflow = on_overflow

    def _add(self, key: str, path: Path, common: bool) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), MASK)
        if wd >= 0:
            self._watches[wd] = (key, path, common)

    def watch_repo(self, key: str, common_dir: Path) -> None:
        self._add(key, common_dir, True)
        heads = common_dir / "refs" / "heads"
        for directory, _subdirs, _files in os.walk(heads):
            self._add(key, Path(directory), False)

    def read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        changed: set[str] = set()
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                self._on_overflow()
                continue
            entry = self._watches.get(wd)
            if entry is None:
                continue
            key, directory, common = entry
            name = os.fsdecode(raw)
            if common:
                if name in ("packed-refs", "HEAD"):
                    changed.add(key)
                continue
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                for sub, _dirs, _files in os.walk(directory / name):
                    self._add(key, Path(sub), False)
            changed.add(key)
        for key in changed:
            self._on_change(key)

    def close(self) -> None:
        os.close(self.fd)


class FileWatch:
    """Calls `on_change()` when one of `names` in `directory` is written (inotify).

    The event feed uses it on the store's WAL file, so a console or engine hears about another
    process's write at once instead of polling for it.
    """

    def __init__(self, directory: Path, names: set[str], on_change: Callable[[], None]) -> None:
        self._names = {os.fsencode(n) for n in names}
        self._on_change = on_change
        self._inotify = Inotify(lambda _key: None, on_change)
        wd = self._inotify._libc.inotify_add_watch(
            self._inotify.fd, os.fsencode(directory), IN_MODIFY | IN_CREATE | IN_MOVED_TO
        )
        if wd < 0:
            self._inotify.close()
            raise OSError(ctypes.get_errno(), f"cannot watch {directory}")
        self.fd = self._inotify.fd

    def read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        hit = False
        while offset + _HEADER.size <= len(data):
            _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW or name in self._names:
                hit = True
        if hit:
            self._on_change()

    def close(self) -> None:
        self._inotify.close()
