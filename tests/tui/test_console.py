"""The console driven by Textual's Pilot over a real engine, real git and a real store."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Log

from core.workspace import Workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import store_rows
from tests.tui.conftest import console, screen_text
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.overview import OverviewScreen
from tui.screens.repo import RepoScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.settings import Settings

ROOT = Path(__file__).parents[2]


async def until(check: Any, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def runs(app: Any, sql: str = "SELECT * FROM runs ORDER BY id") -> list[dict[str, Any]]:
    return await store_rows(app.session, sql)


async def test_overview_shows_repos_by_environment(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        assert isinstance(app.screen, OverviewScreen)
        text = screen_text(app)
        assert "app" in text and "DEV" in text and "PROD" in text
        assert "engine: here" in text and "never" in text


async def test_trigger_from_the_console_really_queues_and_runs(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        assert "Run app at the head of main" in screen_text(app)
        await pilot.press("y")
        await until(lambda: isinstance(app.screen, OverviewScreen))
        for _ in range(100):
            if await runs(app):
                break
            await asyncio.sleep(0.05)
        await pilot.pause()
        rows = await runs(app)
        assert len(rows) == 1 and rows[0]["trigger"] == "manual" and rows[0]["actor"] == "alice"

        async def finished() -> bool:
            return (await runs(app))[0]["status"] == "succeeded"

        for _ in range(200):
            if await finished():
                break
            await asyncio.sleep(0.05)
        assert await finished()
        await asyncio.sleep(0.3)  # the event feed reaches the screen
        await pilot.pause()
        assert "#1 ✓✓" in screen_text(app)


async def test_cancel_from_the_run_screen_asks_then_really_stops(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"  # a deploying stage: not sandboxed, so its pid is the host's
    ws = make_workspace(
        tmp_path / "ws",
        {
            "app": f"stages:\n  - name: long\n    environment: dev\n    steps:\n      - run: echo $$ > {pidfile}; echo started; sleep 60\n"
        },
    )
    async with console(ws) as (app, pilot):
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: pidfile.exists())
        await asyncio.sleep(0.3)
        await pilot.press("l")  # the selected repo's last run
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.detail is not None)
        await until(lambda: "started" in "\n".join(app.screen.query_one("#log", Log).lines))
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # declining changes nothing
        await pilot.pause()
        assert (await runs(app))[0]["status"] == "running"
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")

        async def cancelled() -> bool:
            return (await runs(app))[0]["status"] == "cancelled"

        for _ in range(200):
            if await cancelled():
                break
            await asyncio.sleep(0.05)
        assert await cancelled()
        pid = int(pidfile.read_text())
        await asyncio.sleep(0.2)
        assert (
            not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
        )
        await until(lambda: "cancelled" in screen_text(app))


async def test_retry_opens_the_new_run(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        run_id = await app.session.trigger("app")
        await app.session.engine.wait_run(run_id, timeout=15)
        app.open_run(run_id)
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.detail is not None)
        await pilot.press("R")
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.run_id == run_id + 1)
        rows = await runs(app)
        assert rows[-1]["retry_of"] == run_id and rows[-1]["trigger"] == "retry"


async def test_run_started_by_the_cli_appears_within_a_second(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, RunsScreen))
        done = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.cli",
            "--workspace",
            str(ws.root),
            "trigger",
            "app",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await done.wait() == 0
        started = asyncio.get_running_loop().time()
        await until(lambda: "#1" in screen_text(app), timeout=5)
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_repo_screen_marks_deployed_and_pending_commits(ws: Workspace) -> None:
    repo = ws.repo_dir(ws.repo("app"))
    async with console(ws) as (app, pilot):
        first = await app.session.trigger("app")
        await app.session.engine.wait_run(first, timeout=15)
        sha = commit(repo, "second change", author="bob")  # main: the engine deploys it to dev
        for _ in range(200):
            done = await runs(app, "SELECT status FROM runs WHERE status = 'succeeded'")
            if len(done) == 2:
                break
            await asyncio.sleep(0.05)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RepoScreen) and app.screen.detail is not None)
        detail = app.screen.detail
        assert detail is not None
        assert [c.environments for c in detail.commits] == [("dev",), ()]
        assert detail.commits[0].sha == sha
        assert detail.commits[0].pending_in == ("preprod", "prod")
        assert detail.commits[1].pending_in == ("preprod", "prod")
        text = screen_text(app)
        assert "[dev]" in text and "second change" in text and "pending in preprod, prod" in text
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, OverviewScreen))


async def test_filter_and_sort_on_the_overview(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws",
        {
            "alpha": "stages:\n  - {name: a, steps: [true]}\n",
            "beta": "stages:\n  - {name: a, steps: [true]}\n",
            "gamma": "stages:\n  - {name: a, steps: [true]}\n",
        },
    )
    async with console(ws) as (app, pilot):
        table = app.screen.query_one("#overview", DataTable)
        assert table.row_count == 3
        await pilot.press("slash", "b", "e")
        await pilot.pause()
        assert table.row_count == 1 and "filter: be" in screen_text(app)
        await pilot.press("q")  # typed into the filter, not quitting
        await pilot.pause()
        assert app.is_running and table.row_count == 0
        await pilot.press("escape")
        await pilot.pause()
        assert table.row_count == 3
        await pilot.press("s")
        await pilot.pause()
        assert "sorted by lag" in screen_text(app)


async def test_help_lists_every_key_of_the_screen(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen))
        rows = app.screen.rows()
        labels = [r[1] for r in rows]
        for wanted in ("Open", "Trigger", "Filter", "Sort", "Runs", "Help", "Quit", "Last run"):
            assert wanted in labels
        last_run = next(r for r in rows if r[1] == "Last run")
        assert last_run[3] is False  # no run yet: shown, but not available
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, OverviewScreen))


async def test_keys_can_be_remapped(ws: Workspace) -> None:
    settings = Settings(keymap={"trigger": "x", "nonsense": "y"})
    async with console(ws, settings=settings) as (app, pilot):
        await pilot.press("x")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await asyncio.sleep(0.3)
        assert len(await runs(app)) == 1
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen))
        assert ("x", "Trigger") in [(r[0], r[1]) for r in app.screen.rows()]


async def test_command_palette_offers_commands_and_jumps(ws: Workspace) -> None:
    async with console(ws) as (app, pilot):
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Trigger" in commands and "Runs" in commands and "Last run" not in commands
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"repo app")
        await asyncio.sleep(0.5)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RepoScreen))


async def test_untrusted_text_is_inert(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    commit(
        repo, "[bold green]APPROVED[/] \x1b]52;c;aGVsbG8=\x07 \x1b[31mred", name="[red]Mallory[/]"
    )
    async with console(ws) as (app, pilot):
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RepoScreen) and app.screen.detail is not None)
        await pilot.pause()
        text = screen_text(app)
        assert "[bold green]APPROVED[/]" in text and "[red]Mallory[/]" in text
        assert "\x1b" not in text and "\x07" not in text
        svg = app.export_screenshot()
        assert "\x1b" not in svg


async def test_every_screen_fits_80x24_by_keyboard(ws: Workspace) -> None:
    async with console(ws, size=(80, 24)) as (app, pilot):
        run_id = await app.session.trigger("app")
        await app.session.engine.wait_run(run_id, timeout=15)
        await asyncio.sleep(0.3)
        for keys, screen in (
            (("enter",), RepoScreen),
            (("escape", "r"), RunsScreen),
            (("enter",), RunScreen),
            (("question_mark",), HelpScreen),
        ):
            await pilot.press(*keys)
            await until(lambda screen=screen: isinstance(app.screen, screen))
            await pilot.pause()
            text = screen_text(app)
            lines = text.splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            if screen is not HelpScreen:
                assert "q Quit" in lines[-1] or "Quit" in lines[-1], lines[-1]


async def test_theme_from_settings_and_bad_theme_falls_back(ws: Workspace) -> None:
    async with console(ws, settings=Settings(theme="ahead-light")) as (app, pilot):
        assert app.theme == "ahead-light"
        assert app.theme_variables["run-ok"] == "#1A7F37"
    async with console(ws, settings=Settings(theme="no-such-theme")) as (app, pilot):
        assert app.theme == "ahead-dark"


def test_stylesheets_ship_in_the_wheel() -> None:
    import zipfile

    from tests.cache import wheel

    names = zipfile.ZipFile(wheel()).namelist()  # pip wheel, once per content (tests/cache.py)
    assert (
        "themes/ahead.tcss" in names
        and "tui/app.py" in names
        and "core/engine/__init__.py" in names
    )


async def test_a_flooding_step_keeps_the_tail_and_keys_answer(tmp_path: Path) -> None:
    flood = (
        "stages:\n  - name: flood\n    steps:\n"
        "      - run: [python3, -c, 'for i in range(120000): print(\"line\", i)']\n"
    )
    ws = make_workspace(tmp_path / "ws", {"app": flood})
    async with console(ws) as (app, pilot):
        run_id = await app.session.trigger("app")
        app.open_run(run_id)
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.detail is not None)
        log = app.screen.query_one("#log", Log)
        await pilot.press("f")  # keys answer while the step floods the log
        await pilot.press("f")
        await app.session.engine.wait_run(run_id, timeout=60)
        await until(lambda: log.lines and log.lines[-1] == "line 119999", timeout=30)
        from tui.screens.run import MAX_LOG_LINES

        assert len(log.lines) <= MAX_LOG_LINES + 1
        assert "following" in screen_text(app)
        await pilot.press("escape")  # opened afresh, a long log starts at its last lines
        app.open_run(run_id)
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.detail is not None)
        log = app.screen.query_one("#log", Log)
        await until(lambda: log.lines and log.lines[-1] == "line 119999", timeout=30)
        assert log.lines[0].startswith("… earlier lines are in the store")
        assert log.lines[1] == f"line {120000 - MAX_LOG_LINES + 1}"
