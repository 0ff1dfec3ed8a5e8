"""Benchmark fixtures, built with `git fast-import` under a scratch directory.

- `repos/r0000` .. `repos/r0999`: small repos with a trivial valid `.ahead/pipeline.yml`
  (one stage, one step `run: "true"`), 2-3 commits each; odd-numbered ones had
  `git pack-refs --all`, so their `main` lives in `packed-refs` until the next commit.
- `big/history`: one repo with a 50,000-commit linear history (each commit edits one of 200
  `values.yaml` files), with a pipeline that deploys to dev and prod.
- `many/ahead.yml`: a workspace listing the 1,000 repos (environments [dev, prod],
  max_parallel_runs 8); `big-ws/ahead.yml`: a workspace for the big repo.
- For the console benchmarks, made on first use by `demo_workspace()` and `flood_workspace()`:
  `demo/`, the built-in demo (`core.demo.create` with a fixed clock, rebuilt when the demo's
  sources change), and `flood/`, one repo whose only step waits for a `go` file in the
  workspace and then prints a given number of lines as fast as Python can.

Built once and reused (a `fixtures.json` stamp is written last); `--force` rebuilds. The
benchmarks add commits to the small repos, which is harmless for later runs.

    .venv/bin/python bench/fixtures.py [--root /tmp/ahead-bench] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import git, run

VERSION = 1
DEFAULT_ROOT = Path(os.environ.get("AHEAD_BENCH_DIR", "/tmp/ahead-bench"))
N_REPOS = 1000
BIG_COMMITS = 50_000
BIG_FILES = 200
EPOCH = 1_700_000_000

SMALL_PIPELINE = """\
stages:
  - name: check
    steps:
      - run: "true"
"""

BIG_PIPELINE = """\
stages:
  - name: check
    steps:
      - run: "true"
  - name: deploy-dev
    environment: dev
    steps:
      - run: "true"
  - name: deploy-prod
    environment: prod
    steps:
      - run: "true"
"""

FLOOD_PIPELINE = """\
stages:
  - name: flood
    steps:
      - name: print lines
        run: python3 ci/flood.py {lines}
"""

# Waits (at most a minute) for $AHEAD_WORKSPACE/go, so the benchmark can open the run screen
# first, then prints the lines; stdout is a pipe to the engine, so print() is block-buffered.
FLOOD_SCRIPT = """\
import os, sys, time
go = os.path.join(os.environ["AHEAD_WORKSPACE"], "go")
print("waiting for", go, flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(int(sys.argv[1])):
    print(f"step output line {i:07d} lorem ipsum dolor")
"""
DEMO_NOW = 1_790_000_000  # the demo's fixed clock: the same commits on every build

AUTHORS = [
    ("Alice Example", "alice@example.com"),
    ("Bob Example", "bob@example.com"),
    ("Carol Example", "carol@example.com"),
    ("Dan Example", "dan@example.com"),
]


@dataclass(frozen=True)
class Fixtures:
    root: Path
    repo_names: tuple[str, ...]
    many_ws: Path
    big_repo: Path
    big_ws: Path

    def repo_path(self, name: str) -> Path:
        return self.root / "repos" / name


def _data(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b"data %d\n" % len(raw) + raw + b"\n"


def _commit(
    ref: str, when: int, author: tuple[str, str], message: str, files: list[tuple[str, str]]
) -> bytes:
    name, email = author
    out = [
        f"commit {ref}\n".encode(),
        f"author {name} <{email}> {when} +0000\n".encode(),
        f"committer {name} <{email}> {when} +0000\n".encode(),
        _data(message),
    ]
    for path, content in files:
        out.append(f"M 100644 inline {path}\n".encode())
        out.append(_data(content))
    out.append(b"\n")
    return b"".join(out)


def small_stream(index: int) -> bytes:
    commits = 3 if index % 3 == 0 else 2
    parts = [
        _commit(
            "refs/heads/main",
            EPOCH + index * 10,
            AUTHORS[index % 4],
            f"Add pipeline for r{index:04d}",
            [(".ahead/pipeline.yml", SMALL_PIPELINE), ("README.md", f"# r{index:04d}\n")],
        )
    ]
    for c in range(1, commits):
        parts.append(
            _commit(
                "refs/heads/main",
                EPOCH + index * 10 + c,
                AUTHORS[(index + c) % 4],
                f"Update readme ({c})",
                [("README.md", f"# r{index:04d}\n\nrevision {c}\n")],
            )
        )
    parts.append(b"done\n")
    return b"".join(parts)


def big_stream(commits: int = BIG_COMMITS) -> bytes:
    parts = [
        _commit(
            "refs/heads/main",
            EPOCH,
            AUTHORS[0],
            "Add pipeline",
            [(".ahead/pipeline.yml", BIG_PIPELINE), ("README.md", "# history\n")],
        )
    ]
    for c in range(1, commits):
        svc = c % BIG_FILES
        content = f"service: svc-{svc:03d}\nreplicas: {c % 7 + 1}\nimage: app:{c}\n"
        parts.append(
            _commit(
                "refs/heads/main",
                EPOCH + c * 60,
                AUTHORS[c % 4],
                f"svc-{svc:03d}: roll out build {c}",
                [(f"services/svc-{svc:03d}/values.yaml", content)],
            )
        )
    parts.append(b"done\n")
    return b"".join(parts)


def _init(path: Path) -> None:
    # --template= skips copying sample hooks: faster, and no hook can run during the benchmarks
    run(["git", "init", "-q", "--template=", "-b", "main", str(path)])


def build_small(path: Path, index: int) -> None:
    _init(path)
    git(path, "fast-import", "--quiet", input=small_stream(index))
    git(path, "reset", "-q", "--hard")
    if index % 2 == 1:
        git(path, "pack-refs", "--all")


def build_big(path: Path) -> None:
    _init(path)
    git(path, "fast-import", "--quiet", input=big_stream())
    git(path, "reset", "-q", "--hard")


def workspace_text(repos: list[tuple[str, Path]]) -> str:
    lines = ["repos:"]
    for name, path in repos:
        lines.append(f"  - name: {name}")
        lines.append(f"    path: {json.dumps(str(path))}")
    lines += ["environments: [dev, prod]", "settings:", "  max_parallel_runs: 8", ""]
    return "\n".join(lines)


def describe(root: Path) -> Fixtures:
    names = tuple(f"r{i:04d}" for i in range(N_REPOS))
    return Fixtures(
        root=root,
        repo_names=names,
        many_ws=root / "many" / "ahead.yml",
        big_repo=root / "big" / "history",
        big_ws=root / "big-ws" / "ahead.yml",
    )


def stamp_matches(root: Path) -> bool:
    try:
        data = json.loads((root / "fixtures.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(
        data.get("version") == VERSION
        and data.get("repos") == N_REPOS
        and data.get("big_commits") == BIG_COMMITS
    )


def build(root: Path = DEFAULT_ROOT, force: bool = False, quiet: bool = False) -> Fixtures:
    """Build (or reuse) the fixtures under `root`."""
    fx = describe(root)
    if not force and stamp_matches(root):
        return fx
    say = (lambda *a: None) if quiet else print
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        big = pool.submit(build_big, fx.big_repo)
        list(pool.map(lambda i: build_small(fx.repo_path(fx.repo_names[i]), i), range(N_REPOS)))
        small_done = time.monotonic() - started
        big.result()
    say(
        f"built {N_REPOS} small repos in {small_done:.1f}s "
        f"and the {BIG_COMMITS}-commit repo in {time.monotonic() - started:.1f}s total"
    )
    fx.many_ws.parent.mkdir(parents=True)
    fx.many_ws.write_text(workspace_text([(n, fx.repo_path(n)) for n in fx.repo_names]))
    fx.big_ws.parent.mkdir(parents=True)
    fx.big_ws.write_text(workspace_text([("history", fx.big_repo)]))
    (root / "fixtures.json").write_text(
        json.dumps(
            {
                "version": VERSION,
                "repos": N_REPOS,
                "big_commits": BIG_COMMITS,
                "build_seconds": round(time.monotonic() - started, 1),
            }
        )
        + "\n"
    )
    return fx


def _demo_digest() -> str:
    """A digest of the demo's sources: rebuild the demo workspace when they change."""
    import core.demo

    digest = hashlib.sha256()
    source = Path(core.demo.__file__)
    for path in [source, *sorted((source.parent / "demo_repos").rglob("*"))]:
        if path.is_file():
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def demo_workspace(root: Path = DEFAULT_ROOT) -> Path:
    """The built-in demo under `root/demo` (its directory), made with a fixed clock."""
    from core import demo

    target = root / "demo"
    stamp = root / "demo.json"
    digest = _demo_digest()
    try:
        if (
            json.loads(stamp.read_text()).get("digest") == digest
            and (target / "ahead.yml").exists()
        ):
            return target
    except (OSError, ValueError):
        pass
    shutil.rmtree(target, ignore_errors=True)
    demo.create(target, now=DEMO_NOW)
    stamp.write_text(json.dumps({"digest": digest}) + "\n")
    return target


def flood_workspace(root: Path, lines: int) -> Path:
    """`root/flood`: one repo whose step prints `lines` lines once `root/flood/go` exists.
    Returns the workspace directory; the state directory is the caller's to reset."""
    ws_dir = root / "flood"
    repo = ws_dir / "repos" / "flood"
    pipeline = FLOOD_PIPELINE.format(lines=lines)
    current = repo / ".ahead" / "pipeline.yml"
    if current.exists() and current.read_text() == pipeline and (repo / "ci" / "flood.py").exists():
        return ws_dir
    shutil.rmtree(ws_dir, ignore_errors=True)
    _init(repo)
    (repo / ".ahead").mkdir(parents=True)
    (repo / "ci").mkdir()
    current.write_text(pipeline)
    (repo / "ci" / "flood.py").write_text(FLOOD_SCRIPT)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Flood the log")
    (ws_dir / "ahead.yml").write_text(
        "repos:\n  - name: flood\n    path: repos/flood\nenvironments: [dev]\n"
    )
    return ws_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = parser.parse_args()
    fx = build(args.root, args.force)
    print(f"fixtures ready in {fx.root}")


if __name__ == "__main__":
    main()
