"""`ahead drift ...`: the live state against git, from the command line.

    ahead drift [--json]                      latest findings (exit 0 in sync, 1 drift, 2 unknown)
    ahead drift check [REPO [ENV]] [--target]  check now, here, and record it (same exit codes)
    ahead drift show REPO ENV [--target]       what differs: files and diff, or command output
    ahead drift ack REPO ENV --reason TEXT [--for 24h] [--target NAME]
    ahead drift reconcile REPO ENV [--wait]    re-deploy the deployed commit (through its gate)
    ahead drift trust REPO ENV [--target] [--yes | --fingerprint SHA256:...]   pin an SSH host key

Exit codes: 0 every target in sync (acknowledged drift counts as known, not as found), 1 drift
found, 2 some target could not be checked (or was never checked) and none drifted, 3 refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from core import states
from core.api import Actor, Api
from core.cli.listings import emit
from core.errors import InvalidRequest
from core.text import duration, inert, one_line, table
from core.workspace import Workspace

OK, DRIFT, UNKNOWN = 0, 1, 2
GLYPH = states.GLYPHS


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "drift",
        help="the live state against git per environment (exit 0 in sync, 1 drift, "
        "2 could not check)",
    )
    p.add_argument("--json", action="store_true")
    dsub = p.add_subparsers(dest="drift_command", metavar="ACTION")
    q = dsub.add_parser("check", help="check now (in this process) and record the findings")
    q.add_argument("repo", nargs="?")
    q.add_argument("environment", nargs="?")
    q.add_argument("--target", help="one target by name")
    q.add_argument("--json", action="store_true")
    q = dsub.add_parser(
        "show", help="what differs for REPO ENV: files and diff, or the command output"
    )
    q.add_argument("repo")
    q.add_argument("environment")
    q.add_argument("--target")
    q.add_argument("--json", action="store_true")
    q = dsub.add_parser("ack", help="acknowledge the current drift (until it expires or changes)")
    q.add_argument("repo")
    q.add_argument("environment")
    q.add_argument("--reason", required=True)
    q.add_argument(
        "--for", dest="duration", default="24h", help="how long (e.g. 4h, 3d; default 24h)"
    )
    q.add_argument("--target")
    q = dsub.add_parser(
        "reconcile",
        help="queue a run that re-deploys ENV's deployed commit (gated like any change)",
    )
    q.add_argument("repo")
    q.add_argument("environment")
    q = dsub.add_parser(
        "trust", help="pin the SSH host key of a drift target's host (shows the fingerprint)"
    )
    q.add_argument("repo")
    q.add_argument("environment")
    q.add_argument("--target")
    q.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    q.add_argument(
        "--fingerprint", help="pin only if the host presents this fingerprint (SHA256:...)"
    )


def cmd_drift(args: argparse.Namespace) -> int:
    """`ahead drift ...` (also the SSH listings' `drift` and `drift show`)."""
    from core.cli.listings import load_workspace

    ws = load_workspace(args)
    return run(args, ws, Actor.local(ws, args.as_name))


def run(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    action = args.drift_command or "list"
    return asyncio.run(_ACTIONS[action](args, ws, actor))


async def _with_api(ws: Workspace, actor: Actor, fn: Any) -> Any:
    async with Api.open_async(ws, f"cli:{actor.name}") as api:
        return await fn(api)


def _exit_code(items: list[dict[str, Any]]) -> int:
    states = [i["state"] for i in items if not (i["state"] == "drifted" and i.get("acknowledged"))]
    if "drifted" in states:
        return DRIFT
    if "unknown" in states or "not checked" in states:
        return UNKNOWN
    return OK


def _print(items: list[dict[str, Any]]) -> None:
    if not items:
        print("no drift targets: nothing is deployed yet")
        return
    rows = []
    now = time.time()
    for i in items:
        state = i["state"]
        mark = f"{GLYPH.get(state, '·')} {state.replace('_', ' ')}"
        if i.get("acknowledged"):
            ack = i["acknowledged"]
            mark += f" (ack {inert(ack['by'])}, {duration(ack['until'] - now)} left)"
        since = duration(now - i["since"]) if i.get("since") else "-"
        checked = duration(now - i["checked_at"]) + " ago" if i.get("checked_at") else "never"
        rows.append(
            [
                i["repo"],
                i["environment"],
                one_line(i["target"]),
                i["kind"],
                mark,
                since,
                checked,
                one_line(i.get("summary") or "")[:70],
            ]
        )
    print(table(rows, ["REPO", "ENV", "TARGET", "KIND", "STATE", "FOR", "CHECKED", "SUMMARY"]))


def _report(args: argparse.Namespace, items: list[dict[str, Any]]) -> int:
    if args.json:
        emit({"drift": items})
    else:
        _print(items)
    return _exit_code(items)


async def _list(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    async def go(api: Api) -> list[dict[str, Any]]:
        return await api.drift()

    return _report(args, await _with_api(ws, actor, go))


async def _check(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    def started(count: int) -> None:
        if not args.json:
            print(f"checking {count} target(s)...", file=sys.stderr)

    async def go(api: Api) -> list[dict[str, Any]]:
        return await api.drift_check(
            actor, args.repo, args.environment, args.target, on_start=started
        )

    return _report(args, await _with_api(ws, actor, go))


async def _show(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    async def go(api: Api) -> list[dict[str, Any]]:
        return await api.call(api.drift_detail, args.repo, args.environment, args.target)

    items = await _with_api(ws, actor, go)
    if args.json:
        emit({"drift": items})
        return _exit_code(items)
    now = time.time()
    for i in items:
        print(
            f"{i['repo']}/{i['environment']} {one_line(i['target'])} ({i['kind']}): "
            f"{GLYPH.get(i['state'], '?')} {i['state']} for {duration(now - i['since'])}, "
            f"checked {duration(now - i['checked_at'])} ago against {(i['commit_sha'] or '-')[:7]}"
        )
        print(f"  {one_line(i['summary'])}")
        if i.get("acknowledged"):
            ack = i["acknowledged"]
            print(
                f"  acknowledged by {inert(ack['by'])}: {one_line(ack['reason'])} "
                f"(for {duration(ack['until'] - now)} more)"
            )
        d = i["detail"]
        for key, mark in (("changed", "~"), ("added", "+"), ("removed", "-"), ("unreadable", "?")):
            for path in d.get(key) or []:
                print(f"  {mark} {one_line(path)}")
            more = (d.get("counts") or {}).get(key, 0) - len(d.get(key) or [])
            if more > 0:
                print(f"  {mark} ... and {more} more")
        if d.get("error"):
            print(f"  error: {one_line(d['error'])}")
        for item in d.get("items") or []:
            print(f"  * {one_line(item)}")
        text = d.get("diff") or d.get("output") or ""
        if text:
            print()
            for line in text.splitlines():
                print("  " + inert(line))
        print()
    return _exit_code(items)


async def _ack(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    from core.fields import seconds_of

    seconds = seconds_of(args.duration)
    if seconds is None:
        raise InvalidRequest(f"--for {args.duration!r} is not a duration (e.g. 4h, 3d, 1h30m)")

    async def go(api: Api) -> list[str]:
        return await api.call(
            api.drift_ack, actor, args.repo, args.environment, args.target, args.reason, seconds
        )

    names = await _with_api(ws, actor, go)
    print(
        f"acknowledged {', '.join(names)} of {args.repo}/{args.environment} for {duration(seconds)}"
    )
    return OK


async def _reconcile(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    async def go(api: Api) -> int:
        return await api.call(api.reconcile, actor, args.repo, args.environment)

    run_id = await _with_api(ws, actor, go)
    print(
        f"run #{run_id} queued: re-deploys {args.repo}'s deployed commit to {args.environment} "
        "(a gated environment waits for approval; follow it with: ahead show "
        f"{run_id})"
    )
    return OK


async def _trust(args: argparse.Namespace, ws: Workspace, actor: Actor) -> int:
    """`ahead drift trust`: the hosts of the drift targets, through the one trust flow of
    `ahead runner trust` (cli_listings.trust_hosts)."""
    from core.cli.listings import trust_hosts

    async def go(api: Api) -> int:
        targets = await api.trust_drift_targets(actor, args.repo, args.environment, args.target)
        return await trust_hosts(api, actor, targets, args.yes, args.fingerprint)

    result: int = await _with_api(ws, actor, go)
    return result


_ACTIONS = {
    "list": _list,
    "check": _check,
    "show": _show,
    "ack": _ack,
    "reconcile": _reconcile,
    "trust": _trust,
}
