"""The `ahead` command line.

Global options come before the command (`ahead --workspace DIR status`). Every listing takes
`--json`. Exit codes: 0 ok, 1 failure or not found, 2 usage. Expected failures print one clear
line (never a traceback); untrusted text is printed with control sequences removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import approvals, cli_drift, lease, retention, states, workspace
from core.errors import CoreError, InvalidRequest, PermissionDenied
from core.services import Actor, Services
from core.store.db import DatabaseError, Store
from core.text import LOG_FORMAT, InertFormatter, inert, inert_output, one_line
from core.text import duration as text_duration
from core.text import table as text_table
from core.workspace import Workspace

OK, FAILED, USAGE, REFUSED = 0, 1, 2, 3
TERMINAL = states.TERMINAL
GLYPH = states.GLYPHS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ahead", description="Change Ahead: a terminal console for GitOps.")
    parser.add_argument("--workspace", "-w", metavar="DIR", help="the workspace (default: $AHEAD_WORKSPACE, "
                        "then the current directory and its parents)")
    parser.add_argument("--as", dest="as_name", metavar="NAME",
                        help="act as operator NAME (allowed when NAME's os_users lists you)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log what the engine does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a workspace (ahead.yml) in DIR")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--demo", action="store_true", help="create the self-contained demo workspace")
    sub.add_parser("check", help="validate ahead.yml, the repos and their pipelines")
    sub.add_parser("engine", help="run the engine in the foreground")
    p = sub.add_parser("status", help="each repo: head of main, last run, deployed and pending per environment")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("runs", help="recent runs")
    p.add_argument("--repo")
    p.add_argument("--status", choices=list(states.RunState))
    p.add_argument("--branch")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")
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
    p = sub.add_parser("trigger", help="queue a run of REPO (head of main unless --ref or --commit)")
    p.add_argument("repo")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ref", help="a branch or tag")
    group.add_argument("--commit", help="a commit id")
    p.add_argument("--wait", action="store_true", help="wait for the run to end (runs it here if no engine is running)")
    p = sub.add_parser("cancel", help="cancel a queued or running run")
    p.add_argument("run", type=int)
    p = sub.add_parser("retry", help="run a finished run's commit again")
    p.add_argument("run", type=int)
    p = sub.add_parser("notify", help="tell the engine a repo changed (for a git server's post-receive hook)")
    p.add_argument("repo")
    p = sub.add_parser("changes", help="change requests waiting at approval gates")
    p.add_argument("--all", action="store_true", help="decided ones too")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("change", help="a change request: commits, diff stat, artifacts, policy checklist")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("approve", help="approve a change request (exit 3 when policy refuses)")
    p.add_argument("id", type=int)
    p.add_argument("--comment", default="")
    p = sub.add_parser("reject", help="reject a change request; its run stops (exit 3 when refused)")
    p.add_argument("id", type=int)
    p.add_argument("--comment", default="")
    p = sub.add_parser("locks", help="environment locks: deploys in progress, environments an interrupted deploy left locked")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("unlock", help="release an environment locked after an interrupted deploy (admin or approver; audited)")
    p.add_argument("repo")
    p.add_argument("environment")
    p.add_argument("--reason", required=True, help="what you checked before unlocking")
    p = sub.add_parser("audit", help="the audit log")
    p.add_argument("action", nargs="?", choices=["verify", "head"],
                   help="verify: check the hash chain; head: print SEQ:HASH of the newest entry, to keep off this host")
    p.add_argument("--head", metavar="SEQ:HASH", help="with verify: the chain must still hold this entry unchanged")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=100)
    cli_drift.add_parser(sub)
    p = sub.add_parser("runner", help="remote runners: `runner trust NAME` pins a runner's SSH host key")
    runner_sub = p.add_subparsers(dest="runner_command", metavar="ACTION", required=True)
    p = runner_sub.add_parser("trust", help="show the runner's host key fingerprint, pin it after you confirm, "
                              "print the engine's public key for the runner's authorized_keys")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="trust without asking (scripts)")
    p.add_argument("--fingerprint", metavar="SHA256:...", help="trust only if the host presents this key")
    p = sub.add_parser("serve", help="run the engine and the SSH server: operators log in with their keys")
    p.add_argument("--listen", default="127.0.0.1:8022", metavar="HOST:PORT",
                   help="address for the SSH server (default 127.0.0.1:8022)")
    sub.add_parser("console", help="open the console (the default when run in a terminal)")
    p = sub.add_parser("demo", help="open the demo workspace (created on first use)")
    p.add_argument("dir", nargs="?")
    return parser


OpenConsole = Callable[[Workspace, Actor], int]
_open_console: OpenConsole | None = None
_console_zygote: tuple[str, ...] = ()


def main(argv: list[str] | None = None, open_console: OpenConsole | None = None,
         console_zygote: tuple[str, ...] = ()) -> int:
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
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return handler(args)
    except PermissionDenied as exc:
        print(f"ahead: {exc}", file=sys.stderr)
        return REFUSED
    except CoreError as exc:
        print(f"ahead: {exc}", file=sys.stderr)
        return FAILED
    except DatabaseError as exc:  # a damaged page met outside the store's own checks
        print(f"ahead: the store is damaged ({exc}): run `ahead check`; restore it from a backup",
              file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return OK


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


def load_workspace(args: argparse.Namespace) -> Workspace:
    return workspace.read(workspace.find(args.workspace))


@contextlib.contextmanager
def services(args: argparse.Namespace, write: bool = False) -> Any:
    """The workspace and its store. `write`: a person's decision or request is about to be
    written: the store must pass `PRAGMA quick_check` first (0.13 s on a 100 MB store), so
    nothing is added to a damaged store."""
    ws = load_workspace(args)
    with Store(ws.db_path, session=f"cli:{workspace.current_os_user()}:{os.getpid()}") as store:
        if write:
            store.require_intact()
        yield Services(ws, store)


def emit(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


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
    from core import gitio
    from core.errors import ConfigError
    from core.pipeline import PIPELINE_PATH
    from core.pipeline import parse as parse_pipeline

    ws = load_workspace(args)
    problems = 0
    print(f"{ws.file}: ok ({len(ws.repos)} repos, environments {' → '.join(ws.environments)})")
    damaged = _check_store(ws)
    if damaged:
        print(f"  {damaged}")
        problems += 1
    print(f"  {_sandbox_line(ws)}")
    for repo in ws.repos:
        path = ws.repo_dir(repo)
        if repo.is_remote and not path.exists():
            print(f"  {repo.name}: remote, not fetched yet (the engine mirrors it on start)")
            continue
        problem = gitio.check_repo(path, repo.branch)
        if problem:
            print(f"  {repo.name}: {problem}")
            problems += 1
            continue
        _, common = gitio.git_dirs(path)
        sha = gitio.read_branches(common)[repo.branch]
        label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
        try:
            text = gitio.read_file(path, sha, PIPELINE_PATH)
            if text is None:
                print(f"  {label}: missing (commit one to {repo.branch})")
                problems += 1
                continue
            pipeline = parse_pipeline(text, label, ws.environments, tuple(ws.secrets), ws.runner_names,
                                      secret_scope=functools.partial(_secret_refusal, ws, repo.name))
        except ConfigError as exc:
            print(f"  {exc}")
            problems += 1
            continue
        stages = ", ".join(s.name + (f"→{s.environment}" if s.environment else "") for s in pipeline.stages)
        print(f"  {repo.name}: ok ({stages})")
    return FAILED if problems else OK


def _check_store(ws: Workspace) -> str:
    """The store: "" when it opens, has every table and passes `PRAGMA quick_check`."""
    from core.store.db import marker_path

    if not ws.db_path.exists() and not marker_path(ws.db_path).exists():
        print(f"  store {ws.db_path}: not made yet (the engine makes it on its first start)")
        return ""
    try:
        with Store(ws.db_path, session=f"cli:{workspace.current_os_user()}:{os.getpid()}") as store:
            damage = store.quick_check()
            if damage:
                return f"store {ws.db_path}: damaged ({damage.splitlines()[0][:200]}): restore it from a backup"
            print(f"  store {ws.db_path}: ok (store id {store.store_id})")
    except CoreError as exc:
        return str(exc)
    return ""


def _sandbox_line(ws: workspace.Workspace) -> str:
    """How untrusted steps (branch runs, stages that deploy nowhere) are isolated here."""
    from core import sandbox

    if not ws.settings.sandbox:
        return "sandbox: off (settings): branch runs and builds run unisolated, as the engine's user"
    why = sandbox.unavailable()
    if why:
        return (f"sandbox: unavailable: {why}; branch runs will be refused "
                "(fix user namespaces, or set `settings: sandbox: off`)")
    return "sandbox: ok (branch runs and builds run in user+mount namespaces)"


def _secret_refusal(ws: Workspace, repo: str, name: str, environment: str | None, branch: bool) -> str | None:
    """Why the pipeline of `repo` may not give secret `name` to a stage (`ahead check`)."""
    source = ws.secrets.get(name)
    return None if source is None else source.refusal(repo, environment, branch)


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
                print(f"serving {ws.file} on {host}:{server.port}: ssh -p {server.port} "
                      f"OPERATOR@{host} (ctrl+c to stop)", flush=True)
                await _until_stopped(engine)
            finally:
                await server.aclose()
        _fenced_out(engine)

    asyncio.run(serve())
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    with services(args) as svc:
        data = svc.status()
        holder = lease.holder(svc.store, 15.0)
    data["engine"] = holder
    if args.json:
        emit(data)
        return OK
    print(f"workspace {data['workspace']}  engine: {holder or 'not running'}")
    envs = data["environments"]
    rows = []
    for repo in data["repos"]:
        last = repo["last_run"]
        run = f"#{last['id']} {GLYPH.get(last['status'], '?')} {last['status']}" if last else "-"
        row = [repo["name"], short(repo["head"]), run]
        for env in envs:
            e = repo["environments"][env]
            if not e["deploys"] and not e["deployed"]:
                row.append("-")
                continue
            cell = short(e["deployed"]) if e["deployed"] else "never"
            if e["pending"]:
                cell += f" +{e['pending']} ({duration(e['lag_seconds'])})"
            if e["lock"] and e["lock"]["state"] == "needs_operator":
                cell += " LOCKED"
            row.append(cell)
        rows.append(row)
        if repo["error"]:
            rows.append(["", "", one_line(repo["error"])[:100]] + [""] * len(envs))
    table(rows, ["REPO", "MAIN", "LAST RUN", *[e.upper() for e in envs]])
    return OK


def cmd_runs(args: argparse.Namespace) -> int:
    with services(args) as svc:
        rows = svc.runs(repo=args.repo, status=args.status, branch=args.branch, limit=args.limit)
    if args.json:
        emit({"runs": rows})
        return OK
    out = []
    for r in rows:
        took = (r["finished_at"] or time.time()) - r["started_at"] if r["started_at"] else None
        out.append([f"#{r['id']}", r["repo"], one_line(r["branch"])[:24], short(r["commit_sha"]),
                    f"{GLYPH.get(r['status'], '?')} {r['status']}", r["trigger"], ago(r["created_at"]),
                    duration(took), one_line(r["subject"])[:40]])
    table(out, ["RUN", "REPO", "BRANCH", "COMMIT", "STATUS", "TRIGGER", "QUEUED", "TOOK", "SUBJECT"])
    return OK


def cmd_show(args: argparse.Namespace) -> int:
    with services(args) as svc:
        data = svc.show(args.run)
    if args.json:
        emit(data)
        return OK
    print(f"run #{data['id']}  {data['repo']}  {one_line(data['branch'])}  {short(data['commit_sha'])}  "
          f"{GLYPH.get(data['status'], '?')} {data['status']}")
    print(f"  {one_line(data['subject'])}  — {one_line(data['author'])} <{one_line(data['author_email'])}>")
    print(f"  trigger {data['trigger']} by {one_line(data['actor'])}, queued {ago(data['created_at'])}")
    if data["error"]:
        print(f"  error: {inert(data['error'])}")
    for stage in data["stages"]:
        took = (stage["finished_at"] - stage["started_at"]) if stage["started_at"] and stage["finished_at"] else None
        env = f" → {stage['environment']}" if stage["environment"] else ""
        print(f"  {GLYPH.get(stage['status'], '?')} {stage['name']}{env}  {stage['status']}  {duration(took)}")
        for step in stage["steps"]:
            took = (step["finished_at"] - step["started_at"]) if step["started_at"] and step["finished_at"] else None
            code = f" exit {step['exit_code']}" if step["exit_code"] is not None else ""
            print(f"      {GLYPH.get(step['status'], '?')} {one_line(step['name'])}  {step['status']}{code}  {duration(took)}")
    for art in data["artifacts"]:
        print(f"  artifact {one_line(art['path'])}  {art['size']} bytes  sha256 {art['sha256'][:12]}")
    return OK


def step_names(svc: Services, run_id: int) -> dict[int, str]:
    """'stage / step' for each step of a run, by step id."""
    return {s["id"]: s["name"] for s in svc.store.query(
        "SELECT s.id, st.name || ' / ' || s.name AS name FROM steps s JOIN stages st "
        "ON st.id = s.stage_id WHERE s.run_id = ?", (run_id,))}


def cmd_logs(args: argparse.Namespace) -> int:
    with services(args) as svc:
        run = svc.run(args.run)
        names = step_names(svc, args.run)
        position = (0, -1)
        current = None
        shown = False
        while True:
            lines = svc.logs(args.run, position)
            shown = shown or bool(lines)
            for line in lines:
                if line["step_id"] not in names:
                    names = step_names(svc, args.run)
                if args.json:
                    print(json.dumps({"step": names.get(line["step_id"]), "seq": line["seq"],
                                      "ts": line["ts"], "line": line["line"]}))
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
            run = svc.run(args.run)
    note = None if shown else retention.removed_note(run.get("finished_at"), svc.ws.settings.keep_logs_days)
    if note:
        print(f"ahead: run #{args.run}: {note}", file=sys.stderr)
    return OK


def cmd_pending(args: argparse.Namespace) -> int:
    with services(args) as svc:
        if args.environment not in svc.ws.environments:
            print(f"ahead: no environment {args.environment!r} (environments: {', '.join(svc.ws.environments)})",
                  file=sys.stderr)
            return FAILED
        commits = svc.pending(args.repo, args.environment, limit=None)
    if args.json:
        emit({"repo": args.repo, "environment": args.environment,
              "pending": [dataclasses.asdict(c) for c in commits]})
        return OK
    table([[c.short, ago(c.time), one_line(c.author)[:20], one_line(c.subject)[:60]] for c in commits],
          ["COMMIT", "AGE", "AUTHOR", "SUBJECT"])
    return OK


def _wait(ws: Workspace, store: Store, run_id: int) -> int:
    from core.engine import Engine

    holder = lease.holder(store, 15.0)
    if holder is None:
        async def run_here() -> dict[str, Any]:
            async with Engine(ws, only_runs={run_id}, name=f"ahead trigger --wait (pid {os.getpid()})") as engine:
                return await engine.wait_run(run_id)
        row = asyncio.run(run_here())
    else:
        print(f"waiting for run #{run_id} on {holder}", flush=True)
        while True:
            row = store.query_one("SELECT * FROM runs WHERE id = ?", (run_id,)) or {}
            if row.get("status") in TERMINAL:
                break
            time.sleep(0.2)
    status = row.get("status", "missing")
    print(f"run #{run_id} {GLYPH.get(status, '?')} {status}" + (f": {inert(row['error'])}" if row.get("error") else ""))
    return OK if status == "succeeded" else FAILED


def cmd_trigger(args: argparse.Namespace) -> int:
    with services(args, write=True) as svc:
        run_id = svc.trigger(args.repo, Actor.local(svc.ws, args.as_name), ref=args.ref, commit=args.commit)
        print(f"queued run #{run_id}", flush=True)
        if args.wait:
            return _wait(svc.ws, svc.store, run_id)
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with services(args, write=True) as svc:
        state = svc.cancel(args.run, Actor.local(svc.ws, args.as_name))
    print(f"run #{args.run}: {state}")
    return OK


def cmd_retry(args: argparse.Namespace) -> int:
    with services(args, write=True) as svc:
        run_id = svc.retry(args.run, Actor.local(svc.ws, args.as_name))
    print(f"queued run #{run_id} (retry of #{args.run})")
    return OK


def cmd_notify(args: argparse.Namespace) -> int:
    with services(args) as svc:
        svc.ws.repo(args.repo)
        with svc.store.transaction():
            svc.store.event("notify", args.repo, None)
    return OK


def cmd_changes(args: argparse.Namespace) -> int:
    from core import approvals

    with services(args) as svc:
        rows = approvals.changes(svc.store, None if args.all else "open")
        for row in rows:
            row["commits"] = json.loads(row["commits"])
    if args.json:
        emit({"changes": rows})
        return OK
    if not rows:
        print("no change requests waiting" if not args.all else "no change requests")
        return OK
    table([[f"#{r['id']}", r["repo"], r["environment"], f"{short(r['base_sha'])}..{short(r['head_sha'])}",
            str(len(r["commits"])), r["status"], f"run #{r['run_id']}", ago(r["created_at"]),
            one_line(r["reason"] or "")[:40]] for r in rows],
          ["CHANGE", "REPO", "ENV", "RANGE", "COMMITS", "STATUS", "RUN", "OPENED", "NOTE"])
    return OK


def cmd_change(args: argparse.Namespace) -> int:
    from core import approvals

    with services(args) as svc:
        data = approvals.change_detail(svc.store, svc.ws, args.id)
    if args.json:
        emit(data)
        return OK
    check = data["checklist"]
    print(f"change #{data['id']}  {data['repo']} → {data['environment']}  {data['status']}"
          + (f" ({one_line(data['reason'])})" if data["reason"] else ""))
    print(f"  deploys {short(data['head_sha'])} over {short(data['base_sha'])}  (run #{data['run_id']}, "
          f"triggered by {one_line(data['triggerer'])}, opened {ago(data['created_at'])})")
    print(f"  pins: pipeline {data['pipeline_digest'][:12]}  policy {data['policy_version']}")
    print(f"  commits ({len(data['commits'])}):")
    for c in data["commits"]:
        print(f"    {c['sha'][:7]}  {one_line(c['author'])[:20]:20}  {one_line(c['subject'])[:60]}")
    if data["diffstat"]:
        print("  diff:")
        for line in data["diffstat"].splitlines():
            print(f"    {inert(line)}")
    for art in data["artifacts"]:
        print(f"  artifact {one_line(art['path'])} ({art['size']} bytes) from step {one_line(art['step'])}")
    print(f"  approvals: {len(check['approved_by'])} of {check['required']}"
          + (f" ({', '.join(check['approved_by'])})" if check["approved_by"] else ""))
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
    from core import approvals

    with services(args, write=True) as svc:
        actor = Actor.local(svc.ws, args.as_name)
        result = approvals.decide(svc.store, svc.ws, args.id, actor.name, verdict, args.comment)
    print(("" if result.ok else "refused: ") + result.message, file=sys.stdout if result.ok else sys.stderr)
    return OK if result.ok else REFUSED


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


def cmd_locks(args: argparse.Namespace) -> int:
    with services(args) as svc:
        rows = svc.locks()
    if args.json:
        emit({"locks": rows})
        return OK
    table([[r["repo"], r["environment"], r["state"], f"#{r['run_id']}", ago(r["acquired_at"]),
            one_line(r["reason"] or "")] for r in rows], ["REPO", "ENVIRONMENT", "STATE", "RUN", "SINCE", "REASON"])
    return OK


def cmd_unlock(args: argparse.Namespace) -> int:
    with services(args, write=True) as svc:
        lock = svc.unlock(args.repo, args.environment, Actor.local(svc.ws, args.as_name), args.reason)
    print(f"unlocked {args.repo}/{args.environment} (was {lock['state']} by run #{lock['run_id']})")
    return OK


def cmd_audit(args: argparse.Namespace) -> int:

    with services(args) as svc:
        if args.action == "head":
            head = svc.store.audit_head()
            if args.json:
                emit({"seq": head[0], "hash": head[1]} if head else {"seq": 0, "hash": None})
            else:
                print(f"{head[0]}:{head[1]}" if head else "0:")
            return OK
        if args.action == "verify":
            return _verify(svc.store, args.head, svc.ws)
        rows = svc.store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (args.limit,))
    if args.json:
        emit({"audit": rows})
        return OK
    table([[str(r["id"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])), one_line(r["actor"]),
            r["action"], one_line(r["subject"]), one_line(r["detail"])[:70]] for r in reversed(rows)],
          ["ID", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"])
    return OK


def _verify(store: Store, head_text: str | None, ws: Workspace) -> int:
    """Verify the chain, the store's pages, and the chain against the head the last verify of
    this store printed (kept outside the state directory: core.store.heads)."""
    from core.store import heads

    damage = store.quick_check()
    if damage:
        print(f"audit chain not checked: the store {store.path} is damaged ({damage.splitlines()[0][:200]}); "
              f"restore it from a backup", file=sys.stderr)
        return FAILED
    ok, count, problem = store.verify_audit(_head_arg(head_text) if head_text else None)
    if not ok:
        print(f"audit chain BROKEN: {problem} (checked {count} entries)", file=sys.stderr)
        return FAILED
    shrunk = heads.compare(store, count)
    if shrunk:
        print(f"audit chain BROKEN: {shrunk}", file=sys.stderr)
        return FAILED
    try:
        forged = approvals.unauthenticated(store, ws)
    except PermissionDenied as exc:  # only the decision key's owner can check decisions
        forged = []
        print(f"decisions not checked: {exc}", file=sys.stderr)
    for finding in forged:
        print(f"unauthenticated decision: {finding}", file=sys.stderr)
    if forged:
        print(f"audit chain ok: {count} entries, but {len(forged)} decision(s) do not verify "
              "(ignored by every gate)", file=sys.stderr)
        return FAILED
    current = store.audit_head()
    where = heads.save(store, current)
    shown = f"{current[0]}:{current[1]}" if current else "0:"
    print(f"audit chain ok: {count} entries" + (f", entry {head_text} intact" if head_text else "")
          + f" (head {shown}, remembered in {where})")
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
    return cmd_status(args)


def cmd_runner(args: argparse.Namespace) -> int:
    """`ahead runner trust NAME`: pin a remote runner's host key, only after a person (or the
    `--fingerprint` a script was given) confirms it; audited."""
    from core import sshclient

    ws = load_workspace(args)
    actor = Actor.local(ws, args.as_name)
    if ws.operators and "admin" not in actor.roles:
        raise PermissionDenied(f"{actor.name} may not trust a runner's host key: needs the admin role")
    runner = ws.runner(args.name)
    if runner.ssh is None:
        print(f"ahead: runner {runner.name!r} runs on this machine; there is no host key to trust",
              file=sys.stderr)
        return FAILED
    address = runner.ssh
    key = asyncio.run(sshclient.scan_host_key(address))
    found = sshclient.fingerprint(key)
    print(f"runner {runner.name} ({address}) presents the {key.get_algorithm()} host key {found}")
    pinned = [sshclient.fingerprint(k) for k in sshclient.pinned(ws.state_dir, address)]
    if found in pinned:
        print("already trusted")
    else:
        if pinned:
            print(f"WARNING: this is NOT the key trusted so far ({', '.join(pinned)}). Trust it only if you "
                  "know why the host key changed.")
        if not _confirm_host_key(args, found):
            return FAILED
        sshclient.trust(ws.state_dir, address, key)
        with Store(ws.db_path, session=f"cli:{workspace.current_os_user()}:{os.getpid()}") as store, \
                store.transaction():
            store.audit(actor.name, "runner.trust", f"runner/{runner.name}",
                        {"address": str(address), "fingerprint": found, "replaced": pinned})
        print(f"trusted: pinned in {sshclient.known_hosts_path(ws.state_dir)}")
    print(f"The engine logs in with its own key; add this line to ~{address.user}/.ssh/authorized_keys "
          f"on {address.host}:")
    print(sshclient.public_key_line(ws.state_dir))
    return OK


def _confirm_host_key(args: argparse.Namespace, found: str) -> bool:
    """--fingerprint must match; without it, --yes or a typed "yes" confirms."""
    if args.fingerprint is not None:
        expected = args.fingerprint if args.fingerprint.startswith("SHA256:") else "SHA256:" + args.fingerprint
        if expected != found:
            print(f"ahead: refusing: the host presents {found}, not {expected}", file=sys.stderr)
            return False
        return True
    if args.yes:
        return True
    try:
        answer = input("Compare it with the host's own key (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub "
                       "on the host). Trust it? Type yes: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        print("ahead: not trusted (nothing changed)", file=sys.stderr)
        return False
    return True


def cmd_console(args: argparse.Namespace) -> int:
    ws = load_workspace(args)
    if _open_console is None:
        print("ahead: the console is not installed (the tui package is missing)", file=sys.stderr)
        return FAILED
    if not interactive():
        print("ahead: the console needs a terminal; use the listings (ahead status, ahead runs)",
              file=sys.stderr)
        return USAGE
    console_log(ws)
    return _open_console(ws, Actor.local(ws, args.as_name))


def cmd_drift(args: argparse.Namespace) -> int:
    ws = load_workspace(args)
    return cli_drift.run(args, ws, Actor.local(ws, args.as_name))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "drift": cmd_drift,
    "init": cmd_init, "check": cmd_check, "engine": cmd_engine, "status": cmd_status,
    "runs": cmd_runs, "show": cmd_show, "logs": cmd_logs, "pending": cmd_pending,
    "trigger": cmd_trigger, "cancel": cmd_cancel, "retry": cmd_retry, "notify": cmd_notify,
    "audit": cmd_audit, "demo": cmd_demo, "console": cmd_console, "changes": cmd_changes,
    "change": cmd_change, "approve": cmd_approve, "reject": cmd_reject, "runner": cmd_runner,
    "locks": cmd_locks, "unlock": cmd_unlock, "serve": cmd_serve,
}

if __name__ == "__main__":
    sys.exit(main())
