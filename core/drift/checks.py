"""The three checks: `revision` (main ahead of the deployed commit), `files` (a tree of the
repo at the deployed commit against a live directory, compared by `git status` with a private
index per target) and `command` (a command run in a checkout of the deployed commit, its result
read by parsers.py).

Each returns a `Finding` and records nothing: may not depend on the store, the scheduler or the
drift records. A remote live directory is mirrored (mirror.py) before `check_files_local`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import hashlib
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

from core import gitio, secrets
from core.drift.parsers import OUTPUT_CAP, interpret
from core.drift.targets import Finding, Target, main_sha, unknown
from core.errors import GitError
from core.pipeline import DriftSpec
from core.runner import run_step
from core.workspace import Workspace

DIFF_FILE_CAP = 64 * 1024  # bytes of one file read for its diff
DIFF_TOTAL_CAP = 256 * 1024  # characters of diff kept per check
DIFF_FILES = 50  # changed files diffed per check
LIST_CAP = 1000  # paths kept per list (added, removed, changed, unreadable)


def check_revision(ws: Workspace, target: Target) -> Finding:
    """(worker thread) Main ahead of the deployed commit."""
    repo = ws.repo(target.repo)
    head = main_sha(ws, repo)
    if head is None:
        return unknown(f"cannot read {repo.branch} of {repo.name}")
    moved = f"rev:{head}"  # every finding carries it: the target is due again only when refs move
    if target.commit is None:
        return Finding(
            "drifted",
            f"never deployed ({repo.branch} at {head[:7]})",
            {"main": head, "deployed": None, "pending": None},
            f"rev:{head}",
        )
    if target.commit == head:
        return Finding(
            "in_sync",
            f"at {repo.branch} ({head[:7]})",
            {"main": head, "deployed": head, "pending": 0},
            f"rev:{head}",
        )
    try:
        count, oldest = gitio.pending_summary(ws.repo_dir(repo), target.commit, head)
    except GitError as exc:
        failed = unknown(f"git: {exc}")
        failed.fingerprint = moved
        return failed
    if count == 0:  # deployed is not behind main (e.g. main was rewound): nothing pending
        return Finding(
            "in_sync",
            f"nothing pending ({target.commit[:7]} deployed)",
            {"main": head, "deployed": target.commit, "pending": 0},
            f"rev:{head}",
        )
    return Finding(
        "drifted",
        f"{count} commit{'s' if count != 1 else ''} on {repo.branch} not deployed",
        {"main": head, "deployed": target.commit, "pending": count, "oldest_pending_at": oldest},
        f"rev:{head}",
    )


def check_files_local(
    repo_dir: Path,
    private: Path,
    commit: str,
    subpath: str,
    live: Path,
    timeout: float,
    unreadable: list[str] | None = None,
) -> Finding:
    """(worker thread) The tree `subpath` of `commit` against the directory `live`."""
    if not live.is_dir():
        return unknown(f"live directory {live} does not exist or is not a directory")
    if not gitio.live_index(repo_dir, private, commit, subpath):
        return unknown(f"{subpath!r} is not a directory at {commit[:7]}")
    code, entries, err = gitio.live_status(private, live, timeout)
    if not live.is_dir():
        return unknown(f"live directory {live} disappeared during the check")
    if code != 0:
        return unknown(f"git status failed: {err.strip()[-500:]}")
    denied = list(unreadable or [])
    denied += re.findall(r"could not open directory '(.*)': Permission denied", err)
    added, removed, changed = [], [], []
    for status, path in entries:
        if status in ("??", "!!"):
            added.append(path)
        elif status[1] == "D":
            removed.append(path)
        elif status[1] in "MT":
            changed.append(path)
    if denied:  # what we could not read is not "removed": it is unknown
        prefixes = tuple(d.rstrip("/") + "/" for d in denied)
        removed = [p for p in removed if p not in denied and not p.startswith(prefixes)]
    diff, fingerprint_parts, unread = _diffs(private, live, changed)
    denied += unread
    changed = [p for p in changed if p not in unread]
    detail: dict[str, Any] = {
        "commit": commit,
        "live": str(live),
        "path": subpath,
        "added": added[:LIST_CAP],
        "removed": removed[:LIST_CAP],
        "changed": changed[:LIST_CAP],
        "unreadable": sorted(set(denied))[:LIST_CAP],
        "counts": {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unreadable": len(set(denied)),
        },
        "diff": diff,
    }
    if added or removed or changed:
        parts = [
            f"{len(changed)} changed" if changed else "",
            f"{len(added)} added" if added else "",
            f"{len(removed)} removed" if removed else "",
        ]
        summary = ", ".join(p for p in parts if p)
        if denied:
            summary += f"; {len(set(denied))} unreadable"
        digest = hashlib.sha256()
        for part in (
            sorted(f"+{p}" for p in added) + sorted(f"-{p}" for p in removed) + fingerprint_parts
        ):
            digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
        return Finding("drifted", summary, detail, digest.hexdigest())
    if denied:
        return Finding("unknown", f"cannot read {len(set(denied))} path(s)", detail)
    return Finding("in_sync", f"matches {subpath} at {commit[:7]}", detail)


def _diffs(private: Path, live: Path, changed: list[str]) -> tuple[str, list[str], list[str]]:
    """(unified diff text, fingerprint parts, unreadable paths) for the changed files."""
    desired = gitio.desired_blobs(private, changed[:DIFF_FILES], DIFF_FILE_CAP)
    out: list[str] = []
    size = 0
    parts: list[str] = []
    unread: list[str] = []
    for i, path in enumerate(changed):
        try:
            kind, data = read_beneath(live, path, DIFF_FILE_CAP if i < DIFF_FILES else 0)
        except PermissionError:
            unread.append(path)
            continue
        except OSError as exc:
            kind, data = "error", exc.strerror.encode() if exc.strerror else b"?"
        parts.append(f"~{path}:{kind}:{hashlib.sha256(data).hexdigest()}")
        if i >= DIFF_FILES or size >= DIFF_TOTAL_CAP:
            continue
        want = desired.get(path)
        if kind == "link":
            text = f"--- {path} (desired)\n+++ {path} (live)\n live is a symbolic link to {data.decode('utf-8', 'replace')}\n"
        elif want is None:
            text = f"--- {path}: too large or not a file in git; not diffed\n"
        elif kind != "file":
            text = f"--- {path}: live is a {kind}\n"
        elif b"\0" in want[:8192] or b"\0" in data[:8192]:
            text = f"Binary file {path} differs ({len(want)} bytes in git, {len(data)} live)\n"
        else:
            text = "".join(
                difflib.unified_diff(
                    want.decode("utf-8", "replace").splitlines(keepends=True),
                    data.decode("utf-8", "replace").splitlines(keepends=True),
                    fromfile=f"a/{path}",
                    tofile=f"b/{path}",
                )
            )
            if not text:
                text = f"--- {path}: same content, mode differs\n"
        out.append(text if text.endswith("\n") else text + "\n")
        size += len(text)
    diff = "".join(out)
    if len(diff) > DIFF_TOTAL_CAP or len(changed) > DIFF_FILES:
        diff = (
            diff[:DIFF_TOTAL_CAP]
            + f"\n[diff cut: first {min(len(changed), DIFF_FILES)} of {len(changed)} files]\n"
        )
    return diff, parts, unread


def read_beneath(root: Path, rel: str, cap: int) -> tuple[str, bytes]:
    """("file" | "link" | "dir" | "other", bytes) of `root/rel`, never following a link: each
    directory is opened with O_NOFOLLOW from its parent, so a path swapped for a link after git
    listed it cannot lead outside `root`. Links give their target text; files their first
    `cap` bytes (a FIFO is not opened for reading)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise OSError(errno.EINVAL, "bad path")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        info = os.lstat(parts[-1], dir_fd=fd)
        if stat.S_ISLNK(info.st_mode):
            return "link", os.readlink(parts[-1], dir_fd=fd).encode("utf-8", "surrogateescape")
        if stat.S_ISDIR(info.st_mode):
            return "dir", b""
        if not stat.S_ISREG(info.st_mode):
            return "other", b""
        leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        try:
            chunks, left = [], cap
            while left > 0:
                chunk = os.read(leaf, min(left, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            if cap == 0:  # fingerprint only: size and mtime
                return "file", f"{info.st_size}:{info.st_mtime_ns}".encode()
            return "file", b"".join(chunks)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


async def check_command(
    ws: Workspace, target: Target, spec: DriftSpec, repo_dir: Path, base: Path, timeout: float
) -> Finding:
    """A `command` target: its command run in a fresh checkout of the deployed commit under
    `base` (removed after), given no secret and printing none, its result read by
    parsers.interpret."""
    work = base / f"checkout-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(gitio.worktree_add, repo_dir, work, target.commit or "")
    await asyncio.to_thread(gitio.verify_checkout, repo_dir, work, target.commit or "")
    lines: list[str] = []
    size = 0

    async def sink(batch: list[tuple[int, float, str]]) -> None:
        nonlocal size
        for _, _, text in batch:
            lines.append(text)
            size += len(text) + 1
        while size > OUTPUT_CAP and len(lines) > 1:
            size -= len(lines.pop(0)) + 1

    async def started(pid: int) -> None:
        return None

    sources = list(ws.secrets.values())
    env = secrets.inherited_env(sources)  # a drift command is given no secret, as steps
    env.update(spec.env)
    masker = await asyncio.to_thread(secrets.masker_for, sources)  # and prints none
    env.update(
        {
            "AHEAD_REPO": target.repo,
            "AHEAD_ENVIRONMENT": target.environment,
            "AHEAD_COMMIT": target.commit or "",
            "AHEAD_DRIFT_TARGET": target.name,
            "AHEAD_WORKSPACE": str(ws.root),
            "TF_IN_AUTOMATION": "1",
        }
    )
    try:
        result = await run_step(
            list(spec.argv),
            work,
            env,
            sink,
            timeout,
            asyncio.Event(),
            min(ws.settings.cancel_grace, 5.0),
            started,
            masker,
        )
    finally:
        with contextlib.suppress(GitError, OSError):
            await asyncio.to_thread(gitio.worktree_remove, repo_dir, work)
    output = "\n".join(lines)
    if result.error and "timed out" in result.error:
        return Finding(
            "unknown",
            f"the command timed out after {timeout:.0f}s",
            {"exit_code": None, "output": output, "parse": spec.parse},
        )
    if result.error and result.exit_code is None:
        return Finding(
            "unknown", result.error, {"exit_code": None, "output": output, "parse": spec.parse}
        )
    return interpret(spec.parse, result.exit_code, output)
