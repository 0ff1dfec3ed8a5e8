"""Slow things the tests need, built once and kept, keyed by the content they are built from.

The demo workspace (a dozen real runs of the real engine) and the project's wheel each take
seconds to build, and several test files need them. `demo_copy()` and `wheel()` build them at
most once per content (cached under .pytest_cache/ahead/<name>-<key>/, kept across sessions
while the sources are unchanged): pytest-xdist workers take a file lock around the build, so
one builds and the others wait for it. A test gets its own copy of the demo (its tests write to
it), relocated so nothing in it points back into the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from core import workspace
from core.workspace import Workspace

ROOT = Path(__file__).parents[1]
CACHE = ROOT / ".pytest_cache" / "ahead"
DONE = ".complete"  # written last: a build without it was interrupted and is redone
STALE_SECONDS = 3600.0  # other keys' builds are removed once this old
GITCONFIG = (
    "[user]\n\tname = Test\n\temail = test@example.com\n"  # as tests/conftest.py's isolated_home
    "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
)


def content_key(paths: Iterable[Path], *extra: str) -> str:
    """A digest of every file under `paths` (names and bytes, __pycache__ left out) and `extra`."""
    digest = hashlib.sha256()
    for text in extra:
        digest.update(text.encode() + b"\0")
    for top in paths:
        files = sorted(
            p
            for p in ([top] if top.is_file() else top.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        for file in files:
            digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cached(name: str, key: str, build: Callable[[Path], None], root: Path = CACHE) -> Path:
    """The directory root/<name>-<key>, made by `build(dir)` unless a complete one is there.

    Under an exclusive lock on root/<name>.lock, so parallel workers never build it twice or
    read a half-made one."""
    root.mkdir(parents=True, exist_ok=True)
    place = root / f"{name}-{key}"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (place / DONE).is_file():
            return place
        shutil.rmtree(place, ignore_errors=True)
        for old in root.glob(f"{name}-*"):  # builds of older sources
            if old.is_dir() and time.time() - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        place.mkdir()
        build(place)
        (place / DONE).touch()
    return place


# -- the demo -------------------------------------------------------------------------------------


def _build_demo(place: Path) -> None:
    from tests.tui.scenes import build_demo

    # The environment of every test (the autouse isolated_home fixture), with a home of its own
    # outside the cache: the demo's runs see the same HOME and git config as a build in a test.
    with (
        tempfile.TemporaryDirectory(prefix="ahead-demo-home-") as scratch,
        pytest.MonkeyPatch.context() as mp,
    ):
        home = Path(scratch)
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
        mp.delenv("AHEAD_WORKSPACE", raising=False)
        (home / ".gitconfig").write_text(GITCONFIG)
        build_demo(place)  # place/demo


def demo_key() -> str:
    """The demo depends on the whole engine (its history is real runs), the scenes' pinning and
    this file; its ahead.yml names the OS user; its runs' logs hold what git and python print."""
    git = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    return content_key(
        [ROOT / "core", ROOT / "tests" / "tui" / "scenes.py", Path(__file__)],
        workspace.current_os_user(),
        sys.version,
        git,
    )


def demo_source() -> Path:
    """The cached demo workspace (tests.tui.scenes.build_demo: reproducible, at scenes.NOW).
    Read it, never write it: tests use `demo_copy`."""
    return cached("demo", demo_key(), _build_demo) / "demo"


def demo_copy(target: Path) -> Workspace:
    """A copy of the cached demo at `target` (new), that behaves as one built there: the absolute
    paths the demo records (artifacts' stored paths, the drift git dirs' alternates) are moved."""
    source = demo_source()
    target = target.resolve()
    shutil.copytree(source, target, symlinks=True)
    relocate(target, str(source), str(target))
    return workspace.read(target / "ahead.yml")


def relocate(root: Path, old: str, new: str) -> None:
    for alternates in (root / ".ahead" / "drift").glob("*/git/objects/info/alternates"):
        alternates.write_text(alternates.read_text().replace(old, new))
    conn = sqlite3.connect(root / ".ahead" / "state.db")
    try:
        with conn:
            conn.execute(
                "UPDATE artifacts SET stored_path = ? || substr(stored_path, ?) "
                "WHERE substr(stored_path, 1, ?) = ?",
                (new, len(old) + 1, len(old) + 1, old + "/"),
            )
        conn.execute("VACUUM")  # no copy of the old paths left in free pages
    finally:
        conn.close()


# -- the wheel ------------------------------------------------------------------------------------


def _build_wheel(place: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(place), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def wheel() -> Path:
    """The project's wheel, as `pip wheel` builds it from this checkout."""
    key = content_key(
        [ROOT / "pyproject.toml", ROOT / "core", ROOT / "tui", ROOT / "themes"], sys.version
    )
    return next(cached("wheel", key, _build_wheel).glob("change_ahead-*.whl"))
