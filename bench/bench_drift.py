"""Drift scan benchmarks (issue 5, baselines.md T4/T5), each beside a same-run baseline.

A repo with N files (10,000 and 100,000) is committed; its tree is copied to a live directory
and 7 changes are made (5 files modified, 1 removed, 1 added). Then, interleaved:
- warm: `core.drift.check_files_local` (what the engine runs: git status through the target's
  private index, then diffs of the changed files) against plain `git status --porcelain -uall`
  with a warm index of the same tree and the live directory as work tree. Target <= 1.5x.
- first scan: the same with a new private dir (commit-tree, read-tree, status) against
  `read-tree` + `git status` on a new index. Target <= 1.1x (+ the commit-tree we add).
- read-and-hash: a Python walk that reads and hashes every live file as a git blob and compares
  with `git ls-tree -r` (informational: what the git index saves us).
- over SSH (10,000 files): a warm `mirror_remote` + check against an asyncssh SFTP server on
  127.0.0.1, beside a bare SFTP listing of the same tree with the same client (target <= 1.3x,
  T5's "one listing, rehash only what changed"); the first mirror (every file fetched) is info.
Every measurement also asserts that exactly the 7 changes were found.

    .venv/bin/python bench/bench_drift.py [--root /tmp/ahead-bench] [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncssh
from common import git_env, interleaved, print_section, row, run, summary, write_results

from core import drift, gitio, sshclient

EXPECTED = {"changed": 5, "removed": 1, "added": 1}
SERVER = """
import asyncio, sys, asyncssh
state = sys.argv[1]
client = asyncssh.import_public_key(open(state + '/client.pub', 'rb').read())
class Server(asyncssh.SSHServer):
    def begin_auth(self, username): return True
    def public_key_auth_supported(self): return True
    def validate_public_key(self, username, key): return key.public_data == client.public_data
async def main():
    server = await asyncssh.create_server(Server, '127.0.0.1', 0, server_host_keys=[state + '/host_key'],
                                          sftp_factory=asyncssh.SFTPServer)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def build(root: Path, n: int) -> tuple[Path, str, Path]:
    """(repo, commit, live dir) with n files in 100-file directories; live has the 7 changes."""
    base = root / f"drift-{n}"
    repo, live = base / "repo", base / "live"
    if not (base / "done").exists():
        shutil.rmtree(base, ignore_errors=True)
        repo.mkdir(parents=True)
        run(["git", "init", "-q", "-b", "main", str(repo)])
        for i in range(n):
            d = repo / f"d{i // 100:04d}"
            if i % 100 == 0:
                d.mkdir()
            (d / f"f{i:06d}.txt").write_text(f"file {i}\n" + "x" * (i % 200) + "\n")
        run(["git", "-C", str(repo), "add", "-A"])
        run(["git", "-C", str(repo), "commit", "-q", "-m", "tree"])
        (base / "done").write_text("1")
    sha = run(["git", "-C", str(repo), "rev-parse", "HEAD"]).stdout.decode().strip()
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir()
    archive = run(["git", "-C", str(repo), "archive", "--format=tar", "HEAD"]).stdout
    run(["tar", "-x", "-C", str(live)], input=archive)
    for k in range(5):
        with open(live / f"d{k * 7:04d}" / f"f{k * 700 + 3:06d}.txt", "a") as f:
            f.write("changed by hand\n")
    (live / "d0001" / "f000150.txt").unlink()
    (live / "d0002" / "added.txt").write_text("new\n")
    return repo, sha, live


def expect(found: drift.Finding) -> None:
    counts = found.detail["counts"]
    assert {k: counts[k] for k in EXPECTED} == EXPECTED, (found.summary, counts)


def baseline_status(repo: Path, index: Path, live: Path) -> None:
    out = run(
        [
            "git",
            "--git-dir",
            str(repo / ".git"),
            "--work-tree",
            str(live),
            "status",
            "--porcelain",
            "-uall",
        ],
        env=git_env(GIT_INDEX_FILE=str(index)),
    ).stdout
    assert out.count(b"\n") == 7, out[:500]


def read_and_hash(repo: Path, live: Path) -> None:
    want = {}
    for line in run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "HEAD"]).stdout.split(b"\0"):
        if line:
            meta, path = line.split(b"\t", 1)
            want[path.decode()] = meta.split()[2].decode()
    seen, diffs = set(), 0
    for dirpath, _, files in os.walk(live):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, live)
            data = Path(full).read_bytes()
            oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            seen.add(rel)
            diffs += want.get(rel) != oid
    diffs += len(set(want) - seen)
    assert diffs == 7, diffs


def local_rows(root: Path, n: int, reps: int) -> list[dict[str, object]]:
    repo, sha, live = build(root, n)
    work = root / f"drift-{n}" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    private, index = work / "git", work / "index"
    run(
        ["git", "--git-dir", str(repo / ".git"), "read-tree", "HEAD"],
        env=git_env(GIT_INDEX_FILE=str(index)),
    )

    def ours() -> None:
        expect(drift.check_files_local(repo, private, sha, ".", live, 600))

    ours_ms, base_ms = interleaved(ours, lambda: baseline_status(repo, index, live), reps)
    rows = [
        row(
            f"warm drift check, {n:,} files, 7 changes",
            summary(ours_ms)["median"],
            "ms",
            baseline=summary(base_ms)["median"],
            baseline_label="git status -uall, warm index",
            max_ratio=1.5,
            target="<= 1.5x git status",
            stats=summary(ours_ms),
            baseline_stats=summary(base_ms),
        )
    ]
    first_ours, first_base = [], []
    for i in range(max(2, reps // 4)):
        fresh = work / f"first-{i}"
        start = time.perf_counter()
        expect(drift.check_files_local(repo, fresh / "git", sha, ".", live, 600))
        first_ours.append((time.perf_counter() - start) * 1000)
        idx = work / f"first-{i}.index"
        start = time.perf_counter()
        run(
            ["git", "--git-dir", str(repo / ".git"), "read-tree", "HEAD"],
            env=git_env(GIT_INDEX_FILE=str(idx)),
        )
        baseline_status(repo, idx, live)
        first_base.append((time.perf_counter() - start) * 1000)
    rows.append(
        row(
            f"first drift check (new index), {n:,} files",
            summary(first_ours)["median"],
            "ms",
            baseline=summary(first_base)["median"],
            baseline_label="read-tree + git status",
            max_ratio=1.1,
            target="<= 1.1x",
            stats=summary(first_ours),
            baseline_stats=summary(first_base),
        )
    )
    hash_ms = [0.0]
    start = time.perf_counter()
    read_and_hash(repo, live)
    hash_ms[0] = (time.perf_counter() - start) * 1000
    rows.append(
        row(
            f"read-and-hash every file, {n:,} files (what git's index saves)",
            hash_ms[0],
            "ms",
            baseline=summary(ours_ms)["median"],
            baseline_label="our warm drift check",
        )
    )
    return rows


async def ssh_rows(root: Path, reps: int) -> list[dict[str, object]]:
    n = 10_000
    repo, sha, live = build(root, n)
    state = root / "drift-ssh-state"
    shutil.rmtree(state, ignore_errors=True)
    client = sshclient.client_key(state)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    (state / "host_key").write_bytes(host_key.export_private_key())
    (state / "client.pub").write_bytes(client.export_public_key())
    # The host runs in its own process (on the other core), as a real host would.
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(state), stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    port = int((await server.stdout.readline()).decode())
    address = sshclient.parse_address(f"bench@127.0.0.1:{port}")
    assert address is not None
    sshclient.trust(state, address, host_key)
    mirror = state / "target" / "mirror"

    async def ours() -> None:
        denied = await drift.mirror_remote(state, str(address), str(live), mirror, 600)
        found = await asyncio.to_thread(
            drift.check_files_local, repo, state / "target" / "git", sha, ".", mirror, 600, denied
        )
        expect(found)

    async def listing() -> None:
        conn = await sshclient.connect(state, address)
        count = 0
        async with conn, conn.start_sftp_client() as sftp:

            async def walk(path: str) -> None:
                nonlocal count
                subdirs = []
                for entry in await sftp.readdir(path):
                    if entry.filename in (".", ".."):
                        continue
                    count += 1
                    if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                        subdirs.append(f"{path}/{entry.filename}")
                await asyncio.gather(*(walk(d) for d in subdirs))

            await walk(str(live))
        assert count >= n

    try:
        start = time.perf_counter()
        await ours()
        first = (time.perf_counter() - start) * 1000
        ours_ms, base_ms = [], []
        for i in range(reps):
            for fn, out in (
                ((ours, ours_ms), (listing, base_ms))
                if i % 2 == 0
                else ((listing, base_ms), (ours, ours_ms))
            ):
                start = time.perf_counter()
                await fn()
                out.append((time.perf_counter() - start) * 1000)
    finally:
        server.kill()
        await server.wait()
    return [
        row(
            f"warm drift check over SSH, {n:,} files, 7 changes",
            summary(ours_ms)["median"],
            "ms",
            baseline=summary(base_ms)["median"],
            baseline_label="SFTP listing of the tree (same client)",
            max_ratio=1.3,
            target="<= 1.3x a listing",
            stats=summary(ours_ms),
            baseline_stats=summary(base_ms),
        ),
        row(
            f"first drift check over SSH (every file fetched), {n:,} files",
            first,
            "ms",
            baseline=summary(base_ms)["median"],
            baseline_label="SFTP listing of the tree",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("AHEAD_BENCH_DIR", "/tmp/ahead-bench"))
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    load_before = list(os.getloadavg())
    args.root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += local_rows(args.root, n, args.reps if n <= 10_000 else max(4, args.reps // 2))
    rows += asyncio.run(ssh_rows(args.root, max(4, args.reps // 2)))
    section = {
        "title": "Drift scan: live tree against git (T4, T5)",
        "rows": rows,
        "notes": [
            "Live tree = the commit's tree with 5 files modified, 1 removed, 1 added; every measurement "
            "asserts that exactly those 7 are found. Warm = the index already holds the files' stat data "
            "(the engine keeps one private index per target). Our check also reads the 5 changed files "
            "and writes their diffs; the baseline only lists them.",
            f"git {gitio.git(None, 'version').strip()}; page cache warm (the tree was just written).",
        ],
    }
    print_section(section)
    path = write_results("bench_drift", [section], started, load_before)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
