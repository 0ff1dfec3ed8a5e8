"""Approve or reject a change request: the confirmation, and the call to the engine.

Approving a production change asks the operator to type the environment's name before the
button enables (a deploy to production must never be one stray key away). A rejection always
needs a comment, which already makes it deliberate, so it does not ask for the name. Other
environments are a plain confirm: enter approves, esc keeps things as they are.

The engine's answer is a `Verdict`; a refusal ("bob cannot approve: author of 3f2a1c9") is an
expected answer shown as an error notification, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui import checklist, render
from tui.checklist import Change

if TYPE_CHECKING:
    from tui.screens.base import AheadScreen


@dataclass(frozen=True)
class Decision:
    """What the operator confirmed: 'approve' or 'reject', with a comment."""

    verdict: str
    comment: str


class DecisionScreen(ModalScreen[Decision | None]):
    """Dismisses with a `Decision`, or None when the operator backs out (esc)."""

    BINDINGS = [
        Binding(
            "escape", "cancel", "Cancel", id="decision_cancel", tooltip="Keep things as they are"
        )
    ]

    def __init__(self, change: Change, verdict: str, production: bool) -> None:
        super().__init__()
        assert verdict in ("approve", "reject")
        self.change = change
        self.verdict = verdict
        self.needs_name = production and verdict == "approve"
        self.needs_comment = verdict == "reject"

    def compose(self) -> ComposeResult:
        change = self.change
        env = change["environment"]
        have, need = checklist.approvals(change)
        with Vertical(id="dialog", classes="decision"):
            yield Static(
                f"{self.verdict.capitalize()} change #{change['id']}: {change['repo']} → {env}?",
                classes="dialog-title",
                markup=False,
            )
            yield Static(self._what(), id="decision-what")
            if self.needs_name:
                yield Static(
                    Text.assemble(
                        "This deploys to ",
                        (env, "bold"),
                        ", a production environment.\nType ",
                        (env, "bold"),
                        " to confirm:",
                    ),
                    id="decision-prompt",
                )
                yield Input(placeholder=env, id="confirm-env")
            elif self.verdict == "approve":
                after = "the gate opens" if have + 1 >= need else f"{need - have - 1} more needed"
                yield Static(
                    f"{have} of {need} approvals so far; with yours {after}.", markup=False
                )
            else:
                yield Static(
                    f"Run #{change['run_id']} stops; nothing deploys to {env}.", markup=False
                )
            yield Input(
                placeholder="why? (required)" if self.needs_comment else "comment (optional)",
                id="comment",
            )
            with Horizontal(id="decision-buttons"):
                yield Static("", id="decision-hint", markup=False)
                yield Button("Cancel (esc)", id="no")
                yield Button(
                    f"{self.verdict.capitalize()} (enter)",
                    id="yes",
                    variant="error" if self.verdict == "reject" else "primary",
                )

    def _what(self) -> Text:
        change = self.change
        commits = change["commits"]
        authors = sorted({c["author"] for c in commits})
        text = Text(
            f"deploys {render.short(change['head_sha'])} over {render.short(change['base_sha'])}: "
            f"{len(commits)} commit{'s' if len(commits) != 1 else ''} by "
        )
        text.append_text(render.plain(", ".join(authors) or "nobody", wrap=True))
        if commits:
            text.append("\nlatest: ")
            text.append_text(render.plain(commits[0]["subject"], wrap=True))
        return text

    def on_mount(self) -> None:
        self.query_one("#confirm-env" if self.needs_name else "#comment", Input).focus()
        self._validate()

    def _missing(self) -> str:
        """What still stops the button, in words ('' when nothing does)."""
        env = self.change["environment"]
        if self.needs_name and self.query_one("#confirm-env", Input).value.strip() != env:
            return f"type {env} first"
        if self.needs_comment and not self.query_one("#comment", Input).value.strip():
            return "comment required"
        return ""

    def _validate(self) -> None:
        missing = self._missing()
        self.query_one("#yes", Button).disabled = bool(missing)
        self.query_one("#decision-hint", Static).update(missing or "enter confirms · tab: comment")

    @on(Input.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted, "#confirm-env")
    def _name_entered(self) -> None:
        missing = self._missing()
        if missing.startswith("type "):
            self.query_one("#decision-hint", Static).update(
                f"not {self.change['environment']}: type it exactly"
            )
            return
        if missing:  # a comment is required: go and write it
            self.query_one("#comment", Input).focus()
            return
        self._submit()  # the name is right and nothing else is needed: enter confirms

    @on(Input.Submitted, "#comment")
    def _comment_entered(self) -> None:
        self._submit()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self._submit()

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        missing = self._missing()
        if missing:
            self.query_one("#decision-hint", Static).update(missing)
            target = "#confirm-env" if missing.startswith("type ") else "#comment"
            self.query_one(target, Input).focus()
            return
        self.dismiss(Decision(self.verdict, self.query_one("#comment", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


def decide(screen: AheadScreen, change: Change, verdict: str, done: Callable[[], Any]) -> None:
    """Ask the operator to confirm `verdict` on `change`, then send it to the engine from a
    worker of `screen`, show the engine's verdict and call `done` (to reload)."""
    environments = screen.ahead.session.ws.environments
    production = checklist.is_production(environments, change["environment"])

    def answered(decision: Decision | None) -> None:
        if decision is not None:
            screen.run_worker(
                send_decision(screen, cast(int, change["id"]), decision, done),
                group="commands",
                name=decision.verdict,
                description=f"{decision.verdict} change #{change['id']}",
            )

    screen.app.push_screen(DecisionScreen(change, verdict, production), answered)


async def send_decision(
    screen: AheadScreen, change_id: int, decision: Decision, done: Callable[[], Any]
) -> None:
    """Send a confirmed decision to the engine and show its verdict (refusals as errors)."""
    session = screen.ahead.session
    if decision.verdict == "approve":
        verdict = await session.approve(change_id, decision.comment)
    else:
        verdict = await session.reject(change_id, decision.comment)
    title = (
        {"approve": "Approved", "reject": "Rejected"}[decision.verdict] if verdict.ok else "Refused"
    )
    screen.notify(
        render.plain(verdict.message).plain,
        title=title,
        severity="information" if verdict.ok else "error",
        timeout=8 if verdict.ok else 12,
        markup=False,
    )
    done()
