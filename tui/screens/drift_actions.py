"""Drift actions shared by the Drift list and the Drift detail: check, acknowledge, reconcile.

Acknowledging asks for a reason (required) and a duration (24h unless changed); reconciling
asks first, saying which commit is deployed again and whether a gate will wait for approval,
then offers to open the queued run. The engine decides: a refusal (a viewer acknowledging) is
a `CoreError` from the session, shown as an error notification by the app's worker handler.
An operator who may not act is told before any dialog opens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from core.api.views import DriftView
from core.errors import PermissionDenied
from core.fields import seconds_of
from tui import render
from tui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from tui.screens.base import AheadScreen

DEFAULT_ACK = "24h"
MAX_ACK = 90 * 86400  # core/drift.py refuses longer acknowledgements


def where(view: DriftView) -> str:
    """`repo/env target`, for titles and notifications."""
    return f"{render.plain(view.repo).plain}/{view.environment} {render.plain(view.target).plain}"


def may(screen: AheadScreen, action: str) -> bool:
    """Whether this console's operator may `action`; says why not when not."""
    try:
        screen.ahead.session.actor.require(action)
    except PermissionDenied as exc:
        screen.notify(str(exc), title="Not allowed", severity="error", timeout=10, markup=False)
        return False
    return True


def check_summary(views: list[DriftView]) -> str:
    """One line for a finished check: the count by state, or the single target's finding."""
    if len(views) == 1:
        view = views[0]
        return (
            f"{where(view)}: {render.drift(view.state, view.acknowledged, {}).plain} · "
            + render.plain(view.summary).plain
        )
    counts: dict[str, int] = {}
    for view in views:
        key = render.drift_key(view.state, view.acknowledged) or view.state
        counts[key] = counts.get(key, 0) + 1
    return f"{len(views)} targets: " + ", ".join(
        f"{n} {render.DRIFT_GLYPHS[k][2]}" for k, n in sorted(counts.items())
    )


# -- acknowledge ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    reason: str
    seconds: float
    text: str  # the duration as typed ("24h")


class AcknowledgeScreen(ModalScreen[Ack | None]):
    """Dismisses with an `Ack` (a reason and how long), or None (esc)."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="ack_cancel", tooltip="Keep things as they are")
    ]

    def __init__(self, view: DriftView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        view = self.view
        with Vertical(id="dialog", classes="decision"):
            yield Static(
                f"Acknowledge the drift of {where(view)}?", classes="dialog-title", markup=False
            )
            yield Static(render.plain(view.summary, wrap=True))
            yield Static(
                "It stays visible, marked acknowledged, until the time is up or the drift "
                "changes. Audited.",
                markup=False,
            )
            yield Input(placeholder="why? (required)", id="ack-reason")
            yield Input(value=DEFAULT_ACK, placeholder="for how long: 30m, 24h, 7d", id="ack-for")
            with Horizontal(id="decision-buttons"):
                yield Static("", id="decision-hint", markup=False)
                yield Button("Cancel (esc)", id="no")
                yield Button("Acknowledge (enter)", id="yes", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ack-reason", Input).focus()
        self._validate()

    def _missing(self) -> str:
        if not self.query_one("#ack-reason", Input).value.strip():
            return "reason required"
        seconds = seconds_of(self.query_one("#ack-for", Input).value)
        if seconds is None:
            return "duration: like 30m, 24h or 7d"
        if seconds > MAX_ACK:
            return "at most 90d"
        return ""

    def _validate(self) -> None:
        missing = self._missing()
        self.query_one("#yes", Button).disabled = bool(missing)
        self.query_one("#decision-hint", Static).update(
            missing or "enter acknowledges · tab: duration"
        )

    @on(Input.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted)
    @on(Button.Pressed, "#yes")
    def _submit(self) -> None:
        missing = self._missing()
        if missing:
            self.query_one("#decision-hint", Static).update(missing)
            self.query_one(
                "#ack-for" if missing.startswith(("duration", "at most")) else "#ack-reason", Input
            ).focus()
            return
        text = self.query_one("#ack-for", Input).value.strip()
        seconds = seconds_of(text)
        assert seconds is not None
        self.dismiss(Ack(self.query_one("#ack-reason", Input).value.strip(), seconds, text))

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)


def acknowledge(screen: AheadScreen, view: DriftView, done: Callable[[], Any]) -> None:
    """Ask for a reason and a duration, then acknowledge from a worker of `screen`."""
    if not may(screen, "acknowledge"):
        return

    async def send(ack: Ack) -> None:
        targets = await screen.ahead.session.drift_ack(
            view.repo, view.environment, view.target, ack.reason, ack.seconds
        )
        screen.notify(
            f"{where(view)} for {ack.text} ({len(targets)} target)",
            title="Acknowledged",
            markup=False,
        )
        done()

    def answered(ack: Ack | None) -> None:
        if ack is not None:
            screen.run_worker(
                send(ack),
                group="commands",
                name="acknowledge",
                description=f"acknowledge drift of {view.repo}/{view.environment}",
            )

    screen.app.push_screen(AcknowledgeScreen(view), answered)


# -- reconcile --------------------------------------------------------------------------------


def reconcile_text(screen: AheadScreen, view: DriftView) -> str:
    """What a reconcile does, in words: the commit deployed again and the gate it meets."""
    env = view.environment
    text = (
        f"Queues a run of {env}'s deploy stage at the deployed commit {render.short(view.commit)}: "
        f"git's state is deployed again and the live changes are overwritten."
    )
    policy = screen.ahead.session.ws.policies.get(env)
    if policy is not None:
        text += (
            f" {env} is gated: the run waits for {policy.approvals} approval"
            f"{'s' if policy.approvals != 1 else ''} (a: Changes) before it deploys."
        )
    return text


def reconcile(screen: AheadScreen, view: DriftView, done: Callable[[], Any]) -> None:
    """Confirm, queue the reconcile run, then offer to open it."""
    if not may(screen, "reconcile"):
        return

    async def send() -> None:
        run_id = await screen.ahead.session.drift_reconcile(view.repo, view.environment)
        done()

        def open_it(yes: bool | None) -> None:
            if yes:
                screen.ahead.open_run(run_id)

        screen.app.push_screen(
            ConfirmScreen(
                f"Queued run #{run_id}: reconcile {view.repo}/{view.environment}.",
                "Open the run now?",
                confirm="Open run",
            ),
            open_it,
        )

    def answered(yes: bool | None) -> None:
        if yes:
            screen.run_worker(
                send(),
                group="commands",
                name="reconcile",
                description=f"reconcile {view.repo}/{view.environment}",
            )

    screen.app.push_screen(
        ConfirmScreen(
            f"Reconcile {view.repo}/{view.environment}?",
            reconcile_text(screen, view),
            confirm="Reconcile",
            destructive=True,
        ),
        answered,
    )
