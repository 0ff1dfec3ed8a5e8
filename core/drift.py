"""Drift: the live state of each environment against git at its deployed commit.

Targets, per (repo, environment):
- `revision`, built in for every environment a repo has deployed to: main ahead of the
  deployed commit (the pending commits) is drift of the whole environment. (An environment never
  deployed to shows as "never" in the overview; it has no live state to compare.)
- `files`, from the pipeline file's `drift:` at the deployed commit: a directory of the repo
  against a live directory on this machine or on a host over SSH. Local trees are compared by
  `git status` with a private index per target (see core/gitio.py "live trees"); remote trees
  are first mirrored over SFTP (only entries whose size, mtime or mode changed are fetched; no
  link is ever followed), then compared the same way.
- `command`, also from `drift:`: a command run in a checkout of the deployed commit, with the
  exit code protocol of `terraform plan -detailed-exitcode` (0 in sync, 2 drifted, anything
  else unknown); terraform and ansible output is summarised.

A check ends `in_sync`, `drifted` or `unknown` (it could not tell: never shown as in sync). The
store keeps the latest finding per target (`drift`), each check (`drift_checks`, the last 100
per target) and acknowledgements (`drift_acks`: valid while the drift's fingerprint is the one
acknowledged and the expiry has not passed). A change of state or of what drifted is audited.

The engine checks on schedule (`every:`, default `settings.drift_interval`), right after each
deploy; the CLI and consoles check on demand in their own process (`ahead drift check`, the
Drift screen's `c`). A per-target file lock keeps two checks of one target from overlapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import gitio, runstate, secrets
from core.aio import wait_at_most
from core.errors import ConfigError, CoreError, GitError, InvalidRequest, NotFound
from core.pipeline import PIPELINE_PATH, DriftSpec, Pipeline
from core.pipeline import parse as parse_pipeline
from core.runner import run_step
from core.store.db import AsyncStore, Row, Store
from core.workspace import RepoConfig, Workspace

log = logging.getLogger("ahead.drift")

STATES = ("in_sync", "drifted", "unknown")
REVISION = "revision"
DIFF_FILE_CAP = 64 * 1024      # bytes of one file read for its diff
DIFF_TOTAL_CAP = 256 * 1024    # characters of diff kept per check
DIFF_FILES = 50                # changed files diffed per check
LIST_CAP = 1000                # paths kept per list (added, removed, changed, unreadable)
OUTPUT_CAP = 256 * 1024        # characters of command output kept
KEEP_CHECKS = 100              # history kept per target


@dataclass(frozen=True)
class Target:
    """One thing checked: (repo, environment, name), with its spec and the deployed commit."""

    repo: str
    environment: str
    spec: DriftSpec | None       # None: the built-in revision target
    commit: str | None           # deployed commit (None: never deployed)
    main: str | None = None      # revision: the head of main when the target was listed

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else REVISION

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec else REVISION

    @property
    def key(self) -> str:
        """A file-name-safe key for the target's private state."""
        raw = f"{self.repo}\0{self.environment}\0{self.name}"
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.repo}-{self.environment}-{self.name}")[:80]
        return f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


@dataclass
class Finding:
    state: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def unknown(summary: str, **detail: Any) -> Finding:
    return Finding("unknown", summary, {"error": summary, **detail})


# -- targets ----------------------------------------------------------------------------------


def deployed_commits(store: Store) -> dict[tuple[str, str], str]:
    """(store thread) The deployed commit of each (repo, environment)."""
    return {(r["repo"], r["environment"]): r["commit_sha"] for r in store.query(
        "SELECT d.repo, d.environment, d.commit_sha FROM deployments d JOIN (SELECT MAX(id) AS id "
        "FROM deployments GROUP BY repo, environment) last ON last.id = d.id")}


PipelineCache = dict[tuple[str, str], "Pipeline | ConfigError | None"]


def discover(ws: Workspace, deployed: dict[tuple[str, str], str], cache: PipelineCache | None = None) -> list[Target]:
    """(worker thread) Every target of every repo, for each environment it has deployed to:
    revision, and the `drift:` specs of the pipeline at the deployed commit. Pipelines are read
    from git once per commit (`cache`: commits never change); a repo that never deployed costs a
    read of its ref files and nothing else (1,000 idle repos must stay cheap)."""
    cache = {} if cache is None else cache
    targets: list[Target] = []
    for repo in ws.repos:
        envs = [e for e in ws.environments if (repo.name, e) in deployed]
        if not envs:
            continue
        main = _main_sha(ws, repo)
        for env in envs:
            commit = deployed[(repo.name, env)]
            targets.append(Target(repo.name, env, None, commit, main))
            pipeline = _pipeline_at(ws, repo, commit, cache)
            if isinstance(pipeline, Pipeline):
                targets.extend(Target(repo.name, env, spec, commit) for spec in pipeline.drift.get(env, ()))
    if len(cache) > 20_000:
        cache.clear()
    return targets


def _main_sha(ws: Workspace, repo: RepoConfig) -> str | None:
    try:
        _, common = gitio.git_dirs(ws.repo_dir(repo))
        return gitio.read_branches(common).get(repo.branch)
    except (GitError, OSError):
        return None


def _pipeline_at(ws: Workspace, repo: RepoConfig, sha: str | None,
                 cache: PipelineCache) -> Pipeline | ConfigError | None:
    if not sha:
        return None
    if (repo.name, sha) in cache:
        return cache[(repo.name, sha)]
    label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
    found: Pipeline | ConfigError | None
    try:
        text = gitio.read_file(ws.repo_dir(repo), sha, PIPELINE_PATH)
        found = parse_pipeline(text, label, ws.environments) if text is not None else None
    except ConfigError as exc:
        found = exc
    except GitError:
        return None  # not cached: git may answer next time
    cache[(repo.name, sha)] = found
    return found


# -- checks -----------------------------------------------------------------------------------


def check_revision(ws: Workspace, target: Target) -> Finding:
    """(worker thread) Main ahead of the deployed commit."""
    repo = ws.repo(target.repo)
    head = _main_sha(ws, repo)
    if head is None:
        return unknown(f"cannot read {repo.branch} of {repo.name}")
    moved = f"rev:{head}"  # every finding carries it: the target is due again only when refs move
    if target.commit is None:
        return Finding("drifted", f"never deployed ({repo.branch} at {head[:7]})",
                       {"main": head, "deployed": None, "pending": None}, f"rev:{head}")
    if target.commit == head:
        return Finding("in_sync", f"at {repo.branch} ({head[:7]})", {"main": head, "deployed": head, "pending": 0},
                       f"rev:{head}")
    try:
        count, oldest = gitio.pending_summary(ws.repo_dir(repo), target.commit, head)
    except GitError as exc:
        failed = unknown(f"git: {exc}")
        failed.fingerprint = moved
        return failed
    if count == 0:  # deployed is not behind main (e.g. main was rewound): nothing pending
        return Finding("in_sync", f"nothing pending ({target.commit[:7]} deployed)",
                       {"main": head, "deployed": target.commit, "pending": 0}, f"rev:{head}")
    return Finding("drifted", f"{count} commit{'s' if count != 1 else ''} on {repo.branch} not deployed",
                   {"main": head, "deployed": target.commit, "pending": count, "oldest_pending_at": oldest},
                   f"rev:{head}")


def check_files_local(repo_dir: Path, private: Path, commit: str, subpath: str, live: Path,
                      timeout: float, unreadable: list[str] | None = None) -> Finding:
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
        "commit": commit, "live": str(live), "path": subpath,
        "added": added[:LIST_CAP], "removed": removed[:LIST_CAP], "changed": changed[:LIST_CAP],
        "unreadable": sorted(set(denied))[:LIST_CAP],
        "counts": {"added": len(added), "removed": len(removed), "changed": len(changed),
                   "unreadable": len(set(denied))},
        "diff": diff,
    }
    if added or removed or changed:
        parts = [f"{len(changed)} changed" if changed else "", f"{len(added)} added" if added else "",
                 f"{len(removed)} removed" if removed else ""]
        summary = ", ".join(p for p in parts if p)
        if denied:
            summary += f"; {len(set(denied))} unreadable"
        digest = hashlib.sha256()
        for part in sorted(f"+{p}" for p in added) + sorted(f"-{p}" for p in removed) + fingerprint_parts:
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
            text = "".join(difflib.unified_diff(
                want.decode("utf-8", "replace").splitlines(keepends=True),
                data.decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"a/{path}", tofile=f"b/{path}"))
            if not text:
                text = f"--- {path}: same content, mode differs\n"
        out.append(text if text.endswith("\n") else text + "\n")
        size += len(text)
    diff = "".join(out)
    if len(diff) > DIFF_TOTAL_CAP or len(changed) > DIFF_FILES:
        diff = diff[:DIFF_TOTAL_CAP] + f"\n[diff cut: first {min(len(changed), DIFF_FILES)} of {len(changed)} files]\n"
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


TERRAFORM_PLAN = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
TERRAFORM_ITEM = re.compile(r"^\s*# (\S+) (will be|must be) (.+)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ANSIBLE_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def interpret(parse: str, exit_code: int | None, output: str) -> Finding:
    """A command's result: exit codes as `terraform plan -detailed-exitcode` (0 in sync,
    2 drifted, else unknown), with terraform's plan or ansible's recap summarised."""
    clean = ANSI.sub("", output)
    detail: dict[str, Any] = {"exit_code": exit_code, "output": output[-OUTPUT_CAP:], "parse": parse}
    items: list[str] = []
    if parse == "ansible":
        recaps = [m.groups() for m in (ANSIBLE_RECAP.match(line) for line in clean.splitlines()) if m]
        current = ""
        for line in clean.splitlines():
            if line.startswith("TASK ["):
                current = line[6:line.rfind("]")] if "]" in line else line[6:]
            elif line.startswith("changed:") and current and current not in items:
                items.append(current)
        detail["items"] = items
        if exit_code != 0 and exit_code is not None and not recaps or exit_code is None:
            return Finding("unknown", f"ansible-playbook failed (exit {exit_code})", detail)
        if any(int(r[3]) or int(r[4]) for r in recaps):
            return Finding("unknown", "hosts unreachable or tasks failed", detail)
        changed = sum(int(r[2]) for r in recaps)
        if not recaps:
            return Finding("unknown", "no PLAY RECAP in the output", detail)
        if changed:
            return Finding("drifted", f"{changed} task(s) would change", detail,
                           hashlib.sha256("\n".join(items).encode()).hexdigest())
        return Finding("in_sync", "no task would change", detail)
    if parse == "terraform":
        items = [f"{m[1]} {m[2]} {m[3]}" for m in (TERRAFORM_ITEM.match(line) for line in clean.splitlines()) if m]
        detail["items"] = items
    if exit_code == 0:
        return Finding("in_sync", "no changes" if parse == "terraform" else "exit 0: in sync", detail)
    if exit_code == 2:
        plan = TERRAFORM_PLAN.search(clean) if parse == "terraform" else None
        summary = (f"{plan[1]} to add, {plan[2]} to change, {plan[3]} to destroy" if plan
                   else "exit 2: drifted")
        basis = "\n".join(items) if items else clean
        return Finding("drifted", summary, detail, hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest())
    return Finding("unknown", f"the command failed (exit {exit_code})" if exit_code is not None
                   else "the command did not finish", detail)


# -- SSH mirror -------------------------------------------------------------------------------


async def mirror_remote(state_dir: Path, host: str, remote: str, mirror: Path, timeout: float) -> list[str]:
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
                    name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode(
                        "utf-8", "surrogateescape")
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
                await asyncio.to_thread(_place, mirror, child, data=data if isinstance(data, bytes) else data.encode(),
                                        mode=mode)

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


def _finish_mirror(mirror: Path, manifest_path: Path, seen: dict[str, list[Any]], denied: list[str]) -> None:
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


def _place(mirror: Path, rel: str, *, data: bytes | None = None, mode: int = 0o644, link: str | None = None) -> None:
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


# -- the checker ------------------------------------------------------------------------------


class DriftChecker:
    """Runs checks and records them. One per engine (scheduled) or per client (on demand)."""

    def __init__(self, ws: Workspace, db: AsyncStore, parallel: int | None = None) -> None:
        self.ws = ws
        self.db = db
        self.limit = asyncio.Semaphore(parallel or ws.settings.drift_parallel)
        self.root = ws.state_dir / "drift"
        self._requests: asyncio.Queue[tuple[str | None, str | None, str | None, str]] = asyncio.Queue()
        self._pipelines: PipelineCache = {}

    async def targets(self, repo: str | None = None, environment: str | None = None,
                      name: str | None = None) -> list[Target]:
        if repo is not None:
            self.ws.repo(repo)  # NotFound names the known repos
        if environment is not None and environment not in self.ws.environments:
            raise NotFound(f"no environment named {environment!r} (known: {', '.join(self.ws.environments)})")
        deployed = await self.db.call(deployed_commits, self.db.store)
        found = await asyncio.to_thread(discover, self.ws, deployed, self._pipelines)
        chosen = [t for t in found if (repo is None or t.repo == repo)
                  and (environment is None or t.environment == environment) and (name is None or t.name == name)]
        if name is not None and not chosen:
            raise NotFound(f"no drift target {name!r} for {repo}/{environment}")
        return chosen

    async def check(self, targets: list[Target], reason: str) -> list[tuple[Target, Finding]]:
        """Check targets in parallel (capped); each records its finding. Never raises for a
        target: a failure is that target's `unknown`. Revision targets (a ref read and at most
        one `git rev-list` each) are checked together and recorded in one transaction."""
        revisions = [t for t in targets if t.spec is None]
        others = [t for t in targets if t.spec is not None]
        results = list(await asyncio.gather(*(self._check_one(t, reason) for t in others)))
        if revisions:
            started = time.time()
            found = await asyncio.to_thread(lambda: [(t, check_revision(self.ws, t)) for t in revisions])
            await self.db.call(record_many, self.db.store, found, reason, started, time.time())
            results += found
        return results

    async def _check_one(self, target: Target, reason: str) -> tuple[Target, Finding]:
        spec = target.spec
        timeout = (spec.timeout if spec and spec.timeout else None) or self.ws.settings.drift_timeout
        async with self.limit:
            started = time.time()
            try:
                async with asyncio.timeout(timeout + 5):
                    finding = await self._run(target, timeout)
            except TimeoutError:
                finding = unknown(f"the check took longer than {timeout:.0f}s")
            except CoreError as exc:
                finding = unknown(str(exc))
            except OSError as exc:
                finding = unknown(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "))
            except Exception as exc:  # a bug: recorded as unknown (never in sync), and logged
                log.exception("drift check of %s/%s/%s failed", target.repo, target.environment, target.name)
                finding = unknown(f"the check failed: {type(exc).__name__}")
            finished = time.time()
        await self.db.call(record, self.db.store, target, finding, reason, started, finished)
        return target, finding

    async def _run(self, target: Target, timeout: float) -> Finding:
        spec = target.spec
        if spec is None:
            return await asyncio.to_thread(check_revision, self.ws, target)
        if target.commit is None:
            return unknown("nothing deployed yet")
        base = self.root / target.key
        base.mkdir(parents=True, exist_ok=True)
        repo_dir = self.ws.repo_dir(self.ws.repo(target.repo))
        async with _Lock(base / "lock"):
            if spec.kind == "files":
                unreadable: list[str] = []
                live = Path(spec.live) if os.path.isabs(spec.live) else self.ws.root / spec.live
                if spec.host:
                    live = base / "mirror"
                    unreadable = await mirror_remote(self.ws.state_dir, spec.host, spec.live, live, timeout)
                finding = await asyncio.to_thread(check_files_local, repo_dir, base / "git", target.commit,
                                                  spec.path, live, timeout, unreadable)
                if spec.host:
                    finding.detail["live"] = f"{spec.host}:{spec.live}"
                return finding
            return await self._command(target, spec, repo_dir, base, timeout)

    async def _command(self, target: Target, spec: DriftSpec, repo_dir: Path, base: Path, timeout: float) -> Finding:
        work = base / f"checkout-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(gitio.worktree_add, repo_dir, work, target.commit or "")
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

        sources = list(self.ws.secrets.values())
        hidden = secrets.hidden_sources(sources)  # a drift command is given no secret, as steps
        env = {k: v for k, v in os.environ.items() if not k.startswith("AHEAD_") and k not in hidden}
        env.update(spec.env)
        masker = await asyncio.to_thread(secrets.masker_for, sources)  # and prints none
        env.update({"AHEAD_REPO": target.repo, "AHEAD_ENVIRONMENT": target.environment,
                    "AHEAD_COMMIT": target.commit or "", "AHEAD_DRIFT_TARGET": target.name,
                    "AHEAD_WORKSPACE": str(self.ws.root), "TF_IN_AUTOMATION": "1"})
        try:
            result = await run_step(list(spec.argv), work, env, sink, timeout, asyncio.Event(),
                                    min(self.ws.settings.cancel_grace, 5.0), started, masker)
        finally:
            with contextlib.suppress(GitError, OSError):
                await asyncio.to_thread(gitio.worktree_remove, repo_dir, work)
        output = "\n".join(lines)
        if result.error and "timed out" in result.error:
            return Finding("unknown", f"the command timed out after {timeout:.0f}s",
                           {"exit_code": None, "output": output, "parse": spec.parse})
        if result.error and result.exit_code is None:
            return Finding("unknown", result.error, {"exit_code": None, "output": output, "parse": spec.parse})
        return interpret(spec.parse, result.exit_code, output)

    # -- the engine's loop --------------------------------------------------------------------

    def request(self, repo: str | None, environment: str | None, name: str | None, reason: str) -> None:
        self._requests.put_nowait((repo, environment, name, reason))

    async def run(self) -> None:
        """(engine task) Check what is due, what was asked for, and after each deploy."""
        targets: list[Target] = []
        refreshed = time.time() - 25  # the first look 5 s after start: not in the engine's start-up
        running: dict[str, asyncio.Task[Any]] = {}

        def start(chosen: list[Target], reason: str) -> None:
            for t in chosen:
                key = f"{t.repo}\0{t.environment}\0{t.name}"
                if key not in running:
                    running[key] = asyncio.create_task(self.check([t], reason), name=key)
                    running[key].add_done_callback(done)

        def done(task: asyncio.Task[Any]) -> None:
            running.pop(task.get_name(), None)

        try:
            while True:
                now = time.time()
                if now - refreshed > 30 or not self._requests.empty():
                    with contextlib.suppress(CoreError, OSError):
                        targets = await self.targets()
                        refreshed = now
                while not self._requests.empty():
                    repo, env, name, reason = self._requests.get_nowait()
                    start([t for t in targets if (repo is None or t.repo == repo) and t.spec is not None
                           and (env is None or t.environment == env) and (name is None or t.name == name)], reason)
                    # revision targets of the repo are due by the rule below once the refs moved
                try:
                    rows = await self.db.call(self.db.store.query, "SELECT repo, environment, target, "
                                              "checked_at, commit_sha, fingerprint FROM drift")
                except CoreError as exc:  # e.g. the store is unreadable for a moment: try again
                    log.warning("drift: cannot read the last checks: %s", exc)
                    rows = []
                    targets = []
                last = {(r["repo"], r["environment"], r["target"]): r for r in rows}
                due = [t for t in targets if self._due(t, last.get((t.repo, t.environment, t.name)), now)]
                start([t for t in due if t.spec is not None], "schedule")
                revisions = [t for t in due if t.spec is None and REVISION not in running]
                if revisions:  # one batch: with many repos, one transaction instead of thousands
                    running[REVISION] = asyncio.create_task(self.check(revisions, "refs moved"), name=REVISION)
                    running[REVISION].add_done_callback(done)
                item = await wait_at_most(self._requests.get(), 5.0)
                if item is not None:
                    self._requests.put_nowait(item)
        finally:
            for task in running.values():
                task.cancel()

    def _due(self, target: Target, row: Row | None, now: float) -> bool:
        """Files and command targets: every `every:` (settings.drift_interval by default).
        Revision: when the deployed commit or main moved since its last check (nothing else can
        change it), and at least every settings.drift_revision_interval."""
        if row is None:
            return True
        if target.spec is None:
            moved = row["commit_sha"] != target.commit or (
                target.main is not None and row["fingerprint"] != f"rev:{target.main}")
            return bool(moved or now - row["checked_at"] >= self.ws.settings.drift_revision_interval)
        every = target.spec.every or self.ws.settings.drift_interval
        return bool(now - row["checked_at"] >= every)


class _Lock:
    """An exclusive flock on a file: two checks of one target never overlap (any process). Taken
    without blocking the event loop: while another process checks the target, this one waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    async def __aenter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                await asyncio.sleep(0.2)
            except BaseException:
                os.close(self.fd)
                raise

    async def __aexit__(self, *exc: object) -> None:
        os.close(self.fd)


# -- store ------------------------------------------------------------------------------------


def record_many(store: Store, found: list[tuple[Target, Finding]], reason: str, started: float,
                finished: float) -> None:
    """(store thread) `record` for many findings, in one transaction."""
    with store.transaction():
        for target, finding in found:
            record(store, target, finding, reason, started, finished)


def record(store: Store, target: Target, finding: Finding, reason: str, started: float, finished: float) -> None:
    """(store thread) Keep a check; move the target's state; audit a change of state or of what
    drifted (the detective control: every drift finding is on record)."""
    detail = json.dumps(finding.detail, default=str)
    with store.transaction() as conn:
        prev = conn.execute("SELECT * FROM drift WHERE repo = ? AND environment = ? AND target = ?",
                            (target.repo, target.environment, target.name)).fetchone()
        cur = conn.execute(
            "INSERT INTO drift_checks (repo, environment, target, kind, state, summary, fingerprint, detail, "
            "commit_sha, reason, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (target.repo, target.environment, target.name, target.kind, finding.state, finding.summary,
             finding.fingerprint, detail, target.commit, reason, started, finished))
        check_id = cur.lastrowid
        changed = prev is None or prev["state"] != finding.state or prev["fingerprint"] != finding.fingerprint
        since = finished if prev is None or prev["state"] != finding.state else prev["since"]
        conn.execute(
            "INSERT INTO drift (repo, environment, target, kind, state, summary, fingerprint, commit_sha, since, "
            "checked_at, last_check) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (repo, environment, target) DO UPDATE SET kind = excluded.kind, state = excluded.state, "
            "summary = excluded.summary, fingerprint = excluded.fingerprint, commit_sha = excluded.commit_sha, "
            "since = excluded.since, checked_at = excluded.checked_at, last_check = excluded.last_check",
            (target.repo, target.environment, target.name, target.kind, finding.state, finding.summary,
             finding.fingerprint, target.commit, since, finished, check_id))
        conn.execute("DELETE FROM drift_checks WHERE repo = ? AND environment = ? AND target = ? AND id <= "
                     "(SELECT id FROM drift_checks WHERE repo = ? AND environment = ? AND target = ? "
                     "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                     (target.repo, target.environment, target.name) * 2 + (KEEP_CHECKS,))
        # Revision drift is the pipeline's own lag (in the run history already): not audited.
        if changed and target.kind != REVISION and not (prev is None and finding.state == "in_sync"):
            action = {"in_sync": "drift.resolved", "drifted": "drift.detected", "unknown": "drift.unknown"}[finding.state]
            if prev is not None and prev["state"] == "drifted" and finding.state == "drifted":
                action = "drift.changed"
            store.audit(runstate.ENGINE, action, f"{target.repo}/{target.environment}/{target.name}", {
                "kind": target.kind, "summary": finding.summary, "commit": target.commit,
                "before": prev["state"] if prev else None, "check": check_id})
        store.event("drift.checked", target.repo, None, environment=target.environment, target=target.name,
                    state=finding.state, changed=changed)


def listing(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """(store thread) Every target's latest finding with its live acknowledgement, if any."""
    now = time.time() if now is None else now
    rows = store.query("SELECT * FROM drift ORDER BY repo, environment, target = 'revision' DESC, target")
    acks = _acks(store, now)
    return [_item(row, acks.get((row["repo"], row["environment"], row["target"]))) for row in rows]


def _acks(store: Store, now: float) -> dict[tuple[str, str, str], Row]:
    found: dict[tuple[str, str, str], Row] = {}
    for row in store.query("SELECT a.* FROM drift_acks a JOIN drift d ON d.repo = a.repo AND "
                           "d.environment = a.environment AND d.target = a.target AND "
                           "d.fingerprint = a.fingerprint AND d.state = 'drifted' WHERE a.expires_at > ? "
                           "ORDER BY a.id", (now,)):
        found[(row["repo"], row["environment"], row["target"])] = row
    return found


def _item(row: Row, ack: Row | None) -> dict[str, Any]:
    item = {k: row[k] for k in ("repo", "environment", "target", "kind", "state", "summary", "commit_sha",
                                "since", "checked_at")}
    item["acknowledged"] = None if ack is None else {
        "by": ack["actor"], "reason": ack["reason"], "at": ack["created_at"], "until": ack["expires_at"]}
    return item


def detail(store: Store, repo: str, environment: str, target: str | None = None) -> list[dict[str, Any]]:
    """(store thread) Each target of (repo, environment) (or the one named): latest finding, the
    detail of its last check, and its history (newest first)."""
    rows = store.query("SELECT * FROM drift WHERE repo = ? AND environment = ? AND (? IS NULL OR target = ?) "
                       "ORDER BY target = 'revision' DESC, target", (repo, environment, target, target))
    if not rows:
        raise NotFound(f"no drift check recorded for {repo}/{environment}" + (f" target {target!r}" if target else "")
                       + " (run: ahead drift check)")
    acks = _acks(store, time.time())
    result = []
    for row in rows:
        item = _item(row, acks.get((row["repo"], row["environment"], row["target"])))
        last = store.query_one("SELECT detail FROM drift_checks WHERE id = ?", (row["last_check"],))
        item["detail"] = json.loads(last["detail"]) if last else {}
        item["history"] = [dict(h) for h in store.query(
            "SELECT id, state, summary, reason, started_at, finished_at, commit_sha FROM drift_checks "
            "WHERE repo = ? AND environment = ? AND target = ? ORDER BY id DESC LIMIT 50",
            (repo, environment, row["target"]))]
        result.append(item)
    return result


def acknowledge(store: Store, repo: str, environment: str, target: str | None, reason: str,
                seconds: float, actor: str) -> list[str]:
    """(store thread) Acknowledge the current drift of the target(s): valid until it expires or
    the drift changes. Returns the targets acknowledged.

    Raises:
        InvalidRequest: no reason, or nothing drifted to acknowledge.
    """
    if not reason.strip():
        raise InvalidRequest("an acknowledgement needs a reason (--reason TEXT)")
    if not 0 < seconds <= 90 * 86400:
        raise InvalidRequest("an acknowledgement lasts more than 0 and at most 90 days")
    now = time.time()
    with store.transaction() as conn:
        rows = conn.execute("SELECT * FROM drift WHERE repo = ? AND environment = ? AND state = 'drifted' "
                            "AND (? IS NULL OR target = ?)", (repo, environment, target, target)).fetchall()
        if not rows:
            raise InvalidRequest(f"nothing drifted to acknowledge in {repo}/{environment}"
                                 + (f" target {target!r}" if target else ""))
        for row in rows:
            conn.execute("INSERT INTO drift_acks (repo, environment, target, fingerprint, reason, actor, "
                         "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (repo, environment, row["target"], row["fingerprint"], reason, actor, now, now + seconds))
            store.audit(actor, "drift.acknowledge", f"{repo}/{environment}/{row['target']}", {
                "reason": reason, "until": now + seconds, "summary": row["summary"]})
        store.event("drift.acknowledged", repo, None, environment=environment)
    return [r["target"] for r in rows]


def worst(states: list[str]) -> str | None:
    """The state an overview shows for several targets: drifted > unknown > in_sync."""
    for state in ("drifted", "unknown", "in_sync"):
        if state in states:
            return state
    return None
