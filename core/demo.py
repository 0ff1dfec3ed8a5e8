"""The demo workspace and the starter ahead.yml: `ahead init [--demo]` and `ahead demo`.

Someone trying Change Ahead should see a workspace with a past before they have one of their
own, so `create()` builds a self-contained one: three real git repositories (a machine image,
infrastructure, a service) whose pipelines do real, small work with sh, python3, git, tar and
sha256sum, and whose history has been through real runs of the real engine. The environments end
up at different commits, so status shows pending commits and lag, and the failed runs say why.
Deploys write to `live/<environment>/<repo>/` in the workspace: the demo's stand-in for clouds
and clusters. Step output says honestly what each step stands in for.

Prod has an approval policy, so every run that reached prod waited at its gate until two people
who did not write the change approved it, through core.approvals as `ahead approve` would. The
story ends with the service's release 1.2.0 waiting there: bob approved, carol may still.

The repos' files, the story (core/demo_repos/story.yml: who committed what and when, which
runs follow, who approves) and the demo's and the starter's ahead.yml are package data in
core/demo_repos/ (see its README.md); this module plays the story. Given the same `now`,
`create()` makes the same commits, sha for sha.

Depends on core.engine, core.approvals, core.services, core.gitio, core.lease, core.store and
core.workspace; runs git with argv lists only and never puts repository content into a shell
string."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from core import approvals, gitio, lease, runstate, states, workspace
from core.engine import LEASE_STALE_SECONDS, Engine, Gate
from core.errors import CoreError, InvalidRequest, LeaseHeld
from core.fields import NAME
from core.serve.keys import generate_key_pair
from core.services import Services
from core.store.db import Row, Store
from core.workspace import FILENAME, Workspace

SESSION = "ahead init --demo"
RUN_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
People = dict[str, tuple[str, str, str]]  # name: (full name, email, time zone)
GLYPH = states.GLYPHS

# Our git commands must not depend on (or be changed by) the user's git configuration.
GIT_OPTIONS = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.autocrlf=false",
    "-c",
    "init.defaultBranch=main",
)
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
        operators = (
            f"\n  - name: {_scalar(user)}\n    roles: [admin]\n    os_users: [{_scalar(user)}]"
        )
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
    """A run of the history: repo at a commit label, on a branch, and how it must end
    ("waiting": left at its approval gate), with the (operator, comment) approvals it gets there."""

    repo: str
    label: str
    expect: str
    branch: str = "main"
    approve: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Round:
    """Runs that execute together, and what happens in the live world (root, now) around them."""

    runs: list[DemoRun]
    before: Callable[[Path, float], None] | None = None
    after: Callable[[Path, float], None] | None = None


@dataclass(frozen=True)
class Story:
    """core/demo_repos/story.yml: the people, the repos' commits and the rounds of runs."""

    people: People
    repos: list[DemoRepo]
    rounds: list[Round]


# -- what happens in the live world -------------------------------------------------------------

LOCK = {
    "id": "3f0c2a8e-51d7-4b9e-9d1c-6a2f0e7b4c11",
    "operation": "OperationTypeApply",
    "who": "bob@bob-laptop",
    "info": "manual apply: sg.web hotfix",
}


def _lock_prod(root: Path, now: float) -> None:
    """bob is applying prod by hand from his laptop, holding its state lock."""
    lock = root / "live" / "prod" / "infrastructure" / "state.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 240))
    lock.write_text(json.dumps(LOCK | {"created": created}, indent=2) + "\n")


def _unlock_prod(root: Path, now: float) -> None:
    """bob's apply finished and released the lock; nobody re-ran the pipeline for prod."""
    (root / "live" / "prod" / "infrastructure" / "state.lock").unlink(missing_ok=True)


def _story() -> Story:
    """Read core/demo_repos/story.yml (its comments say what each field means)."""
    data = yaml.safe_load((_sources() / "story.yml").read_text(encoding="utf-8"))
    actions = {"lock prod": _lock_prod, "unlock prod": _unlock_prod}

    def commit(c: dict[str, str]) -> DemoCommit:
        days, _, hours = c["ago"].rstrip("h").rpartition("d")  # "1d5h", "3h"
        return DemoCommit(
            c["label"],
            c["author"],
            int(days or 0) * 24 + int(hours or 0),
            c["subject"],
            c.get("body", ""),
            c.get("committer"),
        )

    def repo(name: str, spec: dict[str, Any]) -> DemoRepo:
        branch = spec.get("branch")
        return DemoRepo(
            name,
            tuple(commit(c) for c in spec["commits"]),
            (branch["name"], branch["from"], commit(branch["commit"])) if branch else None,
        )

    def run(spec: dict[str, Any]) -> DemoRun:
        approve = tuple((name, comment or "") for name, comment in spec.get("approve", {}).items())
        return DemoRun(
            spec["repo"], spec["at"], spec["expect"], spec.get("branch", "main"), approve
        )

    rounds = [
        Round(
            [run(spec) for spec in round_["runs"]],
            actions[round_["before"]] if "before" in round_ else None,
            actions[round_["after"]] if "after" in round_ else None,
        )
        for round_ in data["rounds"]
    ]
    people = {name: (full, email, zone) for name, (full, email, zone) in data["people"].items()}
    return Story(people, [repo(name, spec) for name, spec in data["repos"].items()], rounds)


# -- building it -------------------------------------------------------------------------------------


def _sources() -> Traversable:
    """The demo's files, shipped as package data (see core/demo_repos/README.md)."""
    return resources.files("core") / "demo_repos"


def _git(
    repo: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None
) -> str:
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


def _commit(path: Path, commit: DemoCommit, now: float, people: People) -> str:
    """Commit the work tree as `commit`, dated only by `now` and the story's offsets."""
    (a_name, a_email, a_zone), (c_name, c_email, c_zone) = (
        people[commit.author],
        people[commit.committer or commit.author],
    )
    authored = now - commit.hours_ago * 3600
    committed = min(authored + (3 * 3600 if commit.committer else 0), now)  # merged a bit later
    env = {
        "GIT_AUTHOR_NAME": a_name,
        "GIT_AUTHOR_EMAIL": a_email,
        "GIT_AUTHOR_DATE": f"{int(authored)} {a_zone}",
        "GIT_COMMITTER_NAME": c_name,
        "GIT_COMMITTER_EMAIL": c_email,
        "GIT_COMMITTER_DATE": f"{int(committed)} {c_zone}",
    }
    message = commit.subject + (f"\n\n{commit.body}\n" if commit.body else "\n")
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "--no-verify", "--file=-", env=env, input=message.encode())
    return _git(path, "rev-parse", "HEAD").strip()


def _make_repo(root: Path, repo: DemoRepo, now: float, people: People) -> dict[str, str]:
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
        shas[commit.label] = _commit(path, commit, now, people)
    if repo.branch is not None:
        name, base, commit = repo.branch
        _git(path, "checkout", "--quiet", "-b", name, shas[base])
        _apply(path, repo.name, commit.label)
        shas[commit.label] = _commit(path, commit, now, people)
        _git(path, "checkout", "--quiet", "main")
    return shas


def create(target: Path, now: float | None = None, reproducible: bool = False) -> None:
    """Make the demo workspace in `target`: ahead.yml, three repos, and their history of runs.

    Every run is a real run of the real engine, recorded in target/.ahead/state.db; the live
    directories under target/live/ are what those runs deployed. The last service run is left
    waiting at prod's approval gate with one approval of two (the next engine resumes it).
    Takes a few seconds and runs its own event loop: async code calls it in a thread.

    Args:
        target: An empty or new directory.
        now: The story's present, in seconds since the epoch (the current time by default).
            Every commit is dated at a fixed offset before it, so the same `now` always gives
            the same commit shas.
        reproducible: run the story's pipelines one at a time, so run, stage and step ids come
            out in the same order every time. The pictures and snapshot tests then rewrite the
            recorded times and varying log text (tests/tui/scenes.py `freeze`): that
            history rewrite is kept out of the product.

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
    story = _story()
    shas = {
        (repo.name, label): sha
        for repo in story.repos
        for label, sha in _make_repo(target, repo, now, story.people).items()
    }
    user = workspace.current_os_user()
    users = _scalar(user if NAME.match(user) else str(os.getuid()))
    config = (_sources() / "ahead.yml").read_text(encoding="utf-8").replace("{user}", users)
    for name in ("alice", "bob", "carol"):  # a key pair each, to log in over `ahead serve`
        public = generate_key_pair(target / ".ahead" / "keys" / name, f"{name}@change-ahead-demo")
        config = config.replace(f"{{key:{name}}}", public)
    (target / FILENAME).write_text(config, encoding="utf-8")
    ws = workspace.read(target / FILENAME)
    if reproducible:  # one run at a time: run, stage and step ids come out in the same order
        ws = dataclasses.replace(ws, settings=dataclasses.replace(ws.settings, max_parallel_runs=1))
    for number, round_ in enumerate(story.rounds, 1):
        if round_.before is not None:
            round_.before(target, now)
        _play(ws, shas, round_, number)
        if round_.after is not None:
            round_.after(target, now)
    with Store(ws.db_path, session=SESSION) as store:
        for tracked in ws.repos:  # as an engine would: commits made from now on get runs
            _, common = gitio.git_dirs(ws.repo_dir(tracked))
            runstate.save_refs(store, tracked.name, gitio.read_branches(common), [])
    hand_edit(target)
    asyncio.run(_check_drift(ws))


HAND_EDIT = (
    "live/prod/service/current/app/orders.py",
    '"fig": 1.25}',
    '"fig": 0.99}  # sale: price match, by hand',
)


def hand_edit(target: Path) -> None:
    """The story's last event: someone edits the service on a prod host, outside the pipeline
    (a price changed by hand during a sale). `ahead demo` opens with that drift in prod."""
    path = target / HAND_EDIT[0]
    text = path.read_text(encoding="utf-8")
    if HAND_EDIT[1] not in text:
        raise CoreError(f"the demo's hand edit no longer applies to {path}")
    path.write_text(text.replace(HAND_EDIT[1], HAND_EDIT[2]), encoding="utf-8")


async def _check_drift(ws: Workspace) -> None:
    """Check every drift target once, as the engine would on start, so the demo opens with
    findings (the engine checks again on its schedule)."""
    from core.drift import DriftChecker
    from core.store.db import AsyncStore

    db = AsyncStore(Store(ws.db_path, session=SESSION))
    await db.open()
    try:
        checker = DriftChecker(ws, db, parallel=1)  # one at a time: the same order every time
        for target in await checker.targets():
            await checker.check([target], "demo")
    finally:
        await db.aclose()


def _play(ws: Workspace, shas: dict[tuple[str, str], str], round_: Round, number: int) -> None:
    """Queue a round's runs as the engine would for pushed commits, and run them to the end
    (or to their approval gate)."""
    runs: dict[int, DemoRun] = {}
    with Store(ws.db_path, session=SESSION, create=True) as store:  # the demo makes its store
        services = Services(ws, store)
        for run in round_.runs:
            repo = ws.repo(run.repo)
            sha = shas[(run.repo, run.label)]
            email = gitio.commit(ws.repo_dir(repo), sha).email
            run_id = services.queue(
                repo, run.branch, f"refs/heads/{run.branch}", sha, "commit", f"git:{email}"
            )
            runs[run_id] = run
    try:
        ended = asyncio.run(_run_all(ws, runs))
    except TimeoutError:
        raise CoreError(
            f"the demo's runs took longer than {RUN_TIMEOUT:.0f}s; see: "
            f"ahead --workspace {ws.root} runs"
        ) from None
    for run_id, run in runs.items():
        if ended[run_id] != run.expect:
            raise CoreError(
                f"demo round {number}: run #{run_id} ({run.repo} {run.label}) ended {ended[run_id]}, "
                f"expected {run.expect}; see: ahead --workspace {ws.root} logs {run_id}"
            )


async def _run_all(ws: Workspace, runs: dict[int, DemoRun]) -> dict[int, str]:
    """Run `runs` on an engine of their own, approving at their gates; returns how each ended.
    A run expected to wait is left waiting when the engine stops (the next engine resumes it)."""

    async def follow(engine: Engine, run_id: int, run: DemoRun) -> str:
        if run.approve:
            await _approve(ws, run_id, run.approve)
        if run.expect == "waiting":
            return await _counted(engine, run_id, len(run.approve))
        return str((await engine.wait_run(run_id)).get("status", "missing"))

    async with Engine(
        ws, only_runs=set(runs), name=f"ahead init --demo (pid {os.getpid()})"
    ) as engine:
        async with asyncio.timeout(RUN_TIMEOUT):
            ended = await asyncio.gather(*(follow(engine, i, run) for i, run in runs.items()))
    return dict(zip(runs, ended, strict=True))


async def _approve(ws: Workspace, run_id: int, approve: tuple[tuple[str, str], ...]) -> None:
    """Once the run's gate has opened its change, approve it as each of `approve`, through
    approvals.decide on a connection of its own, as `ahead --as NAME approve` would."""
    with Store(ws.db_path, session=SESSION) as store:
        while True:
            row = await asyncio.to_thread(
                store.query_one,
                "SELECT r.status, c.id AS change FROM runs r LEFT JOIN change_requests c "
                "ON c.run_id = r.id AND c.status = 'open' WHERE r.id = ?",
                (run_id,),
            )
            if row is None or row["status"] in runstate.TERMINAL:
                return  # it ended before its gate: the caller reports how
            if row["change"] is not None:
                break
            await asyncio.sleep(0.05)
        for name, comment in approve:
            verdict = await asyncio.to_thread(
                approvals.decide, store, ws, row["change"], name, "approve", comment
            )
            if not verdict.ok:
                raise CoreError(
                    f"demo: {name} could not approve change {row['change']}: {verdict.message}"
                )


async def _counted(engine: Engine, run_id: int, given: int) -> str:
    """The run's status once it waits at its gate and the gate has counted the approvals given
    (its error says so: the same text on every build), or after the gate's next recheck."""
    deadline = time.monotonic() + Gate.RECHECK_SECONDS + 1.0
    while True:
        row = (
            await engine.db.call(
                engine.db.store.query_one, "SELECT status, error FROM runs WHERE id = ?", (run_id,)
            )
            or {}
        )
        status = str(row.get("status", "missing"))
        counted = status == "waiting" and f": {given} of " in (row.get("error") or "")
        if counted or status not in ("queued", "running", "waiting") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


# -- ahead demo ------------------------------------------------------------------------------------


def settle(
    ws: Workspace, say: Callable[[str], None] | None = None, timeout: float = SETTLE_TIMEOUT
) -> None:
    """Run what is queued before the demo shows its status, unless an engine already runs.

    Starts an engine (which also notices commits pushed since the last one ran, and resumes
    runs waiting at approval gates), waits until every run has finished or waits at its gate
    for decisions, at most `timeout` seconds, and stops it (waiting runs stay waiting). One
    line per finished run, and one per run waiting for approval saying who may approve, goes to
    `say` (print by default). Never reads from the terminal. Runs its own event loop: async
    code calls it in a thread.
    """
    report = say or (lambda line: print(line, flush=True))
    with Store(ws.db_path, session=f"ahead demo:{os.getpid()}") as store:
        if lease.holder(store, LEASE_STALE_SECONDS) is not None:
            return
    try:
        asyncio.run(_settle(ws, report, timeout))
    except LeaseHeld:
        return  # another engine started meanwhile: it will do the work


_UNSETTLED = (  # runs not finished (or watched), each with its latest change request, if any
    "SELECT r.id, r.repo, r.branch, r.status, c.id AS change, c.status AS change_status, "
    "c.environment, c.expires_at FROM runs r LEFT JOIN change_requests c ON c.id = (SELECT MAX(id) "
    "FROM change_requests WHERE run_id = r.id AND status != 'voided') "
    "WHERE r.status IN ('queued', 'running', 'waiting') OR r.id IN ({marks}) ORDER BY r.id"
)


async def _settle(ws: Workspace, report: Callable[[str], None], timeout: float) -> None:
    names = {repo.name for repo in ws.repos}
    async with Engine(ws, name=f"ahead demo (pid {os.getpid()})") as engine:
        deadline = time.monotonic() + timeout
        watched: set[int] = set()
        while True:
            marks = ", ".join("?" * len(watched)) or "NULL"  # placeholders only, never values
            rows = await engine.db.call(
                engine.db.store.query, _UNSETTLED.format(marks=marks), tuple(sorted(watched))
            )
            gated = [row for row in rows if row["repo"] in names and _at_gate(ws, row)]
            active = [
                row
                for row in rows
                if row["status"] in ("queued", "running", "waiting")
                and row["repo"] in names
                and row not in gated
            ]
            if active and not watched:
                report(f"running {len(active)} run(s) in {ws.root} ...")
            for row in rows:
                if row["id"] in watched and row["status"] in runstate.TERMINAL:
                    watched.discard(row["id"])
                    report(_finished_line(row))
            watched |= {row["id"] for row in active}
            if not active:  # a resumed run stopped before it is back at its gate stays waiting
                for row in gated:
                    report(await engine.db.call(_gate_line, engine.db.store, ws, row))
                return
            if active and time.monotonic() > deadline:
                report(
                    f"still running after {timeout:.0f}s; stopping the engine (unfinished "
                    "runs are marked interrupted)"
                )
                return
            await asyncio.sleep(0.2)


def _at_gate(ws: Workspace, row: Row) -> bool:
    """Whether a run waits at its gate for something no engine can do: decisions (an open,
    unexpired change) or the end of a freeze (an approved change). Else the engine moves it."""
    if row["status"] != "waiting" or row["change"] is None:
        return False
    if row["change_status"] == approvals.OPEN:
        return row["expires_at"] is None or row["expires_at"] > time.time()
    policy = ws.policies.get(row["environment"])
    frozen = policy is not None and policy.frozen(time.time()) is not None
    return row["change_status"] == approvals.APPROVED and frozen


def _gate_line(store: Store, ws: Workspace, row: Row) -> str:
    """(store thread) What a run at its gate waits for, and the command that gives it."""
    check = approvals.change_detail(store, ws, row["change"])["checklist"]
    where = f"run #{row['id']} {row['repo']}"
    if row["change_status"] == approvals.APPROVED:
        return (
            f"{where} waits: change #{row['change']} is approved; {row['environment']} is frozen "
            f"({check['frozen']})"
        )
    counted = f"change #{row['change']} ({len(check['approved_by'])} of {check['required']})"
    others = [name for name in check["eligible"] if name not in check["approved_by"]]
    user = workspace.current_os_user()  # --as works for operators that list this OS user
    playable = [name for name in others if (op := ws.operator(name)) and user in op.os_users]
    how = (
        f"approve with: ahead --workspace {ws.root} --as {playable[0]} approve {row['change']}"
        if playable
        else f"{', '.join(others) or 'nobody'} may approve it; see: ahead "
        f"--workspace {ws.root} change {row['change']}"
    )
    return f"{where} waits for approval: {counted} — {how}"


def _finished_line(row: dict[str, object]) -> str:
    status = str(row["status"])
    branch = "" if row["branch"] == "main" else f" ({row['branch']})"
    return f"run #{row['id']} {row['repo']}{branch} {GLYPH.get(status, '?')} {status}"
