"""Shared fixtures: real git repositories in tmp dirs, real workspaces, an isolated home."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core import workspace
from core.workspace import Workspace

AUTHORS = {
    "alice": ("Alice Archer", "alice@example.com"),
    "bob": ("Bob Baker", "bob@example.com"),
    "carol": ("Carol Chen", "carol@example.com"),
}

SIMPLE_PIPELINE = """\
stages:
  - name: build
    steps:
      - run: echo "building $AHEAD_COMMIT"
  - name: deploy-dev
    environment: dev
    steps:
      - run: echo "deploying to $AHEAD_ENVIRONMENT"
"""


# The longest test files, longest first (measured with --durations=0). `./dev test` splits the
# tests between its workers and lets an idle worker steal queued ones (--dist worksteal; whole
# files per worker, loadfile, left one worker running the snapshot file alone for a minute):
# starting the long ones first keeps one of them from starting last while the others idle.
LONGEST_FIRST = (
    "tests/tui/test_snapshots.py",
    "tests/tui/test_console.py",
    "tests/core/test_approvals.py",
    "tests/core/test_demo.py",
    "tests/tui/test_changes.py",
    "tests/core/test_drift.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, stays


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keep the developer's own config, data dirs and git identity out of every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv(
        "XDG_STATE_HOME", str(home / ".local" / "state")
    )  # audit heads verify remembers
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.delenv("AHEAD_WORKSPACE", raising=False)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
    )
    return home


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {args} failed: {done.stderr}")
    return done.stdout.strip()


def commit(
    repo: Path,
    message: str = "change",
    author: str = "alice",
    files: dict[str, str] | None = None,
    email: str | None = None,
    name: str | None = None,
) -> str:
    """Commit `files` (or an empty change) as `author`; returns the new sha."""
    for rel, text in (files or {}).items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    default_name, default_email = AUTHORS.get(author, (author, f"{author}@example.com"))
    env = {
        "GIT_AUTHOR_NAME": name or default_name,
        "GIT_AUTHOR_EMAIL": email or default_email,
        "GIT_COMMITTER_NAME": name or default_name,
        "GIT_COMMITTER_EMAIL": email or default_email,
    }
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message, env=env)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, pipeline: str = SIMPLE_PIPELINE, message: str = "initial") -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commit(path, message, files={".ahead/pipeline.yml": pipeline, "README": "hello\n"})
    return path


def make_workspace(
    root: Path,
    repos: dict[str, str] | None = None,
    environments: tuple[str, ...] = ("dev", "preprod", "prod"),
    extra: str = "",
) -> Workspace:
    """A workspace at `root` with a repo per (name, pipeline)."""
    root.mkdir(parents=True, exist_ok=True)
    repos = repos if repos is not None else {"app": SIMPLE_PIPELINE}
    lines = ["repos:"]
    for name, pipeline in repos.items():
        make_repo(root / "repos" / name, pipeline)
        lines += [f"  - name: {name}", f"    path: repos/{name}"]
    lines.append(f"environments: [{', '.join(environments)}]")
    lines.append("settings:\n  cancel_grace: 2s\n  poll_interval: 0.2")
    text = "\n".join(lines) + "\n" + extra
    (root / "ahead.yml").write_text(text)
    return workspace.read(root / "ahead.yml")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")
