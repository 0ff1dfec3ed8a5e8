"""The listings of the `ahead` command line: status, runs and changes (with drift, in
core/cli/drift.py), and what every command shares: the door on the workspace, the exit codes,
`--json`, the table helpers, and trusting a host key.

Both front ends that list use this module: `ahead` (core/cli/commands.py) and the read-only SSH
listings (core/serve/listing.py). It reaches core only through the door (core.api), and imports
neither core.cli nor core.serve, so the SSH server can run the listings without importing the
command line that starts it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from core import states, workspace
from core.api import Actor, Api, DatabaseError
from core.api.views import TrustTarget
from core.api.wire import jsonable
from core.errors import CoreError, PermissionDenied
from core.text import duration as text_duration
from core.text import one_line
from core.text import table as text_table
from core.workspace import Workspace

OK, FAILED, USAGE, REFUSED = 0, 1, 2, 3
TERMINAL = states.TERMINAL
GLYPH = states.GLYPHS


def add_parsers(sub: Any) -> None:
    """The listings' subcommands (as `ahead` and the SSH listings parse them)."""
    p = sub.add_parser(
        "status", help="each repo: head of main, last run, deployed and pending per environment"
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("runs", help="recent runs")
    p.add_argument("--repo")
    p.add_argument("--status", choices=list(states.RunState))
    p.add_argument("--branch")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")


def add_changes_parser(sub: Any) -> None:
    p = sub.add_parser("changes", help="change requests waiting at approval gates")
    p.add_argument("--all", action="store_true", help="decided ones too")
    p.add_argument("--json", action="store_true")


def run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command: expected failures print one line and give the exit code."""
    try:
        return handler(args)
    except PermissionDenied as exc:
        print(f"ahead: {exc}", file=sys.stderr)
        return REFUSED
    except CoreError as exc:
        print(f"ahead: {exc}", file=sys.stderr)
        return FAILED
    except DatabaseError as exc:  # a damaged page met outside the store's own checks
        print(
            f"ahead: the store is damaged ({exc}): run `ahead check`; restore it from a backup",
            file=sys.stderr,
        )
        return FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return OK


def load_workspace(args: argparse.Namespace) -> Workspace:
    return workspace.read(workspace.find(args.workspace))


@contextlib.contextmanager
def door(args: argparse.Namespace, write: bool = False) -> Iterator[Api]:
    """The door (core.api) on the workspace's store. `write`: a person's decision or request is
    about to be written: the store must pass `PRAGMA quick_check` first (0.13 s on a 100 MB
    store), so nothing is added to a damaged store."""
    with Api.open(load_workspace(args), write=write) as api:
        yield api


def emit(data: Any) -> None:
    """Print `--json` output, under the one naming scheme of core.api.wire (README: JSON output)."""
    print(json.dumps(jsonable(data), indent=2, sort_keys=True, default=str))


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return duration(time.time() - ts) + " ago"


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else text_duration(seconds)


def short(sha: str | None) -> str:
    return sha[:7] if sha else "-"


def table(rows: list[list[str]], header: list[str]) -> None:
    print(text_table(rows, header))


def cmd_status(args: argparse.Namespace) -> int:
    with door(args) as api:
        data = api.status()
    if args.json:
        emit(data)
        return OK
    print(f"workspace {data.workspace}  engine: {data.engine.holder or 'not running'}")
    envs = data.environments
    rows = []
    for repo in data.repos:
        last = repo.last_run
        run = f"#{last.id} {GLYPH.get(last.status, '?')} {last.status}" if last else "-"
        row = [repo.name, short(repo.head_commit), run]
        for env in envs:
            e = repo.environments[env]
            if not e.deploys and not e.deployed_commit:
                row.append("-")
                continue
            cell = short(e.deployed_commit) if e.deployed_commit else "never"
            if e.pending:
                cell += f" +{e.pending} ({duration(e.lag_seconds)})"
            if e.lock and e.lock.state == "needs_operator":
                cell += " LOCKED"
            row.append(cell)
        rows.append(row)
        if repo.error:
            rows.append(["", "", one_line(repo.error)[:100]] + [""] * len(envs))
    table(rows, ["REPO", "MAIN", "LAST RUN", *[e.upper() for e in envs]])
    return OK


def cmd_runs(args: argparse.Namespace) -> int:
    with door(args) as api:
        rows = api.runs(repo=args.repo, status=args.status, branch=args.branch, limit=args.limit)
    if args.json:
        emit({"runs": rows})
        return OK
    out = []
    for r in rows:
        took = (r["finished_at"] or time.time()) - r["started_at"] if r["started_at"] else None
        out.append(
            [
                f"#{r['id']}",
                r["repo"],
                one_line(r["branch"])[:24],
                short(r["commit_sha"]),
                f"{GLYPH.get(r['status'], '?')} {r['status']}",
                r["trigger"],
                ago(r["created_at"]),
                duration(took),
                one_line(r["subject"])[:40],
            ]
        )
    table(
        out, ["RUN", "REPO", "BRANCH", "COMMIT", "STATUS", "TRIGGER", "QUEUED", "TOOK", "SUBJECT"]
    )
    return OK


def cmd_changes(args: argparse.Namespace) -> int:
    with door(args) as api:
        rows = api.changes(include_decided=args.all)
    if args.json:
        emit({"changes": rows})
        return OK
    if not rows:
        print("no change requests waiting" if not args.all else "no change requests")
        return OK
    table(
        [
            [
                f"#{r['id']}",
                r["repo"],
                r["environment"],
                f"{short(r['base_sha'])}..{short(r['head_sha'])}",
                str(len(r["commits"])),
                r["status"],
                f"run #{r['run_id']}",
                ago(r["created_at"]),
                one_line(r["reason"] or "")[:40],
            ]
            for r in rows
        ],
        ["CHANGE", "REPO", "ENV", "RANGE", "COMMITS", "STATUS", "RUN", "OPENED", "NOTE"],
    )
    return OK


async def trust_hosts(
    api: Api, actor: Actor, targets: list[TrustTarget], yes: bool, fingerprint: str | None
) -> int:
    """Pin the SSH host key of each target (a remote runner's host, or a drift target's host),
    only after a person (or the `--fingerprint` a script was given) confirms it; audited as
    `host.trust`. One flow for `ahead runner trust` and `ahead drift trust`: the same known_hosts,
    prompt, refusals (exit 1), and the admin role (exit 3)."""
    for target in targets:
        host = await api.scan_host(target)
        print(
            f"{target.label} ({target.address}) presents the {host.algorithm} host key {host.fingerprint}"
        )
        if host.trusted:
            print("already trusted")
            continue
        if host.pinned:
            print(
                f"WARNING: this is NOT the key trusted so far ({', '.join(host.pinned)}). Trust it only if you "
                "know why the host key changed."
            )
        if not _confirm_host_key(yes, fingerprint, host.fingerprint):
            return FAILED
        where = await api.call(api.trust_host, actor, host)
        print(f"trusted: pinned in {where}")
    hosts = ", ".join(sorted({t.address for t in targets}))
    print(
        f"The engine logs in with its own key; add this line to the authorized_keys of the login user on {hosts}:"
    )
    print(api.engine_public_key())
    return OK


def _confirm_host_key(yes: bool, fingerprint: str | None, found: str) -> bool:
    """--fingerprint must match; without it, --yes or a typed "yes" confirms."""
    if fingerprint is not None:
        expected = fingerprint if fingerprint.startswith("SHA256:") else "SHA256:" + fingerprint
        if expected != found:
            print(
                f"ahead: refusing: the host presents {found}, not {expected}: not trusted",
                file=sys.stderr,
            )
            return False
        return True
    if yes:
        return True
    try:
        answer = input(
            "Compare it with the host's own key (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub "
            "on the host). Trust it? Type yes: "
        )
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        print(
            "ahead: not trusted (nothing changed); scripts: --fingerprint SHA256:... or --yes",
            file=sys.stderr,
        )
        return False
    return True
