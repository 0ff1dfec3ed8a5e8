"""The demo workspace and the starter ahead.yml: `ahead init [--demo]` and `ahead demo`.

Someone trying Change Ahead should see a workspace with a past before they have one of their
own, so `create()` builds a self-contained one: three real git repositories (a machine image,
infrastructure, a service) whose pipelines do real, small work with sh, python3, git, tar and
sha256sum, and whose history has been through real runs of the real engine. The environments end
up at different commits, so status shows pending commits and lag, and the failed runs say why.
Deploys write to `live/<environment>/<repo>/` in the workspace: the demo's stand-in for clouds
and clusters. Step output says honestly what each step stands in for.

The repos' files, and the demo's and the starter's ahead.yml, are package data in
core/demo_repos/ (see its README.md); this module tells the story: who committed what and when,
and which runs follow. Given the same `now`, `create()` makes the same commits, sha for sha.

Depends on core.engine, core.services, core.gitio, core.lease, core.store and core.workspace;
runs git with argv lists only and never puts repository content into a shell string.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from core import gitio, lease, runstate, workspace
from core.engine import LEASE_STALE_SECONDS, Engine
from core.errors import CoreError, InvalidRequest, LeaseHeld
from core.fields import NAME
from core.services import Services
from core.store.db import Store
from core.workspace import FILENAME, Workspace

RUN_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
GLYPH = {"succeeded": "✓", "failed": "✗", "cancelled": "⊘", "interrupted": "!", "skipped": "-"}

# name, email, time zone: the people of the story. dave is an outside contributor whose
# changes a maintainer commits (so author and committer differ, as policies will care).
PEOPLE = {
    "alice": ("Alice Archer", "alice@example.com", "+0100"),
    "bob": ("Bob Baker", "bob@example.com", "-0500"),
    "carol": ("Carol Chen", "carol@example.com", "+0800"),
    "dave": ("Dave Dunn", "dave@contractor.example.net", "+0200"),
}
# Our git commands must not depend on (or be changed by) the user's git configuration.
GIT_OPTIONS = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null",
               "-c", "core.autocrlf=false", "-c", "init.defaultBranch=main")
GIT_ISOLATION = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def default_dir() -> Path:
    """Where `ahead demo` keeps its workspace: $XDG_DATA_HOME/change-ahead/demo."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "change-ahead" / "demo"


# -- ahead init ---------------------------------------------------------------------------------


def init_workspace(target: Path) -> Path:
    """Write a starter ahead.yml in `target` (made if missing) and return its path.

    Git repositories directly inside `target` are listed as repos; the current OS user becomes
    an admin operator. The file is valid as written.

    Raises:
        InvalidRequest: `target` already holds an ahead.yml.
    """
    file = target / FILENAME
    if file.exists():
        raise InvalidRequest(f"{file} already exists; edit it, or choose another directory")
    _make_dir(target)
    text = _starter_text(target, file)
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {file}: {exc.strerror}") from None
    return file


def _make_dir(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(f"cannot make the directory {target}: {exc.strerror}") from None


def _starter_text(target: Path, file: Path) -> str:
    repos = ""
    for child in sorted(p for p in target.iterdir() if (p / ".git").exists()):
        if not NAME.match(child.name):
            continue
        repos += f"\n  - name: {_scalar(child.name)}\n    path: {_scalar(child.name)}"
        branch = gitio.head_branch(child)
        if branch and branch != "main" and gitio.valid_branch(branch):
            repos += f"\n    branch: {_scalar(branch)}"
    user = workspace.current_os_user()
    operators = ""
    if NAME.match(user):
        operators = (f"\n  - name: {_scalar(user)}\n    roles: [admin]"
                     f"\n    os_users: [{_scalar(user)}]")
    starter = (_sources() / "starter.yml").read_text(encoding="utf-8")
    text = starter.format(repos=repos or " []", operators=operators or " []")
    try:
        workspace.parse(text, file)
    except CoreError:  # an odd directory or user name: fall back to the plain starter
        text = starter.format(repos=" []", operators=" []")
    return text


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain when YAML reads it back as the same string, else quoted."""
    try:
        plain = yaml.safe_load(text) == text and ":" not in text and "#" not in text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


# -- the demo's repositories --------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCommit:
    """One commit of the story: who, how long before `now`, and its message (files: see _make_repo)."""

    label: str
    author: str
    hours_ago: float
    subject: str
    body: str = ""
    committer: str | None = None


@dataclass(frozen=True)
class DemoRepo:
    name: str
    commits: tuple[DemoCommit, ...]
    branch: tuple[str, str, DemoCommit] | None = None  # (name, base label, commit)


@dataclass(frozen=True)
class DemoRun:
    """A run of the history: repo at a commit label, on a branch, and how it must end."""

    repo: str
    label: str
    expect: str
    branch: str = "main"


@dataclass(frozen=True)
class Round:
    """Runs that execute together, and what happens in the live world (root, now) around them."""

    runs: list[DemoRun]
    before: Callable[[Path, float], None] | None = None
    after: Callable[[Path, float], None] | None = None


def _repos() -> list[DemoRepo]:
    """The three repos of the story, oldest commit first."""
    # machine-image: packer (bake), ansible (configure-role), test kitchen (verify), tag and share.
    image = DemoRepo("machine-image", (
        DemoCommit("c1", "alice", 6 * 24 + 3, "Base image: rootfs, packages and the bake pipeline"),
        DemoCommit("c2", "bob", 4 * 24 + 5, "Base role: keep time with chrony",
                   body="TLS handshakes failed on a VM whose clock had drifted by 40 seconds."),
        DemoCommit("c3", "carol", 2 * 24 + 2, "Disable SSH password login, and verify it"),
        DemoCommit("c4", "alice", 7, "Bump openssh-server to 9.6p1 and curl to 8.5.0",
                   body="Security updates."),
    ))
    # infrastructure: checks and a plan on every branch, apply to dev, preprod and prod from main.
    infrastructure = DemoRepo("infrastructure", (
        DemoCommit("c1", "alice", 6 * 24 + 6, "Network, subnet, state bucket and DNS zone"),
        DemoCommit("c2", "bob", 5 * 24 + 1, "Add the orders database (postgres, db.t3.small)",
                   body="Protected in preprod and prod: apply refuses to destroy it there."),
        DemoCommit("c3", "carol", 3 * 24 + 4, "Open 443 on the web security group"),
        DemoCommit("c4", "alice", 2 * 24 + 1, "Tag every resource with its cost centre",
                   body="Finance asked for per-service cloud costs."),
        DemoCommit("c5", "dave", 24 + 2, "Rename db.main to db.orders",
                   body="Clearer now that we are about to add a second database.", committer="bob"),
    ), branch=("feature/bigger-db", "c4", DemoCommit(
        "bigger", "bob", 3, "Resize db.main to db.m5.large for the sale peak",
        body="Plan only until we agree on the cost.")))
    # service: build, unit tests, deploy to preprod, then prod once the release notes are in.
    service = DemoRepo("service", (
        DemoCommit("c1", "alice", 5 * 24 + 2, "Orders service: /health and /orders"),
        DemoCommit("c2", "bob", 4 * 24 + 1, "Validate orders; answer 422 when an order is invalid"),
        DemoCommit("c3", "carol", 2 * 24 + 6, "Cache prices for 30 seconds",
                   body="The catalogue service was answering 40 price lookups per order."),
        DemoCommit("c4", "dave", 24 + 5, "Fix a typo in the README", committer="carol"),
        DemoCommit("c5", "alice", 4, "Release 1.2.0"),
    ))
    return [image, infrastructure, service]


# -- the story's runs ------------------------------------------------------------------------------

LOCK = {"id": "3f0c2a8e-51d7-4b9e-9d1c-6a2f0e7b4c11", "operation": "OperationTypeApply",
        "who": "bob@bob-laptop", "info": "manual apply: sg.web hotfix"}


def _lock_prod(root: Path, now: float) -> None:
    """bob is applying prod by hand from his laptop, holding its state lock."""
    lock = root / "live" / "prod" / "infrastructure" / "state.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 240))
    lock.write_text(json.dumps(LOCK | {"created": created}, indent=2) + "\n")


def _unlock_prod(root: Path, now: float) -> None:
    """bob's apply finished and released the lock; nobody re-ran the pipeline for prod."""
    (root / "live" / "prod" / "infrastructure" / "state.lock").unlink(missing_ok=True)


def _rounds() -> list[Round]:
    """The rounds of runs that leave the environments at different commits."""
    return [
        Round([DemoRun("machine-image", "c2", "succeeded"),
               DemoRun("infrastructure", "c2", "succeeded"),
               DemoRun("service", "c2", "succeeded")]),
        # prod's state is locked by a manual apply: infrastructure c3 stops before prod;
        # service 1.2.0 has no release notes, so it stops before prod too.
        Round([DemoRun("machine-image", "c4", "succeeded"),
               DemoRun("infrastructure", "c3", "failed"),
               DemoRun("service", "c5", "failed")], before=_lock_prod, after=_unlock_prod),
        # dave's rename would destroy the protected database: applied to dev, refused in
        # preprod. Then bob's branch runs checks and a plan only (after, so its plan is
        # made against the live state that run left).
        Round([DemoRun("infrastructure", "c5", "failed")]),
        Round([DemoRun("infrastructure", "bigger", "succeeded", branch="feature/bigger-db")]),
    ]


# -- building it -------------------------------------------------------------------------------------


def _sources() -> Traversable:
    """The demo's files, shipped as package data (see core/demo_repos/README.md)."""
    return resources.files("core") / "demo_repos"


def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         input: bytes | None = None) -> str:
    return gitio.git(repo, *GIT_OPTIONS, *args, input=input, env={**GIT_ISOLATION, **(env or {})})


def _write_tree(source: Traversable, target: Path) -> None:
    """Copy `source` into `target` byte for byte; files are written new, so none is executable."""
    for entry in source.iterdir():
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            (target / entry.name).mkdir(exist_ok=True)
            _write_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def _apply(path: Path, repo: str, label: str) -> None:
    """Change the work tree as commit `label` of `repo` does, with its patch."""
    patch = (_sources() / "patches" / repo / f"{label}.patch").read_bytes()
    _git(path, "apply", "--whitespace=nowarn", "-", input=patch)


def _commit(path: Path, commit: DemoCommit, now: float) -> str:
    """Commit the work tree as `commit`, dated only by `now` and the story's offsets."""
    (a_name, a_email, a_zone), (c_name, c_email, c_zone) = (
        PEOPLE[commit.author], PEOPLE[commit.committer or commit.author])
    authored = now - commit.hours_ago * 3600
    committed = min(authored + (3 * 3600 if commit.committer else 0), now)  # merged a bit later
    env = {"GIT_AUTHOR_NAME": a_name, "GIT_AUTHOR_EMAIL": a_email,
           "GIT_AUTHOR_DATE": f"{int(authored)} {a_zone}",
           "GIT_COMMITTER_NAME": c_name, "GIT_COMMITTER_EMAIL": c_email,
           "GIT_COMMITTER_DATE": f"{int(committed)} {c_zone}"}
    message = commit.subject + (f"\n\n{commit.body}\n" if commit.body else "\n")
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "--no-verify", "--file=-", env=env, input=message.encode())
    return _git(path, "rev-parse", "HEAD").strip()


def _make_repo(root: Path, repo: DemoRepo, now: float) -> dict[str, str]:
    """A real git repository with the repo's commits; returns {label: sha}.

    The first commit holds the tree demo_repos/<repo>/; each later one applies its own
    demo_repos/patches/<repo>/<label>.patch (see core/demo_repos/README.md).
    """
    path = root / "repos" / repo.name
    path.mkdir(parents=True)
    _git(path, "init", "--quiet")
    _git(path, "symbolic-ref", "HEAD", "refs/heads/main")
    _write_tree(_sources() / repo.name, path)  # the first commit's files
    shas: dict[str, str] = {}
    for commit in repo.commits:
        if shas:
            _apply(path, repo.name, commit.label)
        shas[commit.label] = _commit(path, commit, now)
    if repo.branch is not None:
        name, base, commit = repo.branch
        _git(path, "checkout", "--quiet", "-b", name, shas[base])
        _apply(path, repo.name, commit.label)
        shas[commit.label] = _commit(path, commit, now)
        _git(path, "checkout", "--quiet", "main")
    return shas


def create(target: Path, now: float | None = None, reproducible: bool = False) -> None:
    """Make the demo workspace in `target`: ahead.yml, three repos, and their history of runs.

    Every run is a real run of the real engine, recorded in target/.ahead/state.db; the live
    directories under target/live/ are what those runs deployed. Takes a few seconds and runs
    its own event loop: async code calls it in a thread.

    Args:
        target: An empty or new directory.
        now: The story's present, in seconds since the epoch (the current time by default).
            Every commit is dated at a fixed offset before it, so the same `now` always gives
            the same commit shas.
        reproducible: also make the recorded runs the same every time (for screenshots and
            snapshot tests): runs one at a time, then `freeze` their times and log text.

    Raises:
        InvalidRequest: `target` holds an ahead.yml, or is a directory that is not empty.
        CoreError: git failed, or a run of the story did not end as the story says (the
            workspace is then left for inspection with `ahead logs`).
    """
    target = target.expanduser().resolve()
    if (target / FILENAME).exists():
        raise InvalidRequest(f"{target / FILENAME} already exists; choose another directory")
    _make_dir(target)
    if any(target.iterdir()):
        raise InvalidRequest(f"{target} is not empty; the demo needs an empty or new directory")
    now = time.time() if now is None else now
    shas = {(repo.name, label): sha for repo in _repos()
            for label, sha in _make_repo(target, repo, now).items()}
    user = workspace.current_os_user()
    users = _scalar(user if NAME.match(user) else str(os.getuid()))
    config = (_sources() / "ahead.yml").read_text(encoding="utf-8").replace("{user}", users)
    (target / FILENAME).write_text(config, encoding="utf-8")
    ws = workspace.read(target / FILENAME)
    if reproducible:  # one run at a time: run, stage and step ids come out in the same order
        ws = dataclasses.replace(ws, settings=dataclasses.replace(ws.settings, max_parallel_runs=1))
    for number, round_ in enumerate(_rounds(), 1):
        if round_.before is not None:
            round_.before(target, now)
        _play(ws, shas, round_, number)
        if round_.after is not None:
            round_.after(target, now)
    with Store(ws.db_path, session="ahead init --demo") as store:
        for tracked in ws.repos:  # as an engine would: commits made from now on get runs
            _, common = gitio.git_dirs(ws.repo_dir(tracked))
            runstate.save_refs(store, tracked.name, gitio.read_branches(common), [])
    if reproducible:
        freeze(ws, now)


_VARYING = [  # log text that differs from one run to the next, and what it becomes when frozen
    (re.compile(r"(Ran \d+ tests? in )\d+\.\d+s"), r"\g<1>0.004s"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "0" * 64),
    (re.compile(r"(sha256 )[0-9a-f]{16}\b"), r"\g<1>" + "0" * 16),
    (re.compile(r"\b\d+ bytes\b"), "1234 bytes"),
    (re.compile(r"\bami-[0-9a-f]{17}\b"), "ami-0f1e2d3c4b5a69788"),
]


def freeze(ws: Workspace, now: float) -> None:
    """Make the recorded runs of a demo the same on every machine and every day: times become
    fixed offsets from each commit's time, the workspace path becomes `~/demo`, and the few
    log lines that vary (test timings, archive digests and sizes) get fixed values. Only for
    pictures and snapshot tests: it rewrites history (never the audit log)."""
    root = str(ws.root)
    with Store(ws.db_path, session="ahead init --demo") as store, store.transaction() as conn:
        for run in conn.execute("SELECT id, committed_at FROM runs ORDER BY id").fetchall():
            start = (run["committed_at"] or now - 86400) + 120
            conn.execute("UPDATE runs SET created_at = ?, started_at = ?, finished_at = NULL WHERE id = ?",
                         (start - 5, start, run["id"]))
            clock = start
            for stage in conn.execute("SELECT id, idx, status FROM stages WHERE run_id = ? ORDER BY idx",
                                      (run["id"],)).fetchall():
                if stage["status"] == "skipped":
                    conn.execute("UPDATE stages SET started_at = NULL, finished_at = NULL WHERE id = ?",
                                 (stage["id"],))
                    conn.execute("UPDATE steps SET started_at = NULL, finished_at = NULL WHERE stage_id = ?",
                                 (stage["id"],))
                    continue
                stage_start = clock
                for step in conn.execute("SELECT id, idx FROM steps WHERE stage_id = ? ORDER BY idx",
                                         (stage["id"],)).fetchall():
                    took = 3 + (7 * run["id"] + 5 * stage["idx"] + 3 * step["idx"]) % 40
                    conn.execute("UPDATE steps SET started_at = ?, finished_at = ? WHERE id = ?",
                                 (clock, clock + took, step["id"]))
                    conn.execute("UPDATE log_lines SET ts = ? WHERE step_id = ?", (clock, step["id"]))
                    clock += took
                conn.execute("UPDATE stages SET started_at = ?, finished_at = ? WHERE id = ?",
                             (stage_start, clock, stage["id"]))
                conn.execute("UPDATE deployments SET deployed_at = ? WHERE stage_id = ?", (clock, stage["id"]))
            conn.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (clock, run["id"]))
        for row in conn.execute("SELECT step_id, seq, line FROM log_lines").fetchall():
            line = row["line"].replace(root, "~/demo")
            for pattern, fixed in _VARYING:
                line = pattern.sub(fixed, line)
            if line != row["line"]:
                conn.execute("UPDATE log_lines SET line = ? WHERE step_id = ? AND seq = ?",
                             (line, row["step_id"], row["seq"]))
        conn.execute("UPDATE runs SET error = REPLACE(error, ?, '~/demo') WHERE error IS NOT NULL", (root,))
        conn.execute("UPDATE runs SET engine = 'ahead init --demo'")


def _play(ws: Workspace, shas: dict[tuple[str, str], str], round_: Round, number: int) -> None:
    """Queue a round's runs as the engine would for pushed commits, and run them to the end."""
    ids: dict[int, DemoRun] = {}
    with Store(ws.db_path, session="ahead init --demo") as store:
        services = Services(ws, store)
        for run in round_.runs:
            repo = ws.repo(run.repo)
            sha = shas[(run.repo, run.label)]
            email = gitio.commit(ws.repo_dir(repo), sha).email
            run_id = services.queue(repo, run.branch, f"refs/heads/{run.branch}", sha, "commit",
                                    f"git:{email}")
            ids[run_id] = run
    rows = asyncio.run(_run_all(ws, set(ids)))
    for run_id, run in ids.items():
        status = rows.get(run_id, {}).get("status", "missing")
        if status != run.expect:
            raise CoreError(
                f"demo round {number}: run #{run_id} ({run.repo} {run.label}) ended {status}, "
                f"expected {run.expect}; see: ahead --workspace {ws.root} logs {run_id}")


async def _run_all(ws: Workspace, run_ids: set[int]) -> dict[int, dict[str, object]]:
    name = f"ahead init --demo (pid {os.getpid()})"
    async with Engine(ws, only_runs=run_ids, name=name) as engine:
        try:
            rows = await asyncio.gather(*(engine.wait_run(i, RUN_TIMEOUT) for i in sorted(run_ids)))
        except TimeoutError:
            raise CoreError(f"the demo's runs took longer than {RUN_TIMEOUT:.0f}s; see: "
                            f"ahead --workspace {ws.root} runs") from None
    return {int(row["id"]): row for row in rows if row}


# -- ahead demo ------------------------------------------------------------------------------------


def settle(ws: Workspace, say: Callable[[str], None] | None = None,
           timeout: float = SETTLE_TIMEOUT) -> None:
    """Run what is queued before the demo shows its status, unless an engine already runs.

    Starts an engine (which also notices commits pushed since the last one ran), waits until no
    run is queued or running, at most `timeout` seconds, and stops it. One line per finished run
    goes to `say` (print by default). Never reads from the terminal. Runs its own event loop:
    async code calls it in a thread.
    """
    report = say or (lambda line: print(line, flush=True))
    with Store(ws.db_path, session=f"ahead demo:{os.getpid()}") as store:
        if lease.holder(store, LEASE_STALE_SECONDS) is not None:
            return
    try:
        asyncio.run(_settle(ws, report, timeout))
    except LeaseHeld:
        return  # another engine started meanwhile: it will do the work


async def _settle(ws: Workspace, report: Callable[[str], None], timeout: float) -> None:
    names = {repo.name for repo in ws.repos}
    async with Engine(ws, name=f"ahead demo (pid {os.getpid()})") as engine:
        deadline = time.monotonic() + timeout
        watched: set[int] = set()
        while True:
            marks = ", ".join("?" * len(watched)) or "NULL"  # placeholders only, never values
            rows = await engine.db.call(
                engine.db.store.query,
                "SELECT id, repo, branch, status FROM runs WHERE status IN ('queued', 'running') "
                f"OR id IN ({marks}) ORDER BY id", tuple(sorted(watched)))
            active = [row for row in rows if row["status"] in ("queued", "running")
                      and row["repo"] in names]
            if active and not watched:
                report(f"running {len(active)} queued run(s) in {ws.root} ...")
            for row in rows:
                if row["id"] in watched and row["status"] not in ("queued", "running"):
                    watched.discard(row["id"])
                    report(_finished_line(row))
            watched |= {row["id"] for row in active}
            if not active:
                return
            if time.monotonic() > deadline:
                report(f"still running after {timeout:.0f}s; stopping the engine (unfinished "
                       "runs are marked interrupted)")
                return
            await asyncio.sleep(0.2)


def _finished_line(row: dict[str, object]) -> str:
    status = str(row["status"])
    branch = "" if row["branch"] == "main" else f" ({row['branch']})"
    return f"run #{row['id']} {row['repo']}{branch} {GLYPH.get(status, '?')} {status}"
