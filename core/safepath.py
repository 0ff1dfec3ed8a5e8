"""Reading and writing files inside a run's checkout without ever leaving it.

A checkout holds whatever the repo committed, symbolic links included (`dist -> /etc`,
`out.txt -> /etc/passwd`, `up -> ../..`), and steps can create more. The engine reads artifacts
out of a checkout and writes them back into a resumed run's checkout; these helpers make both
refuse any path that would go through a link to outside the checkout. Files are copied in
chunks, never read whole, and refused over a size cap before any byte is read. Stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

CHUNK = 1024 * 1024


class OutsideCheckout(ValueError):
    """A path that is, or goes through a link to, somewhere outside the checkout."""


class TooLarge(ValueError):
    """A file over the size cap (its size so far when it grew while being copied)."""

    def __init__(self, rel: str, size: int, cap: int) -> None:
        self.rel, self.size, self.cap = rel, size, cap
        super().__init__(f"{rel} is {size} bytes, over the cap of {cap}")


def _open_inside(root: Path, rel: str) -> int:
    _check_rel(rel)
    real = (root / rel).resolve(strict=True)
    if not real.is_relative_to(root.resolve()):
        raise OutsideCheckout(f"{rel!r} is a link to outside the checkout")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutsideCheckout(f"{rel!r} is not a regular file")
    return fd


def read_inside(root: Path, rel: str, max_bytes: int = 64 * CHUNK) -> bytes:
    """The bytes of regular file `rel` under `root`; links are allowed only to files inside `root`.

    Raises:
        FileNotFoundError: there is no such file.
        OutsideCheckout: it resolves outside `root`, or is not a regular file.
        TooLarge: it holds more than `max_bytes` (nothing past the cap is read).
    """
    fd = _open_inside(root, rel)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise TooLarge(rel, size, max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLarge(rel, len(data), max_bytes)
        return data
    finally:
        os.close(fd)


def copy_out(root: Path, rel: str, dest: Path, max_bytes: int) -> tuple[int, str]:
    """Copy regular file `rel` under `root` to `dest` in chunks (never whole in memory);
    returns its size and sha256. Refused before any read when its size is over `max_bytes`,
    and stopped (`dest` removed) if it grows past the cap while being copied.

    Raises:
        FileNotFoundError, OutsideCheckout: as `read_inside`.
        TooLarge: over `max_bytes`.
    """
    fd = _open_inside(root, rel)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise TooLarge(rel, size, max_bytes)
        digest, total = hashlib.sha256(), 0
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(out, "wb") as fh:
                while chunk := os.read(fd, CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise TooLarge(rel, total, max_bytes)
                    digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return total, digest.hexdigest()
    finally:
        os.close(fd)


def copy_inside(root: Path, rel: str, source: Path) -> Path:
    """Copy file `source` (a stored artifact) to `rel` under `root` in chunks, with the same
    rules as `write_inside`."""
    with source.open("rb") as src:
        fd = _open_for_write(root, rel)
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(src, fh, CHUNK)
    return root / rel


def write_inside(root: Path, rel: str, data: bytes) -> Path:
    """Write `data` to `rel` under `root`, creating directories; a link at `rel` is replaced,
    a link on the way there is refused (it could point anywhere).

    Raises:
        OutsideCheckout: a directory on the way is a link, or `rel` leaves `root`.
    """
    fd = _open_for_write(root, rel)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return root / rel


def _open_for_write(root: Path, rel: str) -> int:
    parts = _check_rel(rel)
    here = root
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise OutsideCheckout(f"{rel!r}: {here.relative_to(root)} is a link in the checkout")
        here.mkdir(exist_ok=True)
    target = here / parts[-1]
    if target.is_symlink():
        target.unlink()
    return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)


def _check_rel(rel: str) -> tuple[str, ...]:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\x00" in rel:
        raise OutsideCheckout(f"{rel!r} is not a path inside the checkout")
    return path.parts
