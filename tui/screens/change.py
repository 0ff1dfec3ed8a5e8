"""Change: one change request, everything an approver needs to decide it.

The header says what would deploy where and whether the operator at this console may decide
it (and why not). Below, the policy checklist (approvals that count, who may still approve, who
cannot and why, the freeze window, the pinned policy and pipeline) and the decisions so far;
then the commits in base..head, the diff stat and the artifacts of the run's earlier stages
(the plan, the image). At 120 columns and wider the checklist stands beside the commits.
Commit text, authors and artifact paths are untrusted and rendered inert.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from tui import checklist, render
from tui.commands import APPROVE, BACK, DOWN, GATE_RUN, HELP, QUIT, REJECT, UP, bindings
from tui.messages import EventBatch
from tui.screens.base import AheadScreen
from tui.screens.decision import decide


class ChangeScreen(AheadScreen):
    COMMAND_LIST = (APPROVE, REJECT, GATE_RUN, DOWN, UP, BACK, HELP, QUIT)
    BINDINGS = bindings(APPROVE, REJECT, GATE_RUN, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | A | Approve (asks first; production asks you to type the environment's name) |
    | X | Reject with a comment (asks first) |
    | l | Open the run waiting at this gate |
    | j / k | Scroll down / up (pgup / pgdn a page) |
    | esc | Back |
    """

    AUTO_FOCUS = "#change-body"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    def __init__(self, change_id: int) -> None:
        super().__init__()
        self.change_id = change_id
        self.change: dict[str, Any] | None = None

    def body(self) -> ComposeResult:
        yield Static("", id="change-header")
        with VerticalScroll(id="change-body"):
            with Vertical(id="change-side"):
                yield Static("policy checklist", classes="section-title", markup=False)
                yield Static("", id="change-checklist")
                yield Static("decisions", classes="section-title", markup=False)
                yield Static("", id="change-decisions")
            with Vertical(id="change-main"):
                yield Static(
                    "commits", id="change-commits-title", classes="section-title", markup=False
                )
                yield Static("", id="change-commits")
                yield Static("diff stat", classes="section-title", markup=False)
                yield Static("", id="change-diffstat")
                yield Static(
                    "artifacts of earlier stages",
                    id="change-artifacts-title",
                    classes="section-title",
                    markup=False,
                )
                yield Static("", id="change-artifacts")

    def on_mount(self) -> None:
        self.query_one("#change-body", VerticalScroll).loading = True
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> None:
        self._load()

    @work(exclusive=True, group="change-load", name="change-load", description="load the change")
    async def _load(self) -> None:
        self.change = await self.ahead.session.change(self.change_id)
        self.query_one("#change-body", VerticalScroll).loading = False
        self._draw()

    def on_events(self, batch: EventBatch) -> None:
        if self.change is None:
            return
        run_id = self.change["run_id"]
        if any(
            (e.kind.startswith("change.") and e.data.get("change") == self.change_id)
            or (e.run_id == run_id and e.kind != "log")
            for e in batch.events
        ):
            self._load()

    # -- rendering ----------------------------------------------------------------------------------

    def _draw(self) -> None:
        change = self.change
        if change is None:
            return
        self.query_one("#change-header", Static).update(self._header(change))
        self.query_one("#change-checklist", Static).update(self._checklist(change))
        self.query_one("#change-decisions", Static).update(self._decisions(change))
        commits = change["commits"]
        self.query_one("#change-commits-title", Static).update(
            f"commits in {checklist.range_text(change)} ({len(commits)})"
        )
        self.query_one("#change-commits", Static).update(self._commits(change))
        diffstat = change["diffstat"] or "(no changes to files)"
        self.query_one("#change-diffstat", Static).update(render.plain(diffstat, single_line=False))
        self.query_one("#change-artifacts-title", Static).update(
            f"artifacts of earlier stages (run #{change['run_id']})"
        )
        self.query_one("#change-artifacts", Static).update(self._artifacts(change))
        self.set_status(checklist.summary(change, self.ahead.session.actor.name))
        self.refresh_bindings()

    def _header(self, change: dict[str, Any]) -> Text:
        palette = self.app.theme_variables
        actor = self.ahead.session.actor.name
        production = checklist.is_production(
            self.ahead.session.ws.environments, change["environment"]
        )
        text = Text()
        text.append(f"change #{change['id']}  ", style="bold")
        text.append_text(render.plain(change["repo"]))
        text.append(" → ")
        text.append_text(render.plain(change["environment"], style="bold"))
        if production:
            text.append(" (production)", style=palette.get("muted", ""))
        text.append("  ")
        text.append_text(checklist.policy_status(change, palette))
        text.append("\n")
        text.append(
            f"deploys {render.short(change['head_sha'])} over {render.short(change['base_sha'])}",
            style=palette.get("primary", ""),
        )
        run = change.get("run") or {}
        text.append(f" · run #{change['run_id']}")
        if run.get("branch"):
            text.append(" on ")
            text.append_text(render.plain(run["branch"]))
        text.append(" · triggered by ")
        text.append_text(render.plain(change["triggerer"]))
        text.append(
            f" · opened {render.ago(change['created_at'])} ago", style=palette.get("muted", "")
        )
        expires = render.until(change.get("expires_at"))
        if expires and change["status"] in checklist.DECIDABLE:
            text.append(f" · expires in {expires}", style=palette.get("muted", ""))
        if change.get("reason"):
            text.append(" · ")
            text.append_text(render.plain(change["reason"], style=palette.get("muted", "")))
        may, why = checklist.standing(change, actor)
        text.append("\n")
        if may:
            text.append(f"▶ {why}: A approve · X reject", style=f"bold {palette.get('run-ok', '')}")
        else:
            style = palette.get(
                "run-failed" if change["status"] in checklist.DECIDABLE else "muted", ""
            )
            text.append("■ ", style=style)
            text.append_text(render.plain(why, style=style))
        return text

    def _checklist(self, change: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        muted = palette.get("muted", "")
        actor = self.ahead.session.actor.name
        check = change["checklist"]
        have, need = checklist.approvals(change)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style=muted, no_wrap=True)
        grid.add_column()
        if change["status"] in checklist.DECIDABLE:
            more = need - have
            state = Text(f"{have} of {need} approvals", style=palette.get("approval-pending", ""))
            state.append(
                f" · {more} more needed"
                if more > 0
                else " · enough: the gate opens at its next check"
            )
        else:
            state = checklist.policy_status(change, palette)
        grid.add_row("status", state)
        grid.add_row(
            "approved by",
            checklist.names(list(check["approved_by"]), actor, palette, empty="nobody yet"),
        )
        if change["status"] in checklist.DECIDABLE:
            grid.add_row(
                "may approve",
                checklist.names(
                    checklist.may_still_approve(change), actor, palette, empty="nobody else"
                ),
            )
        for index, (name, reason) in enumerate(check["barred"].items()):
            line = render.plain(name, style="bold underline" if name == actor else "")
            line.append(": ")
            line.append_text(render.plain(reason, wrap=True))
            grid.add_row("cannot approve" if index == 0 else "", line)
        frozen = check.get("frozen")
        grid.add_row(
            "freeze",
            Text(f"❄ frozen: {frozen}", style=palette.get("run-cancelled", ""))
            if frozen
            else Text("not frozen now", style=muted),
        )
        policy = check.get("policy")
        if policy is None:
            grid.add_row(
                "policy",
                Text(
                    f"none for {change['environment']} any more",
                    style=palette.get("run-failed", ""),
                ),
            )
        else:
            words = f"{policy['approvals']} from {', '.join(policy['approvers']) or 'nobody'}"
            if policy["forbid"]:
                words += f"; never {', '.join(policy['forbid'])}"
            grid.add_row("policy", render.plain(words, wrap=True))
        grid.add_row(
            "pinned",
            Text(
                f"policy {change['policy_version'][:12]} · pipeline "
                f"{change['pipeline_digest'][:12] or '-'}",
                style=muted,
            ),
        )
        return grid

    def _decisions(self, change: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        counted = set(change["checklist"]["approved_by"])
        if not change["decisions"]:
            return Text("none yet", style=palette.get("muted", ""))
        lines = []
        for decision in change["decisions"]:
            approve = decision["verdict"] == "approve"
            line = Text(
                "✓ " if approve else "✗ ",
                style=palette.get("run-ok" if approve else "run-failed", ""),
            )
            line.append_text(render.plain(decision["operator"], style="bold"))
            line.append(
                f" {decision['verdict']}d {render.ago(decision['created_at'])} ago",
                style=palette.get("muted", ""),
            )
            if approve and decision["operator"] not in counted:
                expired = decision.get("expires_at") and decision["expires_at"] <= render.now()
                line.append(
                    " (expired)" if expired else " (does not count)",
                    style=palette.get("run-failed", ""),
                )
            if decision["comment"]:
                line.append(": ")
                line.append_text(render.plain(decision["comment"], wrap=True))
            lines.append(line)
        return Group(*lines)

    def _commits(self, change: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        if not change["commits"]:
            return Text("none", style=palette.get("muted", ""))
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, max_width=20)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        for commit in change["commits"]:
            grid.add_row(
                Text(render.short(commit["sha"]), style=palette.get("primary", "")),
                render.plain(commit["author"], style=palette.get("muted", "")),
                render.plain(commit["subject"]),
            )
        return grid

    def _artifacts(self, change: dict[str, Any]) -> RenderableType:
        palette = self.app.theme_variables
        if not change["artifacts"]:
            return Text("none", style=palette.get("muted", ""))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(no_wrap=True)
        for artifact in change["artifacts"]:
            step = render.plain(artifact["step"], style=palette.get("muted", ""))
            grid.add_row(
                render.plain(artifact["path"]),
                Text(render.size(artifact["size"])),
                Text("from ", style=palette.get("muted", "")) + step,
            )
        return grid

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            change = self.change
            return (
                change is not None and checklist.standing(change, self.ahead.session.actor.name)[0]
            ) or None
        if action == "gate_run":
            return self.change is not None or None
        return True

    def action_approve(self) -> None:
        if self.change is not None:
            decide(self, self.change, "approve", self._load)

    def action_reject(self) -> None:
        if self.change is not None:
            decide(self, self.change, "reject", self._load)

    def action_gate_run(self) -> None:
        if self.change is not None:
            self.ahead.open_run(self.change["run_id"])

    def action_cursor_down(self) -> None:
        self.query_one("#change-body", VerticalScroll).scroll_down(animate=False)

    def action_cursor_up(self) -> None:
        self.query_one("#change-body", VerticalScroll).scroll_up(animate=False)
