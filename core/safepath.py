"""Reading and writing files inside a run's checkout without ever leaving it.

A checkout holds whatever the repo committed, symbolic links included (`dist -> /etc`,
`out.txt -> /etc/passwd`, `up -> ../..`), and steps can create more. The engine reads artifacts
out of a checkout and writes them back into a resumed run's checkout; these helpers make both
refuse any path that would go through a link to outside the checkout. Stdlib only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath


class OutsideCheckout(ValueError):
    """A path that is, or goes through a link to, somewhere outside the checkout."""


def read_inside(root: Path, rel: str) -> bytes:
    """The bytes of regular file `rel` under `root`; links are allowed only to files inside `root`.

    Raises:
        FileNotFoundError: there is no such file.
        OutsideCheckout: it resolves outside `root`, or is not a regular file.
    """
    _check_rel(rel)
    real = (root / rel).resolve(strict=True)
    if not real.is_relative_to(root.resolve()):
        raise OutsideCheckout(f"{rel!r} is a link to outside the checkout")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutsideCheckout(f"{rel!r} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def write_inside(root: Path, rel: str, data: bytes) -> Path:
    """Write `data` to `rel` under `root`, creating directories; a link at `rel` is replaced,
    a link on the way there is refused (it could point anywhere).

    Raises:
        OutsideCheckout: a directory on the way is a link, or `rel` leaves `root`.
    """
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
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return target


def _check_rel(rel: str) -> tuple[str, ...]:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\x00" in rel:
        raise OutsideCheckout(f"{rel!r} is not a path inside the checkout")
    return path.parts
