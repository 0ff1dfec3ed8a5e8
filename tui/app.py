"""The Change Ahead console: a Textual app over a `ClientSession`.

The app owns the session's lifecycle within the UI (starting it after the first frame), one
bridge worker that turns the engine's event feed into `EventBatch`es published on the
`engine_events` signal (coalesced to ten a second), themes, user key remaps, and the screen
stack. Screens render read models and call session methods; nothing here touches git, SQL or
subprocesses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import partial

from textual.app import App, SystemCommand
from textual.screen import ModalScreen, Screen
from textual.signal import Signal

from core.api.session import ClientSession
from core.feed import Event
from themes import DEFAULT_THEME, STYLESHEET, THEMES, VARIABLE_DEFAULTS
from tui.commands import AUDIT, CHANGES, DRIFT, HELP, OVERVIEW, QUIT, RUNS, WHO, Command, bindings
from tui.messages import EventBatch
from tui.palette import JumpProvider
from tui.settings import Settings
from tui.workers import KeepRunning


class AheadApp(KeepRunning, App[int]):
    """The console. The app starts `session` after its first frame and, when it owns it,
    closes it (stopping an embedded engine) as it shuts down."""

    CSS_PATH = STYLESHEET
    TITLE = "Change Ahead"
    COMMANDS = App.COMMANDS | {JumpProvider}
    COMMAND_LIST: tuple[Command, ...] = (QUIT, HELP, RUNS, CHANGES, DRIFT, AUDIT, WHO, OVERVIEW)
    BINDINGS = bindings(*COMMAND_LIST)
    """
    | Key | Action |
    | :- | :- |
    | q | Quit |
    | ? | Help for the current screen |
    | r | Runs across every repo |
    | a | Changes waiting for approval |
    | d | Drift of every environment (from the overview: at the selected repo) |
    | u | Audit log and its verification |
    | W | Who else is connected |
    | o | Back to the overview |
    | ctrl+p | Command palette: every command, jump to any repo or run |
    """

    def __init__(
        self,
        session: ClientSession,
        settings: Settings | None = None,
        start_session: bool = True,
        own_session: bool = True,
    ) -> None:
        super().__init__()
        self.session = session
        self._own_session = own_session
        self.settings = settings or Settings()
        self._start_session = start_session
        self.engine_events: Signal[EventBatch] = Signal(self, "engine-events")
        self.ready: Signal[None] = Signal(self, "session-ready")
        self.is_ready = False
        self._pending_events: list[Event] = []
        self.others: tuple[str, ...] = ()
        """The operators of the other open consoles, for the title bar (see `presence`)."""
        self.presence: Signal[None] = Signal(self, "presence")
        self._screen_name = ""

    # -- start-up ---------------------------------------------------------------------------------

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(VARIABLE_DEFAULTS)

    def on_mount(self) -> None:
        for theme in THEMES:
            self.register_theme(theme)
        wanted = self.settings.theme or DEFAULT_THEME
        if wanted in self.available_themes:
            self.theme = wanted
        else:
            self.theme = DEFAULT_THEME
            self.notify(
                f"unknown theme {wanted!r} in your config; using {DEFAULT_THEME}",
                severity="warning",
            )
        self._apply_keymap()
        for warning in self.settings.warnings:
            self.notify(warning, title="Console settings", severity="warning", timeout=10)
        from tui.screens.overview import OverviewScreen

        self.push_screen(OverviewScreen())
        self.set_interval(0.1, self._flush_events, name="event-coalescer")
        if self._start_session:
            self.run_worker(
                self._start(),
                name="session-start",
                group="session",
                description="start the engine session",
                exclusive=True,
            )
        else:
            self._became_ready()

    async def on_unmount(self) -> None:
        if self._own_session:
            await self.session.aclose()

    def _apply_keymap(self) -> None:
        known = {c.id for c in self.all_commands()}
        keymap = {}
        for binding_id, key in self.settings.keymap.items():
            if binding_id in known:
                keymap[binding_id] = key
            else:
                close = difflib.get_close_matches(binding_id, sorted(known), n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.notify(
                    f"keymap: no command {binding_id!r}{hint}", severity="warning", timeout=10
                )
        if keymap:
            self.set_keymap(keymap)

    @staticmethod
    def all_commands() -> list[Command]:
        from tui.screens.audit import AuditScreen
        from tui.screens.change import ChangeScreen
        from tui.screens.changes import ChangesScreen
        from tui.screens.drift import DriftScreen
        from tui.screens.drift_detail import DriftDetailScreen
        from tui.screens.overview import OverviewScreen
        from tui.screens.repo import RepoScreen
        from tui.screens.run import RunScreen
        from tui.screens.runs import RunsScreen
        from tui.screens.who import WhoScreen

        found: dict[str, Command] = {}
        for owner in (
            AheadApp,
            OverviewScreen,
            RepoScreen,
            RunScreen,
            RunsScreen,
            ChangesScreen,
            ChangeScreen,
            AuditScreen,
            WhoScreen,
            DriftScreen,
            DriftDetailScreen,
        ):
            for command in owner.COMMAND_LIST:
                found[command.id] = command
        return list(found.values())

    async def _start(self) -> None:
        await self.session.start()
        self._became_ready()

    def _became_ready(self) -> None:
        self.is_ready = True
        self.ready.publish(None)
        self.run_worker(
            self._follow(),
            name="engine-events",
            group="bridge",
            description="follow the engine's event feed",
            exclusive=True,
        )
        self._refresh_presence()

    async def _follow(self) -> None:
        async for event in self.session.subscribe():
            self._pending_events.append(event)
            if event.kind == "presence":
                self._refresh_presence()

    # -- presence ---------------------------------------------------------------------------------

    def screen_shown(self, name: str) -> None:
        """A screen came to the front: tell the other consoles (Who shows it)."""
        self._screen_name = name
        if self.is_ready:
            self.run_worker(
                partial(self.session.show_screen, name),
                name="presence-screen",
                group="presence",
                description="tell the others which screen this is",
                exclusive=True,
            )

    def _refresh_presence(self) -> None:
        self.run_worker(
            self._load_presence,
            name="presence-load",
            group="presence-load",
            description="who else is connected",
            exclusive=True,
        )

    async def _load_presence(self) -> None:
        if self._screen_name:
            await self.session.show_screen(self._screen_name)
        others = tuple(
            sorted(
                {p.operator for p in await self.session.who() if p.id != self.session.presence_id}
            )
        )
        if others != self.others:
            self.others = others
            self.presence.publish(None)

    def _flush_events(self) -> None:
        if self._pending_events:
            batch, self._pending_events = self._pending_events, []
            self.engine_events.publish(EventBatch(tuple(batch)))

    # -- palette and app-wide actions ----------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        listed = getattr(screen, "COMMAND_LIST", ())
        for command in (*listed, *self.COMMAND_LIST):
            if not command.palette:
                continue
            action = command.action
            target = self if action.startswith("app.") else screen
            name = action.removeprefix("app.")
            if target.check_action(name, ()) is not True:
                continue
            yield SystemCommand(command.label, command.help, partial(target.run_action, name))
        yield from super().get_system_commands(screen)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def _show(self, kind: type[Screen[None]]) -> None:
        """Go to the screen of this kind: back to it if it is in the stack, else push a new one."""
        if isinstance(self.screen, (kind, ModalScreen)):
            return
        if any(isinstance(s, kind) for s in self.screen_stack):
            while not isinstance(self.screen, kind):
                self.pop_screen()
            return
        self.push_screen(kind())

    def action_runs(self) -> None:
        from tui.screens.runs import RunsScreen

        self._show(RunsScreen)

    def action_changes(self) -> None:
        from tui.screens.changes import ChangesScreen

        self._show(ChangesScreen)

    def action_drift(self) -> None:
        from tui.screens.drift import DriftScreen
        from tui.screens.overview import OverviewScreen

        repo = self.screen.selected_repo() if isinstance(self.screen, OverviewScreen) else None
        self._show(DriftScreen)
        if repo is not None and isinstance(self.screen, DriftScreen):
            self.screen.select_repo(repo)

    def action_audit(self) -> None:
        from tui.screens.audit import AuditScreen

        self._show(AuditScreen)

    def action_who(self) -> None:
        from tui.screens.who import WhoScreen

        self._show(WhoScreen)

    def action_overview(self) -> None:
        from tui.screens.overview import OverviewScreen

        while len(self.screen_stack) > 2 and not isinstance(self.screen, OverviewScreen):
            self.pop_screen()

    def open_repo(self, repo: str) -> None:
        from tui.screens.repo import RepoScreen

        self.push_screen(RepoScreen(repo))

    def open_run(self, run_id: int) -> None:
        from tui.screens.run import RunScreen

        self.push_screen(RunScreen(run_id))

    def open_drift(self, repo: str, environment: str, target: str) -> None:
        from tui.screens.drift_detail import DriftDetailScreen

        self.push_screen(DriftDetailScreen(repo, environment, target))

    def open_change(self, change_id: int) -> None:
        from tui.screens.change import ChangeScreen

        self.push_screen(ChangeScreen(change_id))
