"""Commit metadata is data, never code: hostile messages, branch names and authors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.engine import Engine
from tests.conftest import commit, git, make_workspace
from tests.core.helpers import query, wait_for, wait_run_done

ECHO_PIPELINE = """\
stages:
  - name: show
    steps:
      - run: echo "subject=$AHEAD_SUBJECT"; echo branch=$AHEAD_BRANCH; echo "author=$AHEAD_AUTHOR"
      - run: [sh, -c, 'printf "%s\\n" "$AHEAD_REF"']
"""


def hostile(canary: Path) -> list[str]:
    c = str(canary)
    return [
        f"$(touch {c})",
        f"`touch {c}`",
        f"; touch {c}",
        f"&& touch {c} #",
        f"| touch {c}",
        f"\"; touch {c}; echo \"",
        f"'; touch {c}; echo '",
        f"${{IFS}}$(touch${{IFS}}{c})",
        f"\ntouch {c}\n",
        f"$(sh -c 'touch {c}')",
        "[bold green]APPROVED[/]",
        "\x1b]52;c;aGVsbG8=\x07 clipboard",
        "\u202e\u2066 bidi \u2069 zero\u200bwidth",
    ]


async def test_hostile_commit_messages_and_authors_never_execute(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    ws = make_workspace(tmp_path / "ws", {"app": ECHO_PIPELINE})
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        for text in hostile(canary):
            sha = commit(repo, f"fix: {text}", name=f"Eve {text.strip()[:40]}".replace("<", "").replace(">", "") or "Eve",
                         email="eve@example.com")
            rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
            run = await wait_run_done(engine, rows[0]["id"])
            assert run["status"] == "succeeded", run
            lines = [r["line"] for r in await query(
                engine, "SELECT line FROM log_lines l JOIN steps s ON s.id = l.step_id "
                "WHERE s.run_id = ? ORDER BY l.step_id, l.seq", (run["id"],))]
            first_line = text.strip().splitlines()[0] if text.strip() else ""
            assert any(first_line in line for line in lines if line.startswith("subject=")), lines
            assert not canary.exists(), f"executed: {text!r}"


async def test_hostile_branch_names_never_execute(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    ws = make_workspace(tmp_path / "ws", {"app": ECHO_PIPELINE})
    repo = ws.repo_dir(ws.repo("app"))
    names = [f"x/$(touch${{IFS}}{canary})", f"x/`touch${{IFS}}{canary}`", f"x/;touch${{IFS}}{canary}",
             "x/&&id", "x/|id", "x/$HOME", "x/'quote", 'x/"dq']
    async with Engine(ws) as engine:
        for name in names:
            sha = git(repo, "rev-parse", "HEAD")
            git(repo, "branch", name)
            rows = await wait_for(engine, "SELECT * FROM runs WHERE branch = ?", (name,))
            run = await wait_run_done(engine, rows[0]["id"])
            assert run["status"] == "succeeded" and run["commit_sha"] == sha
            lines = [r["line"] for r in await query(
                engine, "SELECT line FROM log_lines l JOIN steps s ON s.id = l.step_id "
                "WHERE s.run_id = ? ORDER BY l.step_id, l.seq", (run["id"],))]
            assert f"refs/heads/{name}" in lines
        assert not canary.exists()


async def test_option_like_branch_names_are_ignored(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    ws = make_workspace(tmp_path / "ws", {"app": ECHO_PIPELINE})
    repo = ws.repo_dir(ws.repo("app"))
    head = git(repo, "rev-parse", "HEAD")
    async with Engine(ws) as engine:
        # git's porcelain refuses these names; a hostile server or hand-written ref does not
        for bad in ("--upload-pack=touch_canary", "-x", ".hidden"):
            (repo / ".git" / "refs" / "heads" / bad).write_text(head + "\n")
        sha = commit(repo, "after the bad refs")
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        await wait_run_done(engine, rows[0]["id"])
        branches = {r["branch"] for r in await query(engine, "SELECT branch FROM runs")}
        assert branches == {"main"}
    assert not canary.exists()


def test_cli_listings_print_no_escape_sequences(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"app": ECHO_PIPELINE})
    repo = ws.repo_dir(ws.repo("app"))
    commit(repo, "evil \x1b]52;c;aGVsbG8=\x07 \x1b[31mred\x1b[0m \u202eevil", name="Mallory \x1b[2J")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    run = [sys.executable, "-m", "core.cli", "--workspace", str(ws.root)]
    done = subprocess.run([*run, "trigger", "app", "--wait"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    for command in (["runs"], ["show", "1"], ["logs", "1"], ["status"], ["audit"], ["pending", "app", "prod"]):
        out = subprocess.run([*run, *command], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, (command, out.stderr)
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout, command
    shown = subprocess.run([*run, "runs"], capture_output=True, text=True, env=env, check=False).stdout
    assert "evil  red evil" in shown  # the sequences are removed whole, their text with them


def test_no_shell_strings_in_the_code() -> None:
    root = Path(__file__).parents[2]
    offenders = []
    for path in [*root.glob("core/**/*.py"), *root.glob("tui/**/*.py")]:
        text = path.read_text()
        for needle in ("shell=True", "create_subprocess_shell", "os.system(", "os.popen("):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []
