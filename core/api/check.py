"""`ahead check`: validate ahead.yml, the store, the sandbox, the repos and their pipelines.

A read of the door (core.api): it returns the report's lines; the command line prints them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from core import gitio, sandbox, workspace
from core.errors import ConfigError, CoreError
from core.pipeline import PIPELINE_PATH
from core.pipeline import parse as parse_pipeline
from core.store.db import Store, marker_path
from core.workspace import Workspace


@dataclass(frozen=True)
class CheckReport:
    """What `ahead check` found: the lines it prints, in order, and how many are problems."""

    lines: tuple[str, ...]
    problems: int


def check(ws: Workspace) -> CheckReport:
    """`ahead check`: ahead.yml, the store, the sandbox, each repo and its pipeline, as the
    lines to print and the number of problems found."""
    lines: list[str] = []
    say = lines.append
    problems = 0
    say(f"{ws.file}: ok ({len(ws.repos)} repos, environments {' → '.join(ws.environments)})")
    damaged = _check_store(ws, lines)
    if damaged:
        say(f"  {damaged}")
        problems += 1
    say(f"  {_sandbox_line(ws)}")
    for repo in ws.repos:
        path = ws.repo_dir(repo)
        if repo.is_remote and not path.exists():
            say(f"  {repo.name}: remote, not fetched yet (the engine mirrors it on start)")
            continue
        problem = gitio.check_repo(path, repo.branch)
        if problem:
            say(f"  {repo.name}: {problem}")
            problems += 1
            continue
        _, common = gitio.git_dirs(path)
        sha = gitio.read_branches(common)[repo.branch]
        label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
        try:
            text = gitio.read_file(path, sha, PIPELINE_PATH)
            if text is None:
                say(f"  {label}: missing (commit one to {repo.branch})")
                problems += 1
                continue
            pipeline = parse_pipeline(
                text,
                label,
                ws.environments,
                tuple(ws.secrets),
                ws.runner_names,
                secret_scope=functools.partial(_secret_refusal, ws, repo.name),
            )
        except ConfigError as exc:
            say(f"  {exc}")
            problems += 1
            continue
        stages = ", ".join(
            s.name + (f"→{s.environment}" if s.environment else "") for s in pipeline.stages
        )
        say(f"  {repo.name}: ok ({stages})")
    return CheckReport(tuple(lines), problems)


def _check_store(ws: Workspace, lines: list[str]) -> str:
    """The store: "" when it opens, has every table and passes `PRAGMA quick_check`."""
    say = lines.append
    if not ws.db_path.exists() and not marker_path(ws.db_path).exists():
        say(f"  store {ws.db_path}: not made yet (the engine makes it on its first start)")
        return ""
    try:
        with Store(ws.db_path, session=f"cli:{workspace.current_os_user()}:{os.getpid()}") as store:
            damage = store.quick_check()
            if damage:
                return f"store {ws.db_path}: damaged ({damage.splitlines()[0][:200]}): restore it from a backup"
            say(f"  store {ws.db_path}: ok (store id {store.store_id})")
    except CoreError as exc:
        return str(exc)
    return ""


def _sandbox_line(ws: Workspace) -> str:
    """How untrusted steps (branch runs, stages that deploy nowhere) are isolated here."""
    if not ws.settings.sandbox:
        return (
            "sandbox: off (settings): branch runs and builds run unisolated, as the engine's user"
        )
    why = sandbox.unavailable()
    if why:
        return (
            f"sandbox: unavailable: {why}; branch runs will be refused "
            "(fix user namespaces, or set `settings: sandbox: off`)"
        )
    return "sandbox: ok (branch runs and builds run in user+mount namespaces)"


def _secret_refusal(
    ws: Workspace, repo: str, name: str, environment: str | None, branch: bool
) -> str | None:
    """Why the pipeline of `repo` may not give secret `name` to a stage (`ahead check`)."""
    source = ws.secrets.get(name)
    return None if source is None else source.refusal(repo, environment, branch)
