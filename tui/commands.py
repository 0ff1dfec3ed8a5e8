"""Every console command, declared once.

A `Command` gives the binding (with an id users can remap and a tooltip), the footer hint and
the command-palette entry. Screens list the commands they offer in `COMMAND_LIST`; their
`BINDINGS` are derived from it, the help screen reads the active bindings, and the palette
offers each command whose `check_action` allows it now.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True)
class Command:
    id: str
    key: str
    action: str
    label: str
    help: str
    show: bool = True
    palette: bool = True
    priority: bool = False

    def binding(self) -> Binding:
        return Binding(
            self.key,
            self.action,
            self.label,
            show=self.show,
            id=self.id,
            tooltip=self.help,
            priority=self.priority,
        )


def bindings(*commands: Command) -> list[BindingType]:
    return [c.binding() for c in commands]


QUIT = Command(
    "quit", "q", "app.quit", "Quit", "Leave the console (the engine stops if it runs here)"
)
HELP = Command("help", "question_mark", "app.help", "Help", "Every key of this screen")
BACK = Command("back", "escape", "back", "Back", "Back to the previous screen")
FILTER = Command("filter", "slash", "filter", "Filter", "Filter the list by text")
OPEN = Command("open", "enter", "open", "Open", "Open the selected item", show=True)
DOWN = Command("down", "j", "cursor_down", "Down", "Move down", show=False, palette=False)
UP = Command("up", "k", "cursor_up", "Up", "Move up", show=False, palette=False)
TRIGGER = Command(
    "trigger", "t", "trigger", "Trigger", "Queue a run of the selected repo, commit or branch"
)
CANCEL = Command("cancel", "c", "cancel", "Cancel", "Cancel the selected run (asks first)")
RETRY = Command("retry", "R", "retry", "Retry", "Run the selected finished run's commit again")
RUNS = Command("runs", "r", "app.runs", "Runs", "Recent runs across every repo")
OVERVIEW = Command("overview", "o", "app.overview", "Overview", "Repos by environment", show=False)
LAST_RUN = Command("last_run", "l", "last_run", "Last run", "Open the selected repo's last run")
SORT = Command("sort", "s", "sort", "Sort", "Sort by name, lag or state")
FOLLOW = Command("follow", "f", "follow", "Follow", "Follow the end of the log, or stop following")
NEXT_MATCH = Command("next_match", "n", "next_match", "Next", "Next search match", show=False)
PREV_MATCH = Command("prev_match", "N", "prev_match", "Prev", "Previous search match", show=False)
PREV_STAGE = Command(
    "prev_stage", "h", "prev_stage", "◀ Stage", "Select the previous stage", show=False
)
NEXT_STAGE = Command(
    "next_stage", "l", "next_stage", "Stage ▶", "Select the next stage", show=False
)
WHERE = Command("where", "w", "where", "Where", "Which environments have the selected commit")
CHANGES = Command("changes", "a", "app.changes", "Changes", "Change requests waiting for approval")
AUDIT = Command(
    "audit", "u", "app.audit", "Audit", "The audit log and whether its hash chain holds"
)
APPROVE = Command(
    "approve",
    "A",
    "approve",
    "Approve",
    "Approve the change (asks first; production asks you to type its name)",
)
REJECT = Command(
    "reject", "X", "reject", "Reject", "Reject the change with a comment (stops its run)"
)
DECIDED = Command(
    "decided", "d", "decided", "Decided", "Show decided change requests too, or only open ones"
)
GATE_RUN = Command("gate_run", "l", "gate_run", "Run", "Open the run waiting at this gate")
VERIFY = Command("verify", "v", "verify", "Verify", "Check the audit log's hash chain again now")
WHO = Command(
    "who", "W", "app.who", "Who", "Who else is connected, since when, on which screen", show=False
)
DRIFT = Command(
    "drift", "d", "app.drift", "Drift", "Drift: every environment's live state against git"
)
CHECK = Command("check", "c", "check", "Check", "Check the selected drift target now")
CHECK_ALL = Command(
    "check_all", "C", "check_all", "Check all", "Check every drift target now", show=False
)
ACKNOWLEDGE = Command(
    "acknowledge",
    "A",
    "acknowledge",
    "Ack",
    "Acknowledge the drift with a reason, for a while (it stays visible)",
)
RECONCILE = Command(
    "reconcile",
    "R",
    "reconcile",
    "Reconcile",
    "Re-deploy the deployed commit through the pipeline (asks first)",
)
