"""Untrusted steps run isolated: a branch run's steps and steps of stages that deploy nowhere.

A sandboxed step is started as
``unshare --user --map-root-user --mount --pid --fork --kill-child [--mount-proc] --
python -I -S core/sandbox_launch.py PLAN -- argv...``. Inside the new user and mount namespaces
that file (stdlib only, run by path in isolated mode, so a checkout's own `core/` can never
stand in for it) makes the mounts of PLAN with libc mount(2), then stays as the namespace's init: it forks
the step, which first enters one more user namespace (mapped back to the engine's uid and gid,
with no capability over the mounts, so it cannot unmount or remount them) and then execs argv
in its checkout. The init reaps orphans, ignores SIGTERM/SIGINT/SIGHUP (the engine signals the
whole process group, so the step gets them directly) and exits with the step's exit code
(128+N for a signal N). When it exits, the kernel kills whatever the step left in the namespace.

What the step sees: the workspace root and the repos read-only; the state directory (state.db,
other runs' checkouts, artifacts, keys) replaced by an empty read-only directory, with only its
own checkout bound back writable (and the mirrors of remote repos read-only, for git); the
engine user's home and config directories read-only (`user_config_dirs`); secret files of
ahead.yml read as empty; private /tmp, /var/tmp and /dev/shm. Network, CPU and memory
are not limited (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

UNSHARE_ENV = "AHEAD_UNSHARE"  # the unshare binary to use (tests point it at a missing one)
LAUNCHER = str(Path(__file__).resolve().with_name("sandbox_launch.py"))
BASE_FLAGS = ("--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child")
PRIVATE = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class Plan:
    """What one sandboxed step sees. `workdir` is its checkout (writable); `hide` paths become
    empty and read-only; `readonly` paths are bound read-only; `reveal` paths (inside a hidden
    one) are bound back read-only; `blank` files (secrets) read as empty; `private` paths get a
    fresh tmpfs."""

    workdir: Path
    hide: tuple[Path, ...] = ()
    blank: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()
    reveal: tuple[Path, ...] = ()
    private: tuple[str, ...] = PRIVATE
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)

    def to_json(self) -> str:
        return json.dumps(
            {
                "workdir": str(self.workdir),
                "hide": [str(p) for p in self.hide],
                "blank": [str(p) for p in self.blank],
                "readonly": [str(p) for p in self.readonly],
                "reveal": [str(p) for p in self.reveal],
                "private": list(self.private),
                "uid": self.uid,
                "gid": self.gid,
            }
        )


SYSTEM_TREES = ("/dev", "/proc", "/sys", "/run")
SYSTEM_DIRS = {
    Path(p)
    for p in (
        "/",
        "/etc",
        "/usr",
        "/var",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/opt",
        "/srv",
        "/tmp",
        "/nonexistent",
    )
}


def user_config_dirs() -> tuple[Path, ...]:
    """The engine user's home and config directories, which a sandboxed step must not write: a
    `~/.gitconfig` (or `$GIT_CONFIG_GLOBAL`) naming a hooks path or a filter, a `.pth` file under
    `~/.local`, `~/.ssh/authorized_keys` or a shell profile would run the branch's code as the
    engine, unsandboxed, at its next git command (the prod deploy checkout) or login."""
    found: list[Path] = []
    candidates = [
        os.environ.get("HOME"),
        os.environ.get("XDG_CONFIG_HOME"),
        os.environ.get("XDG_DATA_HOME"),
    ]
    with contextlib.suppress(KeyError):
        candidates.append(pwd.getpwuid(os.getuid()).pw_dir)
    config = os.environ.get("GIT_CONFIG_GLOBAL")
    if config and os.path.isfile(config):  # GIT_CONFIG_GLOBAL=/dev/null names no directory of ours
        candidates.append(os.path.dirname(os.path.abspath(config)))
    for text in candidates:
        if not text:
            continue
        path = Path(os.path.abspath(text))
        # A system directory is never a config dir to protect this way: remounting /dev (or one
        # under it) read-only and nodev would deny every step /dev/null.
        if (
            any(path == Path(top) or Path(top) in path.parents for top in SYSTEM_TREES)
            or path in SYSTEM_DIRS
        ):
            continue
        if path.is_dir() and path not in found:
            found.append(path)
    return tuple(found)


def unshare_path() -> str:
    return os.environ.get(UNSHARE_ENV) or shutil.which("unshare") or "unshare"


_lock = threading.Lock()
_probed: dict[str, tuple[tuple[str, ...] | None, str]] = {}  # unshare path -> (flags, why not)


def _probe(unshare: str) -> tuple[tuple[str, ...] | None, str]:
    """Start a real sandbox once (a `true` in a throw-away checkout); the flags that work, or why
    none do. A fresh /proc is refused in some containers: then the host's /proc stays (the
    step still cannot signal or trace processes outside its namespaces)."""
    why = ""
    with tempfile.TemporaryDirectory(prefix="ahead-probe-") as tmp:
        work = Path(tmp) / "state" / "work"
        work.mkdir(parents=True)
        plan = Plan(workdir=work, hide=(Path(tmp) / "state",), readonly=(Path(tmp),))
        for flags in (BASE_FLAGS + ("--mount-proc",), BASE_FLAGS):
            argv = command(
                ["sh", "-c", "touch ok && ! touch ../../denied 2>/dev/null"], plan, unshare, flags
            )
            try:
                done = subprocess.run(
                    argv,
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=20,
                    check=False,
                )
            except FileNotFoundError:
                return None, f"{unshare} not found (install util-linux)"
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"cannot run {unshare}: {exc}"
            if done.returncode == 0 and (work / "ok").exists():
                return flags, ""
            why = (
                done.stderr.decode("utf-8", "replace").strip().splitlines()
                or [f"exit status {done.returncode}"]
            )[-1]
    return None, f"{unshare} cannot make user and mount namespaces here: {why[:200]}"


def _probed_flags() -> tuple[tuple[str, ...] | None, str]:
    unshare = unshare_path()
    with _lock:
        if unshare not in _probed:
            _probed[unshare] = _probe(unshare)
        return _probed[unshare]


def unavailable() -> str | None:
    """Why no sandbox can be had on this machine (probed once per unshare path), or None.
    Blocks for the first probe (~0.1 s): call it from a worker thread."""
    return _probed_flags()[1] or None


def command(
    argv: Sequence[str], plan: Plan, unshare: str | None = None, flags: Sequence[str] | None = None
) -> list[str]:
    """The argv that runs `argv` inside the sandbox of `plan` (call `unavailable()` first)."""
    if flags is None:
        flags = _probed_flags()[0] or BASE_FLAGS
    return [
        unshare or unshare_path(),
        *flags,
        "--",
        sys.executable,
        "-I",
        "-S",
        LAUNCHER,
        plan.to_json(),
        "--",
        *argv,
    ]
