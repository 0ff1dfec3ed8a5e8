"""The sandbox launcher: run by path as ``python -I -S sandbox_launch.py PLAN -- argv...`` inside
the namespaces core/sandbox.py asks unshare for. Imports only what it needs from the stdlib (it
starts with every sandboxed step); see core/sandbox.py for what it does and why."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

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

    def mount(
        self, source: str, target: str, fstype: str | None, flags: int, data: str | None = None
    ) -> None:
        if (
            self.lib.mount(
                source.encode(),
                target.encode(),
                fstype.encode() if fstype else None,
                ctypes.c_ulong(flags),
                data.encode() if data else None,
            )
            != 0
        ):
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
    held = {
        p: os.open(p, os.O_PATH | os.O_DIRECTORY)
        for p in [workdir, *paths("readonly"), *paths("reveal")]
        if os.path.isdir(p)
    }

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
        libc.mount(
            "none", path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755,size=1m"
        )
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
        print("[ahead] sandbox: usage: sandbox_launch.py PLAN -- argv...", file=sys.stderr)
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
            home = os.environ.get("HOME", "")
            if not home or not os.access(home, os.W_OK):
                # The engine's home is read-only here (its config must not be planted): tools that
                # write caches or config get a private one in the sandbox's own /tmp instead.
                os.makedirs("/tmp/home", mode=0o700, exist_ok=True)
                os.environ["HOME"] = "/tmp/home"
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
