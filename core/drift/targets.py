"""What drift checks: the targets of every repo, per environment it has deployed to.

`revision` is built in for every (repo, environment) with a deployment; `files` and `command`
targets come from the `drift:` section of the pipeline file at the deployed commit (read from
git once per commit). Also the types every part of core/drift/ shares: `Target` and the
`Finding` of a check.

Reads git and the store's deployments only: may not depend on the checks, the mirror, the
scheduler or the drift records (the other modules of core/drift/).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from core import gitio
from core.errors import ConfigError, GitError
from core.pipeline import PIPELINE_PATH, DriftSpec, Pipeline
from core.pipeline import parse as parse_pipeline
from core.store.db import Store
from core.workspace import RepoConfig, Workspace

REVISION = "revision"


@dataclass(frozen=True)
class Target:
    """One thing checked: (repo, environment, name), with its spec and the deployed commit."""

    repo: str
    environment: str
    spec: DriftSpec | None  # None: the built-in revision target
    commit: str | None  # deployed commit (None: never deployed)
    main: str | None = None  # revision: the head of main when the target was listed

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else REVISION

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec else REVISION

    @property
    def key(self) -> str:
        """A file-name-safe key for the target's private state."""
        raw = f"{self.repo}\0{self.environment}\0{self.name}"
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.repo}-{self.environment}-{self.name}")[:80]
        return f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


@dataclass
class Finding:
    state: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def unknown(summary: str, **detail: Any) -> Finding:
    return Finding("unknown", summary, {"error": summary, **detail})


def deployed_commits(store: Store) -> dict[tuple[str, str], str]:
    """(store thread) The deployed commit of each (repo, environment)."""
    return {
        (r["repo"], r["environment"]): r["commit_sha"]
        for r in store.query(
            "SELECT d.repo, d.environment, d.commit_sha FROM deployments d JOIN (SELECT MAX(id) AS id "
            "FROM deployments GROUP BY repo, environment) last ON last.id = d.id"
        )
    }


PipelineCache = dict[tuple[str, str], "Pipeline | ConfigError | None"]


def discover(
    ws: Workspace, deployed: dict[tuple[str, str], str], cache: PipelineCache | None = None
) -> list[Target]:
    """(worker thread) Every target of every repo, for each environment it has deployed to:
    revision, and the `drift:` specs of the pipeline at the deployed commit. Pipelines are read
    from git once per commit (`cache`: commits never change); a repo that never deployed costs a
    read of its ref files and nothing else (1,000 idle repos must stay cheap)."""
    cache = {} if cache is None else cache
    targets: list[Target] = []
    for repo in ws.repos:
        envs = [e for e in ws.environments if (repo.name, e) in deployed]
        if not envs:
            continue
        main = main_sha(ws, repo)
        for env in envs:
            commit = deployed[(repo.name, env)]
            targets.append(Target(repo.name, env, None, commit, main))
            pipeline = _pipeline_at(ws, repo, commit, cache)
            if isinstance(pipeline, Pipeline):
                targets.extend(
                    Target(repo.name, env, spec, commit) for spec in pipeline.drift.get(env, ())
                )
    if len(cache) > 20_000:
        cache.clear()
    return targets


def main_sha(ws: Workspace, repo: RepoConfig) -> str | None:
    try:
        _, common = gitio.git_dirs(ws.repo_dir(repo))
        return gitio.read_branches(common).get(repo.branch)
    except (GitError, OSError):
        return None


def _pipeline_at(
    ws: Workspace, repo: RepoConfig, sha: str | None, cache: PipelineCache
) -> Pipeline | ConfigError | None:
    if not sha:
        return None
    if (repo.name, sha) in cache:
        return cache[(repo.name, sha)]
    label = f"{repo.name}@{sha[:7]}:{PIPELINE_PATH}"
    found: Pipeline | ConfigError | None
    try:
        text = gitio.read_file(ws.repo_dir(repo), sha, PIPELINE_PATH)
        found = parse_pipeline(text, label, ws.environments) if text is not None else None
    except ConfigError as exc:
        found = exc
    except GitError:
        return None  # not cached: git may answer next time
    cache[(repo.name, sha)] = found
    return found
