"""Untrusted steps run isolated: a branch run's steps and steps of stages that deploy nowhere.

A sandboxed step is started as
``unshare --user --map-root-user --mount --pid --fork --kill-child [--mount-proc] --
python -I -S core/sandbox.py PLAN -- argv...``. Inside the new user and mount namespaces this
file (stdlib only, run by path in isolated mode, so a checkout's own `core/` can never stand in
for it) makes the mounts of PLAN with libc mount(2), then stays as the namespace's init: it forks
the step, which first enters one more user namespace (mapped back to the engine's uid and gid,
with no capability over the mounts, so it cannot unmount or remount them) and then execs argv
in its checkout. The init reaps orphans, ignores SIGTERM/SIGINT/SIGHUP (the engine signals the
whole process group, so the step gets them directly) and exits with the step's exit code
(128+N for a signal N). When it exits, the kernel kills whatever the step left in the namespace.

What the step sees: the workspace root and the repos read-only; the state directory (state.db,
other runs' checkouts, artifacts, keys) replaced by an empty read-only directory, with only its
own checkout bound back writable (and the mirrors of remote repos read-only, for git); secret
files of ahead.yml read as empty; private /tmp, /var/tmp and /dev/shm. Network, CPU and memory are not limited (docs/SECURITY.md).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

UNSHARE_ENV = "AHEAD_UNSHARE"  # the unshare binary to use (tests point it at a missing one)
LAUNCHER = str(Path(__file__).resolve())
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
        return json.dumps({"workdir": str(self.workdir), "hide": [str(p) for p in self.hide],
                           "blank": [str(p) for p in self.blank],
                           "readonly": [str(p) for p in self.readonly],
                           "reveal": [str(p) for p in self.reveal], "private": list(self.private),
                           "uid": self.uid, "gid": self.gid})


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
            argv = command(["sh", "-c", "touch ok && ! touch ../../denied 2>/dev/null"], plan,
                           unshare, flags)
            try:
                done = subprocess.run(argv, cwd=work, stdin=subprocess.DEVNULL, capture_output=True,
                                      timeout=20, check=False)
            except FileNotFoundError:
                return None, f"{unshare} not found (install util-linux)"
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"cannot run {unshare}: {exc}"
            if done.returncode == 0 and (work / "ok").exists():
                return flags, ""
            why = (done.stderr.decode("utf-8", "replace").strip().splitlines() or
                   [f"exit status {done.returncode}"])[-1]
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


def command(argv: Sequence[str], plan: Plan, unshare: str | None = None,
            flags: Sequence[str] | None = None) -> list[str]:
    """The argv that runs `argv` inside the sandbox of `plan` (call `unavailable()` first)."""
    if flags is None:
        flags = _probed_flags()[0] or BASE_FLAGS
    return [unshare or unshare_path(), *flags, "--", sys.executable, "-I", "-S", LAUNCHER,
            plan.to_json(), "--", *argv]


# -- the launcher: runs inside the new namespaces, before the step --------------------------------

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
CLONE_NEWUSER = 0x10000000


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)

    def mount(self, source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        if self.lib.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                          ctypes.c_ulong(flags), data.encode() if data else None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        if self.lib.unshare(ctypes.c_int(flags)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare: {os.strerror(err)}")


def _mount_plan(libc: _Libc, plan: dict[str, object]) -> None:
    def paths(key: str) -> list[str]:
        value = plan.get(key) or []
        assert isinstance(value, list)
        return [str(p) for p in value]

    workdir = str(plan["workdir"])
    # Hold every source before anything is covered (the workspace may live under /tmp).
    held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in [workdir, *paths("readonly"), *paths("reveal")]
            if os.path.isdir(p)}

    def bind(path: str, readonly: bool) -> None:
        os.makedirs(path, exist_ok=True)
        libc.mount(f"/proc/self/fd/{held[path]}", path, None, MS_BIND | MS_REC)
        if readonly:
            libc.mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

    for path in paths("private"):
        if os.path.isdir(path) and not os.path.islink(path):
            libc.mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in paths("readonly"):
        if path in held:
            bind(path, True)
    for path in paths("blank"):
        if os.path.isfile(path) and not os.path.islink(path):
            libc.mount("/dev/null", path, None, MS_BIND)
            libc.mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    hidden = [p for p in paths("hide") if os.path.isdir(p)]
    for path in hidden:
        libc.mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in paths("reveal"):
        if path in held:
            bind(path, True)
    bind(workdir, False)
    for path in hidden:
        libc.mount("none", path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for fd in held.values():
        os.close(fd)


def _drop(libc: _Libc, uid: int, gid: int) -> None:
    """(the step, after fork) Enter a user namespace of our own, as the engine's uid and gid:
    no capability over the sandbox's mount namespace, so its mounts stay as they are."""
    libc.unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{gid} 0 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def launch(args: list[str]) -> int:
    """`PLAN -- argv...`: make the mounts, run argv as a child, return its exit code."""
    if len(args) < 3 or args[1] != "--":
        print("[ahead] sandbox: usage: sandbox.py PLAN -- argv...", file=sys.stderr)
        return 127
    plan = json.loads(args[0])
    argv = args[2:]
    libc = _Libc()
    try:
        _mount_plan(libc, plan)
    except OSError as exc:
        print(f"[ahead] sandbox: cannot set up the mounts: {exc.strerror or exc}", file=sys.stderr)
        return 126
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # the step's group gets it; wait for the step
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _drop(libc, int(str(plan["uid"])), int(str(plan["gid"])))
            os.chdir(str(plan["workdir"]))  # through the new mounts, not the original directory
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"[ahead] cannot start {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        os._exit(127)
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 127
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
