"""Approval policies: who must approve a change to an environment, who may not, and when the
gate stays shut.

Policies live in the workspace's ahead.yml (`policies:`), never in the repo being changed, so a
commit that edits its own pipeline cannot loosen its own gate. Each policy has a version (a
digest of its canonical form) that change requests pin: editing the policy voids approvals
given under the old one. Depends on core.fields and core.yamlfile; stdlib zoneinfo for freezes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core import fields as f
from core.yamlfile import Document

FORBID = ("authors", "committers", "triggerer")
POLICY_KEYS = [
    "approvals",
    "approvers",
    "forbid",
    "expires",
    "approval_expires",
    "freeze",
    "reject_needs_comment",
]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKLY = re.compile(
    r"^(?P<d1>[A-Za-z]{3})\w*\s+(?P<t1>\d{1,2}:\d{2})\s*-\s*(?P<d2>[A-Za-z]{3})\w*\s+"
    r"(?P<t2>\d{1,2}:\d{2})(?:\s+(?P<tz>\S+))?$"
)
_DAILY = re.compile(r"^(?P<t1>\d{1,2}:\d{2})\s*-\s*(?P<t2>\d{1,2}:\d{2})(?:\s+(?P<tz>\S+))?$")
_DATES = re.compile(
    r"^(?P<a>\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2})?)\s+-\s+"
    r"(?P<b>\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2})?)(?:\s+(?P<tz>\S+))?$"
)


@dataclass(frozen=True)
class FreezeWindow:
    """A time when the gate stays shut: weekly (`Fri 15:00 - Mon 08:00 Europe/London`), daily
    (`18:00 - 08:00 UTC`) or one-off (`2026-12-24 - 2026-12-27`, whole days, inclusive)."""

    text: str
    kind: str  # weekly, daily, dates
    start: float  # minute of week/day, or epoch seconds for dates
    end: float
    zone: str

    def active(self, now: float) -> bool:
        if self.kind == "dates":
            return self.start <= now < self.end
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        if self.kind == "weekly":
            minute += local.weekday() * 24 * 60
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True)
class Policy:
    environment: str
    approvals: int
    approvers: tuple[str, ...]  # operator names, or role:NAME
    forbid: tuple[str, ...]
    expires: float | None  # seconds an open change request stays open
    approval_expires: float | None  # seconds a granted approval counts
    freeze: tuple[FreezeWindow, ...] = ()
    reject_needs_comment: bool = True
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Digest of the policy as configured: change requests pin it."""
        body = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def frozen(self, now: float) -> FreezeWindow | None:
        for window in self.freeze:
            if window.active(now):
                return window
        return None


def _zone(doc: Document, path: tuple[str | int, ...], name: str | None) -> str:
    zone = name or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise doc.error(
            path, f"unknown time zone {zone!r}", "use an IANA name such as Europe/London or UTC"
        ) from None
    return zone


def _minutes(doc: Document, path: tuple[str | int, ...], text: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise doc.error(path, f"{text!r} is not a time of day", "use HH:MM, 00:00 to 24:00")
    return hours * 60 + minutes


def parse_freeze(doc: Document, path: tuple[str | int, ...], value: Any) -> FreezeWindow:
    text = f.string(doc, path, value, "a freeze window").strip()
    if m := _WEEKLY.match(text):
        d1, d2 = m["d1"].lower(), m["d2"].lower()
        if d1 not in DAYS or d2 not in DAYS:
            raise doc.error(
                path, f"{text!r}: unknown day", "days are Mon, Tue, Wed, Thu, Fri, Sat, Sun"
            )
        first = DAYS.index(d1) * 1440 + _minutes(doc, path, m["t1"])
        last = DAYS.index(d2) * 1440 + _minutes(doc, path, m["t2"])
        return FreezeWindow(text, "weekly", first, last, _zone(doc, path, m["tz"]))
    if m := _DAILY.match(text):
        return FreezeWindow(
            text,
            "daily",
            _minutes(doc, path, m["t1"]),
            _minutes(doc, path, m["t2"]),
            _zone(doc, path, m["tz"]),
        )
    if m := _DATES.match(text):
        zone = _zone(doc, path, m["tz"])
        try:
            start = _moment(m["a"], zone, end=False)
            end = _moment(m["b"], zone, end=True)
        except ValueError as exc:
            raise doc.error(path, f"{text!r}: {exc}", "dates are YYYY-MM-DD") from None
        if end <= start:
            raise doc.error(path, f"{text!r} ends before it starts")
        return FreezeWindow(text, "dates", start, end, zone)
    raise doc.error(
        path,
        f"{text!r} is not a freeze window",
        'write "Fri 15:00 - Mon 08:00 Europe/London", "18:00 - 08:00 UTC" or '
        '"2026-12-24 - 2026-12-27"',
    )


def _moment(text: str, zone: str, end: bool) -> float:
    tz = ZoneInfo(zone)
    if len(text) == 10:  # a whole day: from its start, or to the end of it
        day = date.fromisoformat(text)
        moment = datetime.combine(day + timedelta(days=1) if end else day, time(0), tz)
    else:
        moment = datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=tz)
    return moment.astimezone(UTC).timestamp()


def parse_policy(doc: Document, env: str, value: Any, operators: list[Any]) -> Policy:
    """Validate one environment's policy against the workspace's operators.

    Raises:
        ConfigError: naming the field; also when fewer operators could approve than required.
    """
    path: tuple[str | int, ...] = ("policies", env)
    entry = f.mapping(doc, path, value, "approvals, approvers, forbid, expires, freeze")
    f.check_keys(doc, path, entry, POLICY_KEYS)
    approvals = f.positive_int(
        doc,
        path + ("approvals",),
        f.require(doc, path, entry, "approvals", "say how many approvals, e.g. approvals: 2"),
        "approvals",
    )
    approvers = tuple(
        f.string_list(
            doc,
            path + ("approvers",),
            entry.get("approvers", ["role:approver"]),
            "an operator name or role:NAME",
        )
    )
    names = {op.name for op in operators}
    for i, who in enumerate(approvers):
        if who.startswith("role:"):
            if who[5:] not in ("viewer", "operator", "approver", "admin"):
                raise doc.error(
                    path + ("approvers", i),
                    f"unknown role {who[5:]!r}",
                    "roles are viewer, operator, approver, admin",
                )
        elif who not in names:
            raise doc.error(
                path + ("approvers", i),
                f"no operator named {who!r}",
                "name an operator from operators:, or a role as role:approver",
            )
    forbid = tuple(
        f.string_list(
            doc, path + ("forbid",), entry.get("forbid", list(FORBID)), "who may not approve"
        )
    )
    for i, who in enumerate(forbid):
        if who not in FORBID:
            raise doc.error(
                path + ("forbid", i),
                f"unknown {who!r}",
                "forbid takes authors, committers, triggerer",
            )
    expires = (
        f.duration(doc, path + ("expires",), entry["expires"])
        if entry.get("expires") is not None
        else None
    )
    approval_expires = (
        f.duration(doc, path + ("approval_expires",), entry["approval_expires"])
        if entry.get("approval_expires") is not None
        else None
    )
    freeze = tuple(
        parse_freeze(doc, path + ("freeze", i), item)
        for i, item in enumerate(
            f.string_list(doc, path + ("freeze",), entry.get("freeze") or [], "a window")
        )
    )
    needs_comment = entry.get("reject_needs_comment", True)
    if not isinstance(needs_comment, bool):
        raise doc.error(path + ("reject_needs_comment",), "must be true or false")
    policy = Policy(
        env,
        approvals,
        approvers,
        forbid,
        expires,
        approval_expires,
        freeze,
        needs_comment,
        raw=dict(entry),
    )
    eligible = [op for op in operators if may_approve(policy, op.name, op.roles)]
    if len(eligible) < approvals:
        raise doc.error(
            path + ("approvals",),
            f"needs {approvals} approvals but only {len(eligible)} operator(s) may approve "
            f"({', '.join(op.name for op in eligible) or 'none'})",
            "lower approvals or give more operators the approver role",
        )
    return policy


def may_approve(policy: Policy, name: str, roles: tuple[str, ...]) -> bool:
    """Whether an operator is among the policy's approvers (admins are not implicitly)."""
    for who in policy.approvers:
        if who.startswith("role:") and who[5:] in roles:
            return True
        if who == name:
            return True
    return False
