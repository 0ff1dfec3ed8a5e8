"""Change control in the console, driven by Pilot over a real engine, real git and a real store.

Each test builds its own workspace (a service whose prod stage is gated by a policy in
ahead.yml), commits as alice so a run waits at the gate, and acts in the console as someone.
Decisions "from elsewhere" go through core.approvals.decide on a separate Store, as the CLI's do.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import Button, Input

from core import approvals, workspace
from core.store.db import Store
from core.workspace import Workspace
from tests.conftest import commit, make_repo
from tests.core.helpers import on_events, store_rows
from tests.tui.conftest import console, screen_text, settle
from tui import render
from tui.app import AheadApp
from tui.screens.audit import AuditScreen, compact
from tui.screens.change import ChangeScreen
from tui.screens.changes import ChangesScreen
from tui.screens.decision import Decision, DecisionScreen, send_decision
from tui.screens.help import HelpScreen
from tui.screens.overview import OverviewScreen

# How soon a decision made by another process must show. The issue asks for "at once"; 1.0 s
# holds for most writes, but core/feed.py can miss the inotify wake when it arrives before the
# commit is readable and then waits for its 1 s safety poll. Tighten to 1.0 once the feed reads
# again shortly after every wake.
LIVE_WITHIN = 1.0  # the issue: "an approval made elsewhere appears at once"

PIPELINE = """\
stages:
  - name: build
    steps:
      - run: echo "plan for $AHEAD_COMMIT" > plan.txt
        artifact: plan.txt
  - name: deploy-prod
    environment: prod
    steps:
      - run: echo "deploying $AHEAD_COMMIT to prod"
"""


def make_ws(root: Path, approvals_needed: int = 1, env: str = "prod") -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    make_repo(root / "repos" / "service", PIPELINE.replace("prod", env))
    (root / "ahead.yml").write_text(f"""\
repos:
  - name: service
    path: repos/service
environments: [dev, {env}]
policies:
  {env}:
    approvals: {approvals_needed}
operators:
  - name: alice
    roles: [operator, approver]
    emails: [alice@example.com]
  - name: bob
    roles: [operator, approver]
    emails: [bob@example.com]
  - name: carol
    roles: [approver]
    emails: [carol@example.com]
settings:
  cancel_grace: 2s
  poll_interval: 0.2
""")
    return workspace.read(root / "ahead.yml")


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def poll(
    app: AheadApp, sql: str, check: Callable[[list[Any]], bool] = bool, timeout: float = 20.0
) -> list[Any]:
    """Run `sql` on the session's store after each burst of its events until `check` holds."""
    return await on_events(
        app.session.feed, lambda: store_rows(app.session, sql), check, timeout, sql
    )


async def gate_opens(
    app: AheadApp, ws: Workspace, subject: str = "Release 1.2.0"
) -> tuple[str, dict[str, Any]]:
    """Commit as alice on main; wait until the run waits at the prod gate."""
    sha = commit(
        ws.repo_dir(ws.repo("service")), subject, author="alice", files={"version": subject}
    )
    rows = await poll(
        app, f"SELECT * FROM change_requests WHERE head_sha = '{sha}' AND status = 'open'"
    )
    return sha, rows[0]


def capture_notes(app: AheadApp) -> list[tuple[str, dict[str, Any]]]:
    notes: list[tuple[str, dict[str, Any]]] = []
    notify = app.notify

    def recording(message: str, **kwargs: Any) -> None:
        notes.append((message, kwargs))
        notify(message, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return notes


async def open_change(app: AheadApp, pilot: Any) -> ChangeScreen:
    """From anywhere: `a` to the Changes screen, enter on the first change."""
    await pilot.press("a")
    await until(lambda: isinstance(app.screen, ChangesScreen) and bool(app.screen._changes))
    await pilot.press("enter")
    await until(lambda: isinstance(app.screen, ChangeScreen) and app.screen.change is not None)
    await pilot.pause()
    assert isinstance(app.screen, ChangeScreen)
    return app.screen


async def test_approve_from_the_console_typing_the_environment_deploys(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with console(ws, actor="bob") as (app, pilot):
        notes = capture_notes(app)
        sha, change = await gate_opens(app, ws)
        # the overview shows the cell waiting for approval, with the policy status
        await until(lambda: "0/1" in screen_text(app))
        assert "⏸" in screen_text(app)
        screen = await open_change(app, pilot)
        text = screen_text(app)
        assert f"change #{change['id']}" in text and "Release 1.2.0" in text
        assert "bob may approve" in text and "alice: author of" in text
        await pilot.press("end")  # the artifacts of the earlier stage, at the bottom
        await pilot.pause()
        assert "plan.txt" in screen_text(app) and "50 B" in screen_text(app)
        assert screen.check_action("approve", ()) is True
        await pilot.press("A")
        await until(lambda: isinstance(app.screen, DecisionScreen))
        await pilot.pause()
        dialog = app.screen
        assert "Type prod to confirm" in screen_text(app)
        assert dialog.query_one("#yes", Button).disabled
        await pilot.press(*"pro", "enter")  # not the name yet: enter does not move on
        await pilot.pause()
        assert dialog.query_one("#yes", Button).disabled
        assert dialog.focused is dialog.query_one("#confirm-env", Input)
        await pilot.press("d", "tab")  # the right name; tab goes on to the optional comment
        await pilot.pause()
        assert not dialog.query_one("#yes", Button).disabled
        assert dialog.focused is dialog.query_one("#comment", Input)
        await pilot.press(*"ship it", "enter")
        await until(lambda: isinstance(app.screen, ChangeScreen))
        deployed = await poll(app, "SELECT commit_sha FROM deployments WHERE environment = 'prod'")
        assert [r["commit_sha"] for r in deployed] == [sha]
        decisions = await store_rows(
            app.session, "SELECT operator, verdict, comment FROM decisions"
        )
        assert [tuple(d.values()) for d in decisions] == [("bob", "approve", "ship it")]
        await until(lambda: any(kw.get("title") == "Approved" for _, kw in notes))
        await until(lambda: "passed" in screen_text(app))  # the detail follows the change live
        assert screen.check_action("approve", ()) is None


async def test_the_author_cannot_approve_and_is_told_why(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with console(ws, actor="alice") as (app, pilot):
        notes = capture_notes(app)
        _, change = await gate_opens(app, ws)
        screen = await open_change(app, pilot)
        assert "alice cannot approve: author of" in screen_text(app)
        assert screen.check_action("approve", ()) is None
        assert screen.check_action("reject", ()) is None
        await pilot.press("A")  # dimmed: nothing opens
        await pilot.pause()
        assert isinstance(app.screen, ChangeScreen)
        # Help shows the command, marked as not available now.
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen))
        approve = next(r for r in app.screen.rows() if r[1] == "Approve")
        assert approve[0] == "A" and approve[3] is False
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, ChangeScreen))
        # Should it get through anyway (stale screen, race), the engine refuses: shown as an error.
        worker = screen.run_worker(
            send_decision(screen, change["id"], Decision("approve", ""), lambda: None)
        )
        await worker.wait()
        message, kwargs = notes[-1]
        assert "alice cannot approve: author of" in message
        assert kwargs["severity"] == "error" and kwargs["title"] == "Refused"
        assert await store_rows(app.session, "SELECT * FROM decisions") == []


async def test_an_approval_from_elsewhere_appears_within_a_second(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", approvals_needed=2)
    async with console(ws, actor="carol") as (app, pilot):
        _, change = await gate_opens(app, ws)
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ChangesScreen) and "0 of 2" in screen_text(app))
        assert "bob" in screen_text(app) and "carol" in screen_text(app)  # who may approve

        def approve_as_bob() -> approvals.Verdict:
            with Store(ws.db_path, session="cli:bob") as store:
                return approvals.decide(store, ws, change["id"], "bob", "approve", "fine by me")

        verdict = await asyncio.to_thread(approve_as_bob)
        assert verdict.ok and verdict.status == "open"
        started = asyncio.get_running_loop().time()
        await until(lambda: "1 of 2" in screen_text(app), timeout=5)
        assert asyncio.get_running_loop().time() - started < LIVE_WITHIN
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChangeScreen) and app.screen.change is not None)
        await pilot.pause()
        text = screen_text(app)
        assert "bob approved" in text and "fine by me" in text and "carol may approve" in text


async def test_reject_needs_a_comment_and_stops_the_run(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with console(ws, actor="bob") as (app, pilot):
        notes = capture_notes(app)
        _, change = await gate_opens(app, ws)
        await open_change(app, pilot)
        await pilot.press("X")
        await until(lambda: isinstance(app.screen, DecisionScreen))
        await pilot.pause()
        dialog = app.screen
        assert "Type prod" not in screen_text(app)  # the comment makes a rejection deliberate
        assert dialog.query_one("#yes", Button).disabled
        await pilot.press("enter")  # no comment: refused by the dialog itself
        await pilot.pause()
        assert isinstance(app.screen, DecisionScreen) and "comment required" in screen_text(app)
        await pilot.press(*"not before the freeze", "enter")
        await until(lambda: isinstance(app.screen, ChangeScreen))
        run = await poll(
            app,
            f"SELECT status, error FROM runs WHERE id = {change['run_id']}",
            lambda rows: rows[0]["status"] not in ("waiting", "running"),
        )
        assert run[0]["status"] == "failed" and "rejected" in run[0]["error"]
        assert (
            await store_rows(app.session, "SELECT * FROM deployments WHERE environment = 'prod'")
            == []
        )
        await until(lambda: any(kw.get("title") == "Rejected" for _, kw in notes))
        await until(lambda: "rejected by bob: not before the freeze" in screen_text(app))


async def test_escape_backs_out_of_a_decision(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", env="staging")  # the last environment counts as production
    async with console(ws, actor="bob") as (app, pilot):
        await gate_opens(app, ws)
        await open_change(app, pilot)
        await pilot.press("A")
        await until(lambda: isinstance(app.screen, DecisionScreen))
        await pilot.pause()
        assert "Type staging to confirm" in screen_text(app)
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, ChangeScreen))
        assert await store_rows(app.session, "SELECT * FROM decisions") == []


async def test_audit_screen_shows_the_chain_and_catches_tampering(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with console(ws, actor="bob") as (app, pilot):
        await gate_opens(app, ws)
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, AuditScreen) and "intact" in screen_text(app))
        text = screen_text(app)
        assert "audit chain intact: 2 entries verified" in text
        assert "gate.opened" in text and "run.trigger" in text
        first = (await store_rows(app.session, "SELECT id FROM audit ORDER BY id LIMIT 1"))[0]["id"]
        db = sqlite3.connect(ws.db_path)
        with db:
            db.execute("DROP TRIGGER audit_no_update")
            db.execute("UPDATE audit SET actor = 'mallory' WHERE id = ?", (first,))
        db.close()
        await pilot.press("v")
        await until(lambda: "BROKEN" in screen_text(app))
        text = screen_text(app)
        assert f"BROKEN at entry {first}: contents do not match its hash" in text
        assert f"✗ {first}" in text and "mallory" in text


async def test_new_screens_fit_80x24_and_200x60_by_keyboard(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", approvals_needed=2)
    for size in ((80, 24), (200, 60)):
        async with console(ws, actor="bob", size=size) as (app, pilot):
            if not await store_rows(app.session, "SELECT * FROM change_requests"):
                await gate_opens(app, ws)
            await until(lambda: "0/2" in screen_text(app))
            for keys, screen in (
                (("a",), ChangesScreen),
                (("enter",), ChangeScreen),
                (("A",), DecisionScreen),
                (("escape", "u"), AuditScreen),
                (("question_mark",), HelpScreen),
            ):
                await pilot.press(*keys)
                await until(lambda screen=screen: isinstance(app.screen, screen))
                await settle(app)  # loaded: the next key finds its command available
                await pilot.pause()
                lines = screen_text(app).splitlines()
                assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
                if screen in (ChangesScreen, ChangeScreen, AuditScreen):
                    assert "Quit" in lines[-1], lines[-1]
            await pilot.press("escape", "o")
            await until(lambda: isinstance(app.screen, OverviewScreen))


async def test_commands_are_in_the_palette_only_when_they_apply(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    async with console(ws, actor="alice") as (app, pilot):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Changes" in titles and "Audit" in titles
        await gate_opens(app, ws)
        await open_change(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Approve" not in titles and "Run" in titles  # alice wrote it
        await pilot.press("l")
        await until(lambda: type(app.screen).__name__ == "RunScreen")
        await pilot.press("a")  # back to the Changes screen already in the stack, not a new one
        await until(lambda: isinstance(app.screen, ChangesScreen))
        assert sum(isinstance(s, ChangesScreen) for s in app.screen_stack) == 1


def test_audit_detail_is_compact_and_inert() -> None:
    detail = '{"commits":["' + "a" * 40 + '"],"comment":"[bold]ok[/] \\u001b[31mred","run":7}'
    text = render.plain(compact(detail)).plain
    assert text.startswith("commits=aaaaaaa comment=[bold]ok[/]") and text.endswith("run=7")
    assert "\x1b" not in text
    assert compact("not json") == "not json"
