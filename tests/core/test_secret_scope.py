"""Secrets go only where ahead.yml scopes them: stages deploying to the secret's environments,
runs of its repos, and branch runs only with `branches: true`. `ahead check` refuses a pipeline
whose stage may not have a secret (file:line:field); the engine refuses it at run time (the step
fails with the reason and gets no value). The engine takes env-sourced values out of its own
environment: no step sees the source variable, nor reads it in /proc/<engine pid>/environ."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.engine import Engine
from core.errors import ConfigError
from core.workspace import parse as parse_workspace
from tests.conftest import commit, git, make_workspace
from tests.core.helpers import query, wait_run_done
from tests.core.test_cli import ahead

PROD_VALUE = "pr0d-t0ken-Value/only+prod"
CI_VALUE = "c1-token-for-main-only-x"

SECRETS = (
    "secrets:\n"
    "  PROD_TOKEN: {env: PROD_TOKEN_SOURCE, environments: [prod]}\n"
    "  CI_TOKEN: {file: secrets/ci}\n"
    "  LINT_TOKEN: {file: secrets/ci, branches: true, repos: [web]}\n"
)

# what `ahead check` refuses and the engine refuses at run time: a stage that branch runs execute
# listing a prod-only secret (and a main-only one)
LEAKY = """\
stages:
  - name: prodcheck
    secrets: [PROD_TOKEN]
    steps:
      - run: 'echo "prodcheck got [${PROD_TOKEN:-nothing}]"'
  - name: test
    steps:
      - run: 'echo "test got [${CI_TOKEN:-nothing}]"'
        secrets: [CI_TOKEN]
  - name: deploy
    environment: prod
    secrets: [PROD_TOKEN]
    steps:
      - run: 'printf %s "$PROD_TOKEN" | sha256sum'
on:
  main: [test, deploy]
  branches: [prodcheck, test]
"""

MAIN_ONLY_ON_BRANCHES = """\
stages:
  - name: lint
    steps:
      - run: 'echo lint'
        secrets: [LINT_TOKEN, CI_TOKEN]
"""

DEV_DEPLOY = """\
stages:
  - name: dev
    environment: dev
    steps:
      - run: 'echo deploy'
        secrets: [PROD_TOKEN]
"""


def scoped_ws(root: Path, repos: dict[str, str]) -> Path:
    make_workspace(root, repos, environments=("dev", "prod"), extra=SECRETS)
    (root / "secrets").mkdir()
    (root / "secrets" / "ci").write_text(CI_VALUE + "\n")
    return root


def test_check_refuses_a_stage_that_may_not_have_a_secret(tmp_path: Path) -> None:
    root = scoped_ws(
        tmp_path / "ws", {"web": LEAKY, "api": MAIN_ONLY_ON_BRANCHES, "ops": DEV_DEPLOY}
    )
    done = ahead(root, "check")
    assert done.returncode != 0, done.stdout
    out = done.stdout
    # web: the test stage (run on branches too) lists the prod-only secret, at line 3
    assert (
        "pipeline.yml:3: stages[0].secrets[0]" in out and "only for stages deploying to prod" in out
    ), out
    # api: LINT_TOKEN is only for repo web (the first refusal of its file), line 5
    assert "pipeline.yml:5: stages[0].steps[0].secrets[0]" in out and "only for repos web" in out, (
        out
    )
    # ops: a stage deploying to dev lists the prod-only secret
    assert "stages[0].steps[0].secrets[0]" in out and "this stage deploys to 'dev'" in out, out
    fixed = MAIN_ONLY_ON_BRANCHES.replace("LINT_TOKEN, ", "")
    commit(root / "repos" / "api", "main-only secret", files={".ahead/pipeline.yml": fixed})
    out = ahead(root, "check").stdout
    assert "CI_TOKEN is for main runs only and this stage runs on a branch" in out, out
    assert PROD_VALUE not in out and CI_VALUE not in out


def test_scope_errors_in_ahead_yml_name_file_line_and_field() -> None:
    base = "repos: [{name: web, path: /tmp/web}]\nenvironments: [dev, prod]\nsecrets:\n"
    cases = {
        "  T: {env: X_SOURCE, environments: [staging]}\n": (
            "ahead.yml:4",
            "no environment named 'staging'",
        ),
        "  T: {env: X_SOURCE, repos: [nope]}\n": ("ahead.yml:4", "no repo named 'nope'"),
        "  T: {env: X_SOURCE, branches: yes please}\n": ("ahead.yml:4", "must be true or false"),
        "  T: {env: X_SOURCE, environments: []}\n": ("ahead.yml:4", "is empty"),
    }
    for entry, (where, problem) in cases.items():
        with pytest.raises(ConfigError) as err:
            parse_workspace(base + entry, Path("/tmp/ahead.yml"))
        assert (
            where in str(err.value) and problem in str(err.value) and "secrets.T" in str(err.value)
        ), err.value
    ws = parse_workspace(base + "  T: {env: X_SOURCE}\n", Path("/tmp/ahead.yml"))
    assert ws.secrets["T"].branches is False  # the default: main runs only


async def test_a_branch_run_gets_no_prod_secret_and_a_main_deploy_to_prod_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import workspace
    from core.services import Actor, Services
    from core.store.db import Store

    root = scoped_ws(tmp_path / "ws", {"web": LEAKY})
    monkeypatch.setenv("PROD_TOKEN_SOURCE", PROD_VALUE)
    repo = root / "repos" / "web"
    git(repo, "branch", "feature")
    ws = workspace.read(root / "ahead.yml")
    async with Engine(ws) as engine:
        with Store(ws.db_path) as store:
            branch_run = Services(ws, store).trigger("web", Actor("alice"), ref="feature")
        run = await wait_run_done(engine, branch_run)
        steps = await query(
            engine, "SELECT id, status, error FROM steps WHERE run_id = ?", (branch_run,)
        )
        lines = await query(
            engine, "SELECT line FROM log_lines WHERE step_id = ?", (steps[0]["id"],)
        )
        assert run["status"] == "failed" and steps[0]["status"] == "failed", steps
        reason = "refused: secret PROD_TOKEN is only for stages deploying to prod; this stage deploys nowhere"
        assert reason in steps[0]["error"]
        assert [r["line"] for r in lines] == [f"[ahead] {reason} (its environments: in ahead.yml)"]
        with Store(ws.db_path) as store:
            main_run = Services(ws, store).trigger("web", Actor("alice"))
        run = await wait_run_done(engine, main_run)
        lines = await query(
            engine,
            "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.run_id = ? ORDER BY s.id, l.seq",
            (main_run,),
        )
    assert run["status"] == "succeeded", run
    text = "\n".join(r["line"] for r in lines)
    assert "test got [***]" in text  # main runs get a main-only secret
    assert (
        hashlib.sha256(PROD_VALUE.encode()).hexdigest() in text
    )  # the deploy to prod got the value


def test_engine_children_and_proc_environ_do_not_hold_the_source_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen"
    pipeline = (
        "stages:\n  - name: deploy\n    environment: prod\n    steps:\n"
        f"      - run: 'cat /proc/$PPID/environ > {seen}.engine; env > {seen}.step; "
        'printf %s "$PROD_TOKEN" | wc -c\'\n'
        "        secrets: [PROD_TOKEN]\n"
    )
    root = scoped_ws(tmp_path / "ws", {"web": pipeline})
    monkeypatch.setenv("PROD_TOKEN_SOURCE", PROD_VALUE)
    done = ahead(root, "trigger", "web", "--wait")  # a real engine process runs the step
    assert done.returncode == 0, (done.stdout, done.stderr)
    logs = ahead(root, "logs", "1").stdout
    assert str(len(PROD_VALUE)) in logs  # the step was given the secret itself
    engine_environ = Path(f"{seen}.engine").read_bytes()
    assert b"AHEAD_" not in engine_environ and b"PATH=" in engine_environ  # the engine's own block
    assert PROD_VALUE.encode() not in engine_environ
    assert b"PROD_TOKEN_SOURCE" not in Path(f"{seen}.step").read_bytes()
