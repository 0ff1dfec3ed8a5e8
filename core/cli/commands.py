"""The `ahead` command line.

Global options come before the command (`ahead --workspace DIR status`). Every listing takes
`--json`. Exit codes: 0 ok, 1 failure or not found, 2 usage. Expected failures print one clear
line (never a traceback); untrusted text is printed with control sequences removed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import retention, workspace
from core.api import Actor, Api
from core.api.wire import jsonable
from core.cli import drift as cli_drift
from core.cli import listings as cli_listings
from core.cli.listings import (
    FAILED,
    GLYPH,
    OK,
    REFUSED,
    TERMINAL,
    USAGE,
    ago,
    door,
    duration,
    emit,
    load_workspace,
    short,
    table,
)
from core.errors import CoreError, InvalidRequest
from core.text import LOG_FORMAT, InertFormatter, inert, inert_output, one_line
from core.workspace import Workspace

__all__ = ["FAILED", "OK", "REFUSED", "TERMINAL", "USAGE", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ahead", description="Change Ahead: a terminal console for GitOps."
    )
    parser.add_argument(
        "--workspace",
        "-w",
        metavar="DIR",
        help="the workspace (default: $AHEAD_WORKSPACE, "
        "then the current directory and its parents)",
    )
    parser.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="act as operator NAME (allowed when NAME's os_users lists you)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log what the engine does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a workspace (ahead.yml) in DIR")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--demo", action="store_true", help="create the self-contained demo workspace")
    sub.add_parser("check", help="validate ahead.yml, the repos and their pipelines")
    sub.add_parser("engine", help="run the engine in the foreground")
    cli_listings.add_parsers(sub)
    p = sub.add_parser("show", help="a run: stages, steps, states and timings")
    p.add_argument("run", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("logs", help="the log of a run")
    p.add_argument("run", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = sub.add_parser("pending", help="commits on main not yet deployed to an environment")
    p.add_argument("repo")
    p.add_argument("environment")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "trigger", help="queue a run of REPO (head of main unless --ref or --commit)"
    )
    p.add_argument("repo")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ref", help="a branch or tag")
    group.add_argument("--commit", help="a commit id")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to end (runs it here if no engine is running)",
    )
    p = sub.add_parser("cancel", help="cancel a queued or running run")
    p.add_argument("run", type=int)
    p = sub.add_parser("retry", help="run a finished run's commit again")
    p.add_argument("run", type=int)
    p = sub.add_parser(
        "notify", help="tell the engine a repo changed (for a git server's post-receive hook)"
    )
    p.add_argument("repo")
    cli_listings.add_changes_parser(sub)
    p = sub.add_parser(
        "change", help="a change request: commits, diff stat, artifacts, policy checklist"
    )
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("approve", help="approve a change request (exit 3 when policy refuses)")
    p.add_argument("id", type=int)
    p.add_argument("--comment", default="")
    p = sub.add_parser(
        "reject", help="reject a change request; its run stops (exit 3 when refused)"
    )
    p.add_argument("id", type=int)
    p.add_argument("--comment", default="")
    p = sub.add_parser(
        "locks",
        help="environment locks: deploys in progress, environments an interrupted deploy left locked",
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "unlock",
        help="release an environment locked after an interrupted deploy (admin or approver; audited)",
    )
    p.add_argument("repo")
    p.add_argument("environment")
    p.add_argument("--reason", required=True, help="what you checked before unlocking")
    p = sub.add_parser("audit", help="the audit log")
    p.add_argument(
        "action",
        nargs="?",
        choices=["verify", "head"],
        help="verify: check the hash chain; head: print SEQ:HASH of the newest entry, to keep off this host",
    )
    p.add_argument(
        "--head",
        metavar="SEQ:HASH",
        help="with verify: the chain must still hold this entry unchanged",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=100)
    cli_drift.add_parser(sub)
    p = sub.add_parser(
        "runner", help="remote runners: `runner trust NAME` pins a runner's SSH host key"
    )
    runner_sub = p.add_subparsers(dest="runner_command", metavar="ACTION", required=True)
    p = runner_sub.add_parser(
        "trust",
        help="show the runner's host key fingerprint, pin it after you confirm, "
        "print the engine's public key for the runner's authorized_keys",
    )
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="trust without asking (scripts)")
    p.add_argument(
        "--fingerprint", metavar="SHA256:...", help="trust only if the host presents this key"
    )
    p = sub.add_parser(
        "serve", help="run the engine and the SSH server: operators log in with their keys"
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8022",
        metavar="HOST:PORT",
        help="address for the SSH server (default 127.0.0.1:8022)",
    )
    sub.add_parser("console", help="open the console (the default when run in a terminal)")
    p = sub.add_parser("demo", help="open the demo workspace (created on first use)")
    p.add_argument("dir", nargs="?")
    return parser


OpenConsole = Callable[[Workspace, Actor], int]
_open_console: OpenConsole | None = None
_console_zygote: tuple[str, ...] = ()


def main(
    argv: list[str] | None = None,
    open_console: OpenConsole | None = None,
    console_zygote: tuple[str, ...] = (),
) -> int:
    """Run the `ahead` command.

    Args:
        argv: arguments (default: sys.argv[1:]).
        open_console: opens the interactive console on a workspace; given by the `tui` package's
            launcher (core never imports the UI). Without it, `ahead` and `ahead demo` print.
        console_zygote: the program `ahead serve` forks SSH consoles from (also from the UI).
    """
    global _open_console, _console_zygote
    _open_console = open_console
    _console_zygote = console_zygote
    parser = build_parser()
    with inert_output():  # usage errors quote the arguments (an SSH client's, for a listing)
        args = parser.parse_args(argv)
    stderr = logging.StreamHandler()
    stderr.setFormatter(InertFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[stderr])
    if args.command is None:
        if _open_console is None or not interactive():
            parser.print_help()
            return USAGE
        args.command = "console"
    if args.command in ("console", "demo"):  # the full-screen console owns the terminal
        return _run(args)
    with inert_output():  # everything the CLI prints: repo and operator text cannot emit escapes
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    return cli_listings.run(COMMANDS[args.command], args)


# -- helpers --------------------------------------------------------------------------------------


def interactive() -> bool:
    """A terminal on both ends: only then does `ahead` open the full-screen console."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def console_log(ws: Workspace) -> None:
    """While the console owns the terminal, the engine logs to a file in the state directory."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(ws.state_dir / "console.log", encoding="utf-8")
    handler.setFormatter(InertFormatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# -- commands -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from core import demo

    target = Path(args.dir).expanduser().resolve()
    if args.demo:
        demo.create(target)
        print(f"created the demo workspace in {target}\nnext: ahead --workspace {target} status")
        return OK
    path = demo.init_workspace(target)
    print(f"created {path}\nedit it to list your repos, then: ahead --workspace {target} check")
    return OK


def cmd_check(args: argparse.Namespace) -> int:
    from core.api import check

    report = check.check(load_workspace(args))
    for line in report.lines:
        print(line)
    return FAILED if report.problems else OK


def cmd_engine(args: argparse.Namespace) -> int:
    from core.engine import Engine

    ws = load_workspace(args)
    if not args.verbose:
        logging.getLogger("ahead").setLevel(logging.INFO)

    async def serve() -> None:
        async with Engine(ws) as engine:
            print(f"engine running for {ws.file} (ctrl+c to stop)", flush=True)
            await _until_stopped(engine)
        _fenced_out(engine)

    asyncio.run(serve())
    return OK


def _fenced_out(engine: Any) -> None:
    """An engine that lost its lease or its store ends the command with that one line."""
    from core.errors import LeaseLost

    if engine.lost_reason is not None:
        raise LeaseLost(engine.lost_reason)


async def _until_stopped(engine: Any) -> None:
    """Wait for ctrl+c, SIGTERM, or the engine losing its lease."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(engine.lost_lease.wait())}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


def cmd_serve(args: argparse.Namespace) -> int:
    """The engine and the SSH server (core.serve): each operator's key gives them the console."""
    from core.engine import Engine
    from core.serve.guard import raise_fd_limit
    from core.serve.server import ServeOptions, SSHServer, parse_listen, port_in_use

    raise_fd_limit()  # ulimit -n up to the hard limit: idle connections must not starve the engine
    ws = load_workspace(args)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"ahead: {exc}", file=sys.stderr)
        return USAGE
    busy = port_in_use(host, port)
    if busy:  # before the engine starts and takes the workspace
        raise CoreError(busy)
    if not args.verbose:
        logging.getLogger("ahead").setLevel(logging.INFO)
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(ws.state_dir / "serve.log", encoding="utf-8")
    log_file.setFormatter(InertFormatter(LOG_FORMAT))
    logging.getLogger("ahead").addHandler(log_file)
    options = ServeOptions(host=host, port=port, console_argv=_console_zygote)

    async def serve() -> None:
        async with Engine(ws, name="ahead serve") as engine:
            server = SSHServer(ws, options)
            await server.start()
            try:
                print(
                    f"serving {ws.file} on {host}:{server.port}: ssh -p {server.port} "
                    f"OPERATOR@{host} (ctrl+c to stop)",
                    flush=True,
                )
                await _until_stopped(engine)
            finally:
                await server.aclose()
        _fenced_out(engine)

    asyncio.run(serve())
    return OK


def cmd_show(args: argparse.Namespace) -> int:
    with door(args) as api:
        data = api.show(args.run)
    if args.json:
        emit(data)
        return OK
    print(
        f"run #{data['id']}  {data['repo']}  {one_line(data['branch'])}  {short(data['commit_sha'])}  "
        f"{GLYPH.get(data['status'], '?')} {data['status']}"
    )
    print(
        f"  {one_line(data['subject'])}  — {one_line(data['author'])} <{one_line(data['author_email'])}>"
    )
    print(
        f"  trigger {data['trigger']} by {one_line(data['actor'])}, queued {ago(data['created_at'])}"
    )
    if data["error"]:
        print(f"  error: {inert(data['error'])}")
    for stage in data["stages"]:
        took = (
            (stage["finished_at"] - stage["started_at"])
            if stage["started_at"] and stage["finished_at"]
            else None
        )
        env = f" → {stage['environment']}" if stage["environment"] else ""
        print(
            f"  {GLYPH.get(stage['status'], '?')} {stage['name']}{env}  {stage['status']}  {duration(took)}"
        )
        for step in stage["steps"]:
            took = (
                (step["finished_at"] - step["started_at"])
                if step["started_at"] and step["finished_at"]
                else None
            )
            code = f" exit {step['exit_code']}" if step["exit_code"] is not None else ""
            print(
                f"      {GLYPH.get(step['status'], '?')} {one_line(step['name'])}  {step['status']}{code}  {duration(took)}"
            )
    for art in data["artifacts"]:
        print(
            f"  artifact {one_line(art['path'])}  {art['size']} bytes  sha256 {art['sha256'][:12]}"
        )
    return OK


def cmd_logs(args: argparse.Namespace) -> int:
    with door(args) as api:
        run = api.run(args.run)
        names = api.step_names(args.run)
        position = (0, -1)
        current = None
        shown = False
        while True:
            lines = api.logs(args.run, position)
            shown = shown or bool(lines)
            for line in lines:
                if line["step_id"] not in names:
                    names = api.step_names(args.run)
                if args.json:
                    print(
                        json.dumps(
                            jsonable(
                                {
                                    "step": names.get(line["step_id"]),
                                    "seq": line["seq"],
                                    "ts": line["ts"],
                                    "line": line["line"],
                                }
                            )
                        )
                    )
                else:
                    if line["step_id"] != current:
                        current = line["step_id"]
                        print(f"── {one_line(names.get(current, str(current)))} ──")
                    print(inert(line["line"]))
                position = (line["step_id"], line["seq"])
            sys.stdout.flush()
            if lines:
                continue
            if not args.follow or run["status"] in TERMINAL:
                break
            time.sleep(0.2)
            run = api.run(args.run)
    note = (
        None
        if shown
        else retention.removed_note(run.get("finished_at"), api.ws.settings.keep_logs_days)
    )
    if note:
        print(f"ahead: run #{args.run}: {note}", file=sys.stderr)
    return OK


def cmd_pending(args: argparse.Namespace) -> int:
    with door(args) as api:
        commits = api.pending(args.repo, args.environment)
    if args.json:
        emit(
            {
                "repo": args.repo,
                "environment": args.environment,
                "pending": [dataclasses.asdict(c) for c in commits],
            }
        )
        return OK
    table(
        [
            [c.short, ago(c.time), one_line(c.author)[:20], one_line(c.subject)[:60]]
            for c in commits
        ],
        ["COMMIT", "AGE", "AUTHOR", "SUBJECT"],
    )
    return OK


def _wait(api: Api, run_id: int) -> int:
    from core.engine import Engine

    holder = api.engine().holder
    if holder is None:

        async def run_here() -> dict[str, Any]:
            async with Engine(
                api.ws, only_runs={run_id}, name=f"ahead trigger --wait (pid {os.getpid()})"
            ) as engine:
                return await engine.wait_run(run_id)

        row = asyncio.run(run_here())
    else:
        print(f"waiting for run #{run_id} on {holder}", flush=True)
        row = api.wait_for_run(run_id)
    status = row.get("status", "missing")
    print(
        f"run #{run_id} {GLYPH.get(status, '?')} {status}"
        + (f": {inert(row['error'])}" if row.get("error") else "")
    )
    return OK if status == "succeeded" else FAILED


def cmd_trigger(args: argparse.Namespace) -> int:
    with door(args, write=True) as api:
        run_id = api.trigger(
            Actor.local(api.ws, args.as_name), args.repo, ref=args.ref, commit=args.commit
        )
        print(f"queued run #{run_id}", flush=True)
        if args.wait:
            return _wait(api, run_id)
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with door(args, write=True) as api:
        state = api.cancel(Actor.local(api.ws, args.as_name), args.run)
    print(f"run #{args.run}: {state}")
    return OK


def cmd_retry(args: argparse.Namespace) -> int:
    with door(args, write=True) as api:
        run_id = api.retry(Actor.local(api.ws, args.as_name), args.run)
    print(f"queued run #{run_id} (retry of #{args.run})")
    return OK


def cmd_notify(args: argparse.Namespace) -> int:
    with door(args) as api:
        api.notify(args.repo)
    return OK


def cmd_change(args: argparse.Namespace) -> int:
    with door(args) as api:
        data = api.change(args.id)
    if args.json:
        emit(data)
        return OK
    check = data["checklist"]
    print(
        f"change #{data['id']}  {data['repo']} → {data['environment']}  {data['status']}"
        + (f" ({one_line(data['reason'])})" if data["reason"] else "")
    )
    print(
        f"  deploys {short(data['head_sha'])} over {short(data['base_sha'])}  (run #{data['run_id']}, "
        f"triggered by {one_line(data['triggerer'])}, opened {ago(data['created_at'])})"
    )
    print(f"  pins: pipeline {data['pipeline_digest'][:12]}  policy {data['policy_version']}")
    print(f"  commits ({len(data['commits'])}):")
    for c in data["commits"]:
        print(f"    {c['sha'][:7]}  {one_line(c['author'])[:20]:20}  {one_line(c['subject'])[:60]}")
    if data["diffstat"]:
        print("  diff:")
        for line in data["diffstat"].splitlines():
            print(f"    {inert(line)}")
    for art in data["artifacts"]:
        print(
            f"  artifact {one_line(art['path'])} ({art['size']} bytes) from step {one_line(art['step'])}"
        )
    print(
        f"  approvals: {len(check['approved_by'])} of {check['required']}"
        + (f" ({', '.join(check['approved_by'])})" if check["approved_by"] else "")
    )
    for d in data["decisions"]:
        comment = f": {one_line(d['comment'])}" if d["comment"] else ""
        forged = "" if d.get("authentic", True) else " [NOT AUTHENTICATED: not counted]"
        print(f"    {d['operator']} {d['verdict']}d {ago(d['created_at'])}{comment}{forged}")
    if check["eligible"]:
        print(f"  may approve: {', '.join(check['eligible'])}")
    for name, reason in check["barred"].items():
        print(f"  {name} cannot approve: {reason}")
    if check["frozen"]:
        print(f"  frozen: {check['frozen']}")
    return OK


def _decide(args: argparse.Namespace, verdict: str) -> int:
    with door(args, write=True) as api:
        result = api.decide(Actor.local(api.ws, args.as_name), args.id, verdict, args.comment)
    print(
        ("" if result.ok else "refused: ") + result.message,
        file=sys.stdout if result.ok else sys.stderr,
    )
    return OK if result.ok else REFUSED


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


def cmd_locks(args: argparse.Namespace) -> int:
    with door(args) as api:
        rows = api.locks()
    if args.json:
        emit({"locks": rows})
        return OK
    table(
        [
            [
                r.repo,
                r.environment,
                r.state,
                f"#{r.run_id}",
                ago(r.acquired_at),
                one_line(r.reason or ""),
            ]
            for r in rows
        ],
        ["REPO", "ENVIRONMENT", "STATE", "RUN", "SINCE", "REASON"],
    )
    return OK


def cmd_unlock(args: argparse.Namespace) -> int:
    with door(args, write=True) as api:
        lock = api.unlock(
            Actor.local(api.ws, args.as_name), args.repo, args.environment, args.reason
        )
    print(f"unlocked {args.repo}/{args.environment} (was {lock['state']} by run #{lock['run_id']})")
    return OK


def cmd_audit(args: argparse.Namespace) -> int:
    with door(args) as api:
        if args.action == "head":
            head = api.audit_head()
            if args.json:
                emit({"seq": head[0], "hash": head[1]} if head else {"seq": 0, "hash": None})
            else:
                print(f"{head[0]}:{head[1]}" if head else "0:")
            return OK
        if args.action == "verify":
            return _verify(api, args.head)
        entries = api.audit(args.limit)
    if args.json:
        emit({"audit": entries})
        return OK
    table(
        [
            [
                str(e.id),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at)),
                one_line(e.actor),
                e.action,
                one_line(e.subject),
                one_line(e.detail_text)[:70],
            ]
            for e in reversed(entries)
        ],
        ["ID", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"],
    )
    return OK


def _verify(api: Api, head_text: str | None) -> int:
    """Verify the chain, the store's pages, and the chain against the head the last verify of
    this store printed (kept outside the state directory: core.store.heads)."""
    verdict = api.audit_verify(_head_arg(head_text) if head_text else None)
    if verdict.damaged:
        print(f"audit chain not checked: {verdict.problem}", file=sys.stderr)
        return FAILED
    if verdict.note:
        print(verdict.note, file=sys.stderr)
    if verdict.unauthenticated:
        for finding in verdict.unauthenticated:
            print(f"unauthenticated decision: {finding}", file=sys.stderr)
        print(
            f"audit chain ok: {verdict.entries} entries, but {len(verdict.unauthenticated)} decision(s) do "
            "not verify (ignored by every gate)",
            file=sys.stderr,
        )
        return FAILED
    if not verdict.ok:
        print(
            f"audit chain BROKEN: {verdict.problem}"
            + (f" (checked {verdict.entries} entries)" if not verdict.shrunk else ""),
            file=sys.stderr,
        )
        return FAILED
    current = verdict.head
    shown = f"{current[0]}:{current[1]}" if current else "0:"
    print(
        f"audit chain ok: {verdict.entries} entries"
        + (f", entry {head_text} intact" if head_text else "")
        + f" (head {shown}, remembered in {verdict.remembered_in})"
    )
    return OK


def _head_arg(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise InvalidRequest(f"--head {text!r}: expected SEQ:HASH as printed by `ahead audit head`")
    return int(seq), digest.lower()


def cmd_demo(args: argparse.Namespace) -> int:
    from core import demo

    target = Path(args.dir).expanduser().resolve() if args.dir else demo.default_dir()
    if not (target / workspace.FILENAME).exists():
        print(f"creating the demo workspace in {target} ...", flush=True)
        demo.create(target)
    args.workspace = str(target)
    ws = load_workspace(args)
    if _open_console is not None and interactive():
        console_log(ws)
        return _open_console(ws, Actor.local(ws, args.as_name))
    demo.settle(ws)
    args.json = False
    return cli_listings.cmd_status(args)


def cmd_runner(args: argparse.Namespace) -> int:
    """`ahead runner trust NAME`: pin a remote runner's host key (see `cli_listings.trust_hosts`)."""
    ws = load_workspace(args)
    actor = Actor.local(ws, args.as_name)
    with Api.open(ws) as api:
        targets = api.trust_runner_targets(actor, args.name)
        return asyncio.run(
            cli_listings.trust_hosts(api, actor, targets, args.yes, args.fingerprint)
        )


def cmd_console(args: argparse.Namespace) -> int:
    ws = load_workspace(args)
    if _open_console is None:
        print("ahead: the console is not installed (the tui package is missing)", file=sys.stderr)
        return FAILED
    if not interactive():
        print(
            "ahead: the console needs a terminal; use the listings (ahead status, ahead runs)",
            file=sys.stderr,
        )
        return USAGE
    console_log(ws)
    return _open_console(ws, Actor.local(ws, args.as_name))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "drift": cli_drift.cmd_drift,
    "init": cmd_init,
    "check": cmd_check,
    "engine": cmd_engine,
    "status": cli_listings.cmd_status,
    "runs": cli_listings.cmd_runs,
    "show": cmd_show,
    "logs": cmd_logs,
    "pending": cmd_pending,
    "trigger": cmd_trigger,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "notify": cmd_notify,
    "audit": cmd_audit,
    "demo": cmd_demo,
    "console": cmd_console,
    "changes": cli_listings.cmd_changes,
    "change": cmd_change,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "runner": cmd_runner,
    "locks": cmd_locks,
    "unlock": cmd_unlock,
    "serve": cmd_serve,
}
