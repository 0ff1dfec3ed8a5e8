"""The environment a step runs with, and the secrets it is given.

A step inherits this process's environment without ahead's own variables and without the
variables secrets are read from (secrets.inherited_env, which drift commands use too), plus
git's safety variables, the pipeline's `env:`, the run's metadata (AHEAD_*, capped: commit
metadata is written by committers) and the values of the secrets it declares, refused unless
their scope in ahead.yml allows the run.

Pure functions over the workspace, the run's row and the pipeline: may not depend on the engine,
the store or the run's execution.
"""

from __future__ import annotations

from core import gitio, secrets
from core.pipeline import Pipeline, Stage, Step
from core.secrets import Masker
from core.store.db import Row
from core.workspace import Workspace

METADATA_CAP = 4096


def capped(value: str | None, limit: int = METADATA_CAP) -> str:
    """`value` cut to at most `limit` bytes of UTF-8 plus a visible marker: commit metadata is
    written by committers, and one 128 KiB value (Linux's cap on a single environment string)
    would make every step fail to start with "Argument list too long"."""
    value = value or ""
    data = value.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return value
    kept = data[:limit].decode("utf-8", "ignore")
    return f"{kept}… [truncated {len(data) - len(kept.encode('utf-8', 'surrogateescape'))} bytes]"


def step_env(
    ws: Workspace,
    run: Row,
    pipeline: Pipeline,
    stage: Stage,
    step: Step,
    run_id: int,
    token: str,
    secret_values: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one step of run `run_id`: this process's (secret sources never leak
    through, see secrets.inherited_env), git's safety variables, the pipeline's, stage's and
    step's `env:`, the run's metadata (capped), and the values of the secrets it declares."""
    env = secrets.inherited_env(ws.secrets.values())
    env.update(
        {
            k: v
            for k, v in gitio.GIT_ENV.items()
            if k in ("GIT_NO_REPLACE_OBJECTS", "GIT_GRAFT_FILE")
        }
    )
    env.update(pipeline.env)
    env.update(stage.env)
    env.update(step.env)
    env.update(
        {
            "AHEAD_REPO": run["repo"],
            "AHEAD_COMMIT": run["commit_sha"],
            "AHEAD_REF": capped(run["ref"]),
            "AHEAD_BRANCH": capped(run["branch"]),
            "AHEAD_AUTHOR": capped(f"{run['author']} <{run['author_email']}>"),
            "AHEAD_SUBJECT": capped(run["subject"]),
            "AHEAD_ENVIRONMENT": stage.environment or "",
            "AHEAD_STAGE": stage.name,
            "AHEAD_RUN_ID": str(run_id),
            "AHEAD_WORKSPACE": str(ws.root),
            "AHEAD_STEP_TOKEN": token,
        }
    )
    env.update(secret_values or {})
    return {k: v.replace("\x00", "") for k, v in env.items()}


def step_secrets(
    ws: Workspace, run: Row, stage: Stage, step: Step
) -> tuple[dict[str, str], Masker]:
    """(worker thread) The values of the secrets this step declares, and a masker for every
    readable secret of the workspace (a step may print one it was not given).

    Raises:
        SecretError: a declared secret cannot be read, or its scope in ahead.yml does not
            allow this run's repo, branch or the stage's environment (the message holds no
            value; the step is given none).
    """
    wanted = set(stage.secrets) | set(step.secrets)
    for name in sorted(wanted):
        source = ws.secrets.get(name)
        reason = (
            f"secret {name} is not in {ws.file}"
            if source is None
            else source.refusal(run["repo"], stage.environment, not run["on_main"])
        )
        if reason is not None:
            raise secrets.SecretError(f"refused: {reason}")
    values: dict[str, str] = {}
    readable: list[str] = []
    for name, source in ws.secrets.items():
        try:
            value = secrets.read(source)
        except secrets.SecretError:
            if name in wanted:
                raise
            continue
        readable.append(value)
        if name in wanted:
            values[name] = value
    return values, Masker(readable)
