"""The console over a repo full of hostile text (tests/hostile.py): every screen that shows commit
subjects, authors, branch names, step names or log lines shows them as inert text.

Real app through Pilot, embedded engine, real git and SQLite. On each screen: no control
character, escape sequence or bidi/zero-width character is on screen or in the exported SVG,
markup such as `[@click=app.quit]` and `[bold red]` is shown as the characters it is, and the
app is still running (the click action was never wired to anything).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tests.conftest import commit, make_workspace
from tests.core.test_approvals import make_ws
from tests.hostile import corpus, fill, git, leaks
from tests.tui.conftest import console, screen_text, settle
from tests.tui.test_changes import poll
from tests.tui.test_console import until
from tests.tui.test_pty import ROOT, Terminal
from tui.screens.audit import AuditScreen
from tui.screens.change import ChangeScreen
from tui.screens.changes import ChangesScreen
from tui.screens.repo import RepoScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen

PIPELINE = """\
stages:
  - name: show
    steps:
      - name: "\\e]52;c;aGk=\\a [@click=app.quit]step[/] \\u202eevil"
        run: printf '\\033]52;c;aGk=\\007 \\033[2J [@click=app.quit]log[/] \\302\\233 31m \\342\\200\\256rtl\\n'; echo "$AHEAD_SUBJECT"
  - name: deploy-prod
    environment: prod
    steps:
      - run: echo deploy
"""
HEADLINE = "[@click=app.quit]quit[/] [bold red]ALERT[/] \x1b]52;c;aGk=\x07 \u202eevil \x9b2J"
SHOWN = "[@click=app.quit]quit[/] [bold red]ALERT[/]"


async def check_screen(app: Any, name: str, literal: str | None = SHOWN) -> str:
    await settle(app)
    text = screen_text(app)
    for _ in range(60):  # a DataTable sizes its columns a frame or two after its rows arrive
        if literal is None or literal in text:
            break
        await asyncio.sleep(0.05)
        text = screen_text(app)
    assert leaks(text) == [], (name, leaks(text))
    assert "\x1b" not in app.export_screenshot(), name
    if literal is not None:
        assert literal in text, (name, text)
    assert app.is_running and app.return_code is None, f"{name}: the app was made to quit"
    return text


async def test_every_screen_shows_hostile_text_inert(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", policy="approvals: 1", pipeline=PIPELINE)
    repo = ws.repo_dir(ws.repo("service"))
    made = fill(
        repo, corpus(tmp_path / "canary"), refs=False
    )  # branches: tests/core/test_injection.py
    async with console(ws, size=(160, 50), actor="carol") as (app, pilot):
        sha = commit(
            repo,
            f"{HEADLINE}\n\nbody {HEADLINE}",
            name="[@click=app.quit]Mallory[/] \x1b[2J",
            email="mallory@example.com",
        )
        git(repo, "update-ref", "refs/heads/h/\u202eevil\u202c", sha)
        change = (await poll(app, f"SELECT * FROM change_requests WHERE head_sha = '{sha}'"))[0]
        await poll(
            app,
            "SELECT * FROM runs WHERE branch != 'main'",
            lambda rows: bool(rows) and rows[0]["status"] == "succeeded",
        )
        await check_screen(app, "overview", literal=None)

        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RepoScreen) and app.screen.detail is not None)
        text = await check_screen(app, "repo")
        assert "[@click=app.quit]Mallory[/]" in text

        await pilot.press("escape", "r")
        await until(
            lambda: isinstance(app.screen, RunsScreen) and bool(getattr(app.screen, "_shown", None))
        )
        await check_screen(app, "runs", literal="[@click=app.quit]quit[/]")

        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RunScreen))
        await pilot.pause()
        await check_screen(app, "run", literal="[@click=app.quit]step[/]")

        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ChangesScreen) and bool(app.screen._changes))
        await check_screen(app, "changes", literal=None)  # lists ranges and counts, no subjects
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChangeScreen) and app.screen.change is not None)
        await check_screen(app, "change")

        await pilot.press("u")
        await until(lambda: isinstance(app.screen, AuditScreen))
        await check_screen(app, "audit", literal=None)
    assert change["status"] == "open" and len(made.commits) >= 200
    assert not (tmp_path / "canary").exists()
    assert os.path.exists(ws.db_path)


def test_no_hostile_escape_sequence_reaches_a_real_terminal(tmp_path: Path) -> None:
    """The real `ahead` on a pseudo-terminal: the raw bytes it writes never carry the commit's
    clipboard write (OSC 52), window title (OSC 0), hyperlink (OSC 8) or C1 CSI; the VT emulator
    shows the markup as text."""
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    commit(
        repo,
        "[bold red]ALERT[/] \x1b]52;c;SE9TVElMRQ==\x07 \x1b]0;PWNED-TITLE\x07 "
        "\x1b]8;;https://evil.example/x\x07link\x1b]8;;\x07 \x9b2J done",
        name="[@click=app.quit]Mallory[/]",
        email="mallory@example.com",
    )
    term = Terminal(
        [sys.executable, "-m", "tui.launch", "--workspace", str(ws.root)],
        cols=160,
        rows=40,
        env={"PYTHONPATH": str(ROOT)},
    )
    raw = bytearray()
    feed = term.stream.feed
    term.stream.feed = lambda data: (raw.extend(data), feed(data))[1]  # type: ignore[method-assign]
    try:
        term.wait_for("engine: here")
        term.wait_for("PROD")
        term.send("\r")
        screen = term.wait_for("[bold red]ALERT[/]")
        assert "[@click=app.quit]Mallory[/]" in term.wait_for("Mallory")
        assert "link done" in screen or "link" in screen
    finally:
        term.close()
    for needle in (b"]52;", b"SE9TVElMRQ", b"PWNED-TITLE", b"evil.example", b"\xc2\x9b"):
        assert needle not in raw, needle
