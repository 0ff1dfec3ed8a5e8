"""Drift in the console, driven by Pilot over a real engine, real git, a real live directory.

The workspace's `site` repo deploys its `site/` directory to a live directory with `cp`; its
pipeline declares that directory as prod's files drift target. A commit on main deploys it
(and the engine checks drift right after); the test then edits the live directory by hand and
drives the Drift screens: check, see the diff, acknowledge, reconcile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.widgets import Button, Input

from core import drift
from core.api.views import DriftView, EnvCell
from core.pipeline import DriftSpec
from core.services import Actor
from core.workspace import Workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import store_rows
from tests.tui.conftest import console, screen_text, settle
from tests.tui.test_changes import capture_notes, poll, until
from tui import render
from tui.app import AheadApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.drift import DriftScreen, matches
from tui.screens.drift_actions import AcknowledgeScreen
from tui.screens.drift_detail import DriftDetailScreen
from tui.screens.help import HelpScreen
from tui.screens.overview import OverviewScreen, env_cell
from tui.widgets.filter_bar import FilterBar

TARGET = "files:site"
# A terraform plan that drifted, with an escape sequence and markup that must stay inert.
PLAN = """printf '\\033[1m  # aws_s3_bucket.site will be updated in-place\\033[0m\\n'
printf '[bold red]APPROVED[/] Plan: 0 to add, 1 to change, 0 to destroy.\\n'
exit 2
"""


def make_ws(root: Path) -> tuple[Workspace, Path]:
    live = root / "live"
    live.mkdir(parents=True)
    pipeline = f"""\
stages:
  - name: deploy-prod
    environment: prod
    steps:
      - run: cp -R site/. {live}/
drift:
  prod:
    - files: site
      live: {live}
    - name: infra
      command: [sh, plan.sh]
      parse: terraform
"""
    return make_workspace(root, {"site": pipeline}, environments=("dev", "prod")), live


async def deployed(app: AheadApp, ws: Workspace) -> str:
    """Commit the site on main; wait for its deploy and the engine's drift check after it."""
    sha = commit(
        ws.repo_dir(ws.repo("site")),
        "Site 1.0",
        files={"site/index.html": "hello\nworld\n", "site/about.html": "about\n", "plan.sh": PLAN},
    )
    await poll(
        app,
        f"SELECT * FROM drift WHERE target = '{TARGET}' AND commit_sha = '{sha}' AND state = 'in_sync'",
    )
    return sha


def target_row(screen: DriftScreen) -> DriftView | None:
    return next((v for v in screen._shown if v.target == TARGET), None)


async def filter_list(pilot: Any, screen: DriftScreen, text: str) -> None:
    """`/`, the text (set at once: typing it key by key costs a pause per key), enter."""
    await pilot.press("slash")
    screen.query_one("#filter", FilterBar).value = text
    await pilot.press("enter")


async def test_drift_check_ack_reconcile(tmp_path: Path) -> None:
    ws, live = make_ws(tmp_path / "ws")
    async with console(ws, size=(100, 30)) as (app, pilot):
        notes = capture_notes(app)
        sha = await deployed(app, ws)
        (live / "index.html").write_text("hello\nhacked\n")
        (live / "extra.txt").write_text("left behind\n")

        # d from the overview: the Drift screen, at the selected repo
        await pilot.press("d")
        await until(
            lambda: isinstance(app.screen, DriftScreen) and target_row(app.screen) is not None
        )
        screen = app.screen
        assert isinstance(screen, DriftScreen)

        # C checks every target (the command target's output shows in its detail, inert)
        statuses: list[str] = []
        set_status = screen.set_status
        screen.set_status = lambda text: (statuses.append(text), set_status(text))[1]  # type: ignore[method-assign]
        await pilot.press("C")
        assert any(text.startswith("checking every target…") for text in statuses)
        await until(
            lambda: (
                not screen._checking_all
                and (v := target_row(screen)) is not None
                and v.state == "drifted"
            )
        )
        await filter_list(pilot, screen, "infra")
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, DriftDetailScreen) and app.screen.detail is not None
        )
        await settle(app)
        text = screen_text(app)
        assert "exit code 2" in text and "would change (1)" in text and "aws_s3_bucket.site" in text
        assert "[bold red]APPROVED[/]" in text
        await pilot.press("escape", "escape")  # back to the list; clear the filter

        await filter_list(pilot, screen, "files")
        await until(lambda: [v.target for v in screen._shown] == [TARGET])

        # c checks now: the row and the status line say so while it runs, then show the drift
        statuses.clear()
        await pilot.press("c")
        await until(lambda: (v := target_row(screen)) is not None and v.state == "drifted")
        await settle(app)
        assert any(
            kw.get("title") == "Checked" and msg.startswith(f"site/prod {TARGET}: ≠ drifted")
            for msg, kw in notes
        )
        assert "≠ drifted" in screen_text(app)
        assert any(text.startswith("checking 1 target(s)…") for text in statuses)

        # enter: the detail with the file lists and the coloured diff
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, DriftDetailScreen) and app.screen.detail is not None
        )
        detail = app.screen
        assert isinstance(detail, DriftDetailScreen)
        await settle(app)
        text = screen_text(app)
        assert "changed (1)" in text and "index.html" in text
        assert "added (1)" in text and "extra.txt" in text
        assert "+hacked" in text and "-world" in text
        assert "not acknowledged" in text

        # a viewer is told, before any dialog, that they may not acknowledge
        app.session.actor = Actor("vic", ("viewer",))
        await pilot.press("A")
        await pilot.pause()
        assert not isinstance(app.screen, AcknowledgeScreen)
        assert any("vic may not acknowledge" in msg for msg, _ in notes)
        app.session.actor = Actor("alice")

        # A: a reason is required; 24h by default
        await pilot.press("A")
        await until(lambda: isinstance(app.screen, AcknowledgeScreen))
        dialog = app.screen
        assert dialog.query_one("#yes", Button).disabled
        assert dialog.query_one("#ack-for", Input).value == "24h"
        await pilot.press(*"OPS-7", "enter")
        await until(lambda: detail.detail is not None and detail.detail.view.acknowledged)
        await settle(app)
        assert detail.detail is not None and detail.detail.view.ack_by == "alice"
        assert "acknowledged by alice" in screen_text(app) and "OPS-7" in screen_text(app)
        assert any(kw.get("title") == "Acknowledged" and "for 24h" in msg for msg, kw in notes)
        ack = await store_rows(app.session, "SELECT * FROM drift_acks")
        assert ack[0]["reason"] == "OPS-7"
        assert 86000 < ack[0]["expires_at"] - ack[0]["created_at"] <= 86400

        # R: asks first (naming the deployed commit), queues the run, offers to open it
        await pilot.press("R")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        assert render.short(sha) in app.screen.detail
        await pilot.press("y")
        await until(
            lambda: isinstance(app.screen, ConfirmScreen) and "Queued run" in app.screen.question
        )
        runs = await store_rows(app.session, "SELECT * FROM runs WHERE trigger = 'reconcile'")
        assert len(runs) == 1 and runs[0]["commit_sha"] == sha and runs[0]["environment"] == "prod"
        await pilot.press("y")
        await until(lambda: type(app.screen).__name__ == "RunScreen")

        # back on the overview, the prod cell carries the drift mark (≈ while acknowledged; ≠
        # once the reconcile's deploy leaves extra.txt behind, a drift not acknowledged)
        await pilot.press("o")
        await until(lambda: isinstance(app.screen, OverviewScreen))
        await until(lambda: "≠" in screen_text(app) or "≈" in screen_text(app))
        assert "drift: prod" in screen_text(app)  # the selection's status line says which

        # on the Changes screen d toggles decided requests: help sends Drift to the palette
        await pilot.press("a")
        await until(lambda: type(app.screen).__name__ == "ChangesScreen")
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen))
        rows = {label: key for key, label, _, _ in app.screen.rows()}
        assert rows["Decided"] == "d" and rows["Drift"] == "^p"
        await pilot.press("escape", "o")

        # the command palette jumps to a drift that is not in sync
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"files:si")
        await asyncio.sleep(0.5)
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, DriftDetailScreen) and app.screen.target == TARGET
        )


def test_env_cell_drift_marks() -> None:
    palette: dict[str, str] = {}

    def cell(drift: str | None, acked: bool = False) -> EnvCell:
        return EnvCell("prod", True, "a" * 40, 0.0, 0, None, "succeeded", 1, drift, acked)

    assert env_cell(cell(None), palette, wide=False).plain == "✓ aaaaaaa ✓"
    assert env_cell(cell("in_sync"), palette, wide=False).plain == "✓ aaaaaaa ✓"  # quiet
    assert env_cell(cell("drifted"), palette, wide=False).plain == "✓ aaaaaaa ✓≠"
    assert env_cell(cell("drifted", True), palette, wide=False).plain == "✓ aaaaaaa ✓≈"
    assert env_cell(cell("unknown"), palette, wide=False).plain == "✓ aaaaaaa ✓?"
    assert env_cell(cell("drifted"), palette, wide=True).plain == "✓ aaaaaaa ✓ ≠ drifted"


def test_drift_filter_words() -> None:
    view = DriftView(
        "site",
        "prod",
        TARGET,
        "files",
        "drifted",
        "1 changed",
        "a" * 40,
        0.0,
        0.0,
        ack_by="bob",
        ack_reason="known",
        ack_until=10.0,
    )
    assert matches(view, "repo:site env:prod state:acked kind:files")
    assert matches(view, "state:drifted bob")
    assert not matches(view, "state:unknown")
    assert not matches(view, "env:dev")


async def test_unknown_target_shows_why(tmp_path: Path) -> None:
    """A check that could not tell shows `?` and its error (inert) everywhere, never "in sync";
    it can be reconciled but there is no drift to acknowledge."""
    ws, _ = make_ws(tmp_path / "ws")
    spec = DriftSpec(name="www", kind="files", path="site", live="/srv/www", host="deploy@web1")
    finding = drift.unknown("deploy@web1: host key changed [red]REFUSED[/]")
    async with console(ws, size=(80, 24), embed=False) as (app, pilot):
        await app.session.db.call(
            drift.record,
            app.session.db.store,
            drift.Target("site", "prod", spec, "a" * 40),
            finding,
            "test",
            render.now() - 2,
            render.now(),
        )
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DriftScreen) and bool(app.screen._shown))
        await settle(app)
        assert "? unknown" in screen_text(app)
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, DriftDetailScreen) and app.screen.detail is not None
        )
        await settle(app)
        text = screen_text(app)
        assert "host key changed [red]REFUSED[/]" in text and "? unknown" in text
        assert app.screen.check_action("reconcile", ()) is True
        assert app.screen.check_action("acknowledge", ()) is None
        await pilot.press("o")
        await until(
            lambda: isinstance(app.screen, OverviewScreen) and "prod ? unknown" in screen_text(app)
        )


async def test_a_viewer_pressing_check_is_told_no_and_the_console_stays(tmp_path: Path) -> None:
    """Checks run commands and reach hosts as the console's user: a viewer may not; the refusal
    is a notification, not a crash of the console (over SSH, the session would end)."""
    ws, _ = make_ws(tmp_path / "ws")
    async with console(ws, size=(80, 24), embed=False) as (app, pilot):
        app.session.actor = Actor("vic", ("viewer",))
        await app.session.db.call(
            drift.record,
            app.session.db.store,
            drift.Target("site", "prod", None, "a" * 40),
            drift.Finding("drifted", "1 commit on main not deployed"),
            "test",
            render.now() - 2,
            render.now(),
        )
        notes = capture_notes(app)
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DriftScreen) and bool(app.screen._shown))
        await pilot.press("c")
        await until(lambda: any("may not check drift" in message for message, _ in notes))
        await settle(app)
        assert app.is_running and isinstance(app.screen, DriftScreen)
        assert not app.screen._checking, "the row still says checking"
