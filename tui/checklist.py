"""How a change request reads in the console: its policy status, who may still approve, and
whether the operator at this console may decide it (and in words, why not).

Pure functions over the dicts `ClientSession.change()` / `changes()` return (see
`core.approvals.change_detail`); no widgets, no engine calls. The engine decides for real in
one transaction; whether this operator may decide is the door's answer (`refusal`, computed by
the code `decide` refuses with), so the operator learns why before pressing a key rather than after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text

from core import api, states
from tui import render

Change = Mapping[str, Any]
DECIDABLE = states.DECIDABLE
STATUS_GLYPHS = states.GLYPHS
is_production = api.is_production  # defined in core: the last environment, and any called prod


def decided_by(change: Change) -> dict[str, str]:
    """Operator → verdict ('approve' / 'reject') of every authenticated decision so far."""
    return {
        d["operator"]: d["verdict"] for d in change.get("decisions", ()) if d.get("authentic", True)
    }


def approvals(change: Change) -> tuple[int, int]:
    """(approvals that count now, approvals required)."""
    check = change["checklist"]
    return len(check["approved_by"]), int(check["required"])


def may_still_approve(change: Change) -> list[str]:
    """Eligible operators who have not decided yet."""
    decided = decided_by(change)
    return [name for name in change["checklist"]["eligible"] if name not in decided]


def standing(change: Change, actor: str) -> tuple[bool, str]:
    """Whether `actor` (this console's operator) may approve or reject `change` now, and why
    (not), in words: the door's `refusal` (None: they may)."""
    refusal = change.get("refusal")
    if refusal:
        return False, str(refusal)
    return True, f"{actor} may approve or reject"


def policy_status(change: Change, palette: Mapping[str, str]) -> Text:
    """`⏸ 1 of 2`, `✓ 2 of 2`, `✗ rejected`…, with a ❄ when the environment is frozen."""
    status = change["status"]
    have, need = approvals(change)
    if status == "open":
        text = Text(f"⏸ {have} of {need}", style=palette.get("approval-pending", ""))
    elif status == "approved":
        text = Text(f"✓ {have} of {need}", style=palette.get("run-ok", ""))
    else:
        colour = {"passed": "run-ok", "rejected": "run-failed"}.get(status, "muted")
        text = Text(f"{STATUS_GLYPHS.get(status, '·')} {status}", style=palette.get(colour, ""))
    if status in DECIDABLE and change["checklist"].get("frozen"):
        text.append(" ❄ frozen", style=palette.get("run-cancelled", ""))
    return text


def names(people: list[str], actor: str, palette: Mapping[str, str], empty: str = "nobody") -> Text:
    """Operator names, the one at this console in bold (operators come from ahead.yml, but
    stay inert all the same)."""
    if not people:
        return Text(empty, style=palette.get("muted", ""))
    text = Text()
    for index, name in enumerate(people):
        if index:
            text.append(", ")
        text.append_text(render.plain(name, style="bold underline" if name == actor else ""))
    return text


def range_text(change: Change) -> str:
    return f"{render.short(change['base_sha'])}..{render.short(change['head_sha'])}"


def summary(change: Change, actor: str) -> str:
    """One line for a status bar: the operator's standing first (what a narrow terminal must
    not cut off), then the change."""
    have, need = approvals(change)
    parts = [
        standing(change, actor)[1],
        f"#{change['id']} {change['repo']} → {change['environment']}",
        f"{have} of {need} approvals"
        + (f" ({', '.join(change['checklist']['approved_by'])})" if have else ""),
    ]
    still = may_still_approve(change)
    if change["status"] in DECIDABLE:
        parts.append(f"may approve: {', '.join(still)}" if still else "nobody else may approve")
    return render.plain(" · ".join(parts)).plain
