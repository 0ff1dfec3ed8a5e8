"""Repo: the commits of main, newest first, decorated with the environments each is deployed
to (like `git log --decorate`), pending ones set apart; and the branches with their last run.
Trigger a run of a selected commit or branch, or see which environments have a commit.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from core.api.views import BranchView, CommitView, RepoDetail
from tui import render
from tui.commands import BACK, DOWN, HELP, LAST_RUN, OPEN, QUIT, RUNS, TRIGGER, UP, WHERE, bindings
from tui.messages import EventBatch
from tui.screens.base import AheadScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.table import Table


class RepoScreen(AheadScreen):
    COMMAND_LIST = (OPEN, TRIGGER, WHERE, LAST_RUN, DOWN, UP, BACK, RUNS, HELP, QUIT)
    BINDINGS = bindings(OPEN, TRIGGER, WHERE, LAST_RUN, DOWN, UP, BACK)
    """
    | Key | Action |
    | :- | :- |
    | tab | Switch between commits and branches |
    | enter | Commit: where it is deployed; branch: open its last run |
    | t | Trigger a run of the selected commit or branch (asks first) |
    | w | Which environments have the selected commit |
    | l | Open the selected branch's last run |
    | esc | Back to the overview |
    """

    def __init__(self, repo: str) -> None:
        super().__init__()
        self.repo = repo
        self.detail: RepoDetail | None = None

    def body(self) -> ComposeResult:
        yield Static("", id="repo-header", classes="section-title", markup=False)
        yield Table(id="commits", cursor_type="row")
        yield Static("branches", classes="section-title", markup=False)
        yield Table(id="branches", cursor_type="row")

    def on_mount(self) -> None:
        commits = self.query_one("#commits", DataTable)
        commits.add_columns(" ", "COMMIT", "DEPLOYED", "AGE", "AUTHOR", "SUBJECT")
        branches = self.query_one("#branches", DataTable)
        branches.add_columns("BRANCH", "HEAD", "LAST RUN", "WHEN")
        commits.focus()
        commits.loading = True
        super().on_mount()

    def load(self) -> None:
        self._load()

    @work(exclusive=True, group="repo-load", name="repo-load", description="read the repo")
    async def _load(self) -> None:
        self.detail = await self.ahead.session.repo_detail(self.repo)
        commits = self.query_one("#commits", DataTable)
        commits.loading = False
        self._draw()
        if self.focused is None:
            commits.focus()

    def on_events(self, batch: EventBatch) -> None:
        if self.repo in batch.repos() and batch.kinds() & {
            "refs",
            "deployment",
            "run.queued",
            "run.finished",
            "run.started",
        }:
            self._load()

    def _draw(self) -> None:
        detail = self.detail
        if detail is None:
            return
        palette = self.app.theme_variables
        envs = self.ahead.session.ws.environments
        deployed = "  ".join(f"{env} {render.short(detail.deployed.get(env))}" for env in envs)
        self.query_one("#repo-header", Static).update(f"{self.repo} · {detail.branch} · {deployed}")
        commits = self.query_one("#commits", DataTable)
        row = commits.cursor_row
        commits.clear()
        for commit in detail.commits:
            commits.add_row(*self._commit_row(commit, envs, palette), key=commit.sha)
        if detail.commits:
            commits.move_cursor(row=min(max(row, 0), len(detail.commits) - 1))
        branches = self.query_one("#branches", DataTable)
        brow = branches.cursor_row
        branches.clear()
        for branch in detail.branches:
            branches.add_row(*self._branch_row(branch, palette), key=branch.name)
        if detail.branches:
            branches.move_cursor(row=min(max(brow, 0), len(detail.branches) - 1))
        self.refresh_bindings()
        self._describe_selection()

    @staticmethod
    def _commit_row(
        commit: CommitView, envs: tuple[str, ...], palette: dict[str, str]
    ) -> list[Text]:
        is_pending = bool(commit.pending_in)
        marker = Text(
            "●" if is_pending else "│", style=palette.get("pending" if is_pending else "muted", "")
        )
        where = Text()
        for env in commit.environments:
            if where:
                where.append(" ")
            where.append(f"[{env}]", style=f"bold {palette.get('deployed', '')}")
        subject_style = "" if is_pending else palette.get("muted", "")
        return [
            marker,
            Text(render.short(commit.sha), style=palette.get("primary", "")),
            where,
            Text(render.ago(commit.time), style=palette.get("muted", "")),
            render.plain(commit.author)[:24],
            render.plain(commit.subject, style=subject_style),
        ]

    @staticmethod
    def _branch_row(branch: BranchView, palette: dict[str, str]) -> list[Text]:
        run = branch.last_run
        last = Text("no runs", style=palette.get("muted", ""))
        if run is not None:
            last = Text(f"#{run.id} ") + render.state(run.status, palette)
        return [
            render.plain(branch.name),
            Text(render.short(branch.head), style=palette.get("primary", "")),
            last,
            Text(render.ago(run.created_at) if run else "", style=palette.get("muted", "")),
        ]

    # -- selection ----------------------------------------------------------------------------------

    def _focused_table(self) -> str:
        focused = self.focused
        return focused.id if isinstance(focused, DataTable) and focused.id else "commits"

    def selected_commit(self) -> CommitView | None:
        if self.detail is None or not self.detail.commits:
            return None
        row = self.query_one("#commits", DataTable).cursor_row
        return self.detail.commits[row] if 0 <= row < len(self.detail.commits) else None

    def selected_branch(self) -> BranchView | None:
        if self.detail is None or not self.detail.branches:
            return None
        row = self.query_one("#branches", DataTable).cursor_row
        return self.detail.branches[row] if 0 <= row < len(self.detail.branches) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        on_branches = self._focused_table() == "branches"
        if action in ("trigger", "open"):
            target = self.selected_branch() if on_branches else self.selected_commit()
            return target is not None or None
        if action == "where":
            return (not on_branches and self.selected_commit() is not None) or None
        if action == "last_run":
            branch = self.selected_branch()
            return (on_branches and branch is not None and branch.last_run is not None) or None
        return True

    @on(DataTable.RowHighlighted)
    def _moved(self) -> None:
        self.refresh_bindings()
        self._describe_selection()

    def _describe_selection(self) -> None:
        """The selected commit or branch in words, in the status line."""
        if self.detail is None:
            return
        if self._focused_table() == "branches":
            branch = self.selected_branch()
            if branch is not None:
                run = branch.last_run
                last = (
                    f"last run #{run.id} {run.status} {render.ago(run.created_at)} ago"
                    if run
                    else "no runs yet"
                )
                self.set_status(
                    f"{render.plain(branch.name).plain} at {render.short(branch.head)} · {last}"
                )
            return
        commit = self.selected_commit()
        if commit is None:
            return
        where = ", ".join(commit.environments) or "no environment"
        pending = ", ".join(commit.pending_in)
        text = f"{render.short(commit.sha)} deployed in {where}"
        text += f" · pending in {pending}" if pending else " · everywhere"
        text += f" · {render.plain(commit.author).plain} <{render.plain(commit.email).plain}>"
        text += f" · {render.ago(commit.time)} ago"
        self.set_status(text)

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()
        self._describe_selection()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        if self._focused_table() == "branches":
            self.action_last_run()
        else:
            self.action_where()

    def action_last_run(self) -> None:
        branch = self.selected_branch()
        if branch is not None and branch.last_run is not None:
            self.ahead.open_run(branch.last_run.id)

    @work(group="repo-where", name="where", description="find where a commit is deployed")
    async def action_where(self) -> None:
        commit = self.selected_commit()
        if commit is None:
            return
        has = await self.ahead.session.environments_with(self.repo, commit.sha)
        lines = [
            f"{'✓' if yes else '✗'} {env}: {'has it' if yes else 'not yet'}"
            for env, yes in has.items()
        ]
        self.notify("\n".join(lines), title=f"{render.short(commit.sha)} is in", timeout=6)

    def action_trigger(self) -> None:
        on_branches = self._focused_table() == "branches"
        branch = self.selected_branch() if on_branches else None
        commit = None if on_branches else self.selected_commit()
        if branch is None and commit is None:
            return
        what = (
            f"branch {branch.name}"
            if branch
            else f"commit {render.short(commit.sha if commit else None)}"
        )
        detail = (
            "Main runs every stage it is configured for, deploys included."
            if (branch and branch.name == self.detail.branch if self.detail else False) or commit
            else "Branches run their checks only; they never deploy."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._trigger(branch.name if branch else None, commit.sha if commit else None)

        self.app.push_screen(
            ConfirmScreen(f"Run {self.repo} at {what}?", detail, confirm="Trigger"), answered
        )

    @work(group="commands", name="trigger", description="trigger a run")
    async def _trigger(self, ref: str | None, sha: str | None) -> None:
        run_id = await self.ahead.session.trigger(self.repo, ref=ref, commit=sha)
        self.notify(f"queued run #{run_id}", title="Triggered")
