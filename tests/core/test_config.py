"""ahead.yml and pipeline.yml: valid files parse; every mistake is named by file, line, field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import pipeline, workspace
from core.errors import ConfigError, WorkspaceNotFound


def parse_ws(text: str, tmp_path: Path) -> workspace.Workspace:
    return workspace.parse(text, tmp_path / "ahead.yml")


def ws_error(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_ws(text, tmp_path)
    return info.value


def test_minimal_workspace_is_valid(tmp_path: Path) -> None:
    ws = parse_ws("repos:\n  - name: app\n    path: ./app\nenvironments: [dev, prod]\n", tmp_path)
    assert ws.environments == ("dev", "prod")
    assert ws.repos[0].path == (tmp_path / "app").resolve()
    assert ws.repos[0].branch == "main"
    assert ws.state_dir == tmp_path / ".ahead"
    assert [r.name for r in ws.runners] == ["local"]


def test_full_workspace_as_in_the_design(tmp_path: Path) -> None:
    text = """\
repos:
  - name: web-api
    path: ../web-api
  - name: infra
    url: https://git.example.com/infra.git
    branch: trunk
    fetch_interval: 5m
environments: [dev, preprod, prod]
policies:
  prod:
    approvals: 2
operators:
  - name: alice
    roles: [operator, approver]
    keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop"]
    emails: [Alice@Example.com]
    os_users: [alice]
  - name: bob
    roles: [approver]
runners:
  - name: local
settings:
  state_dir: state
  max_parallel_runs: 2
  step_timeout: 1h30m
"""
    ws = parse_ws(text, tmp_path)
    assert (
        ws.repos[1].url == "https://git.example.com/infra.git" and ws.repos[1].fetch_interval == 300
    )
    assert ws.repo_dir(ws.repos[1]) == tmp_path / "state" / "mirrors" / "infra.git"
    assert ws.operators[0].emails == ("alice@example.com",)
    assert ws.settings.step_timeout == 5400 and ws.settings.max_parallel_runs == 2


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("repos: []\nenviroments: [dev]\n", 2, "enviroments", 'did you mean "environments"?'),
        ("environments: [dev]\n", 1, "", 'missing required key "repos"'),
        (
            "repos:\n  - name: a\n    pth: x\nenvironments: [dev]\n",
            3,
            "repos[0].pth",
            'did you mean "path"?',
        ),
        (
            "repos:\n  - name: a\nenvironments: [dev]\n",
            2,
            "repos[0]",
            "needs exactly one of path or url",
        ),
        (
            "repos:\n  - name: a\n    path: x\n    url: y\nenvironments: [dev]\n",
            2,
            "repos[0]",
            "exactly one",
        ),
        ("repos: {}\nenvironments: [dev]\n", 1, "repos", "must be a list"),
        ("repos: []\nenvironments: [dev, dev]\n", 2, "environments[1]", "listed twice"),
        ("repos: []\nenvironments: []\n", 2, "environments", "at least one"),
        (
            "repos: []\nenvironments: [dev]\nsettings:\n  step_timeout: soon\n",
            4,
            "settings.step_timeout",
            "not a duration",
        ),
        (
            "repos: []\nenvironments: [dev]\nsettings:\n  max_parallel_runs: 0\n",
            4,
            "settings.max_parallel_runs",
            "at least 1",
        ),
        (
            "repos: []\nenvironments: [dev]\noperators:\n  - name: a\n    roles: [god]\n",
            5,
            "operators[0].roles[0]",
            "unknown role",
        ),
        (
            "repos: []\nenvironments: [dev]\npolicies:\n  prd: {}\n",
            4,
            "policies.prd",
            "no environment named",
        ),
        (
            "repos:\n  - name: a\n    path: x\n  - name: a\n    path: y\nenvironments: [dev]\n",
            4,
            "repos[1].name",
            "used twice",
        ),
        (
            "repos:\n  - name: a\n    url: --upload-pack=x\nenvironments: [dev]\n",
            3,
            "repos[0].url",
            "not an acceptable",
        ),
        ("repos: []\nrepos: []\nenvironments: [dev]\n", 2, "repos", "duplicate key"),
        ("repos: [\nenvironments: [dev]\n", 3, "", "expected ',' or ']'"),
        ("repos: &a []\nenvironments: *a\n", 1, "", "anchors and aliases"),
        ("- just\n- a list\n", 1, "", "must be a mapping"),
    ],
)
def test_workspace_errors_name_line_field_and_fix(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    error = ws_error(text, tmp_path)
    assert error.line == line, error
    assert error.field == field, error
    assert words in str(error)
    assert str(error).startswith(f"{tmp_path / 'ahead.yml'}:{line}: ")


def test_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        bomb += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    assert "anchors and aliases" in str(ws_error(bomb, tmp_path))


def test_huge_file_and_long_line_are_refused(tmp_path: Path) -> None:
    assert "larger than" in str(ws_error("#" * (2 * 1024 * 1024), tmp_path))
    assert "longer than" in str(ws_error("repos: []\nx: " + "a" * 10_000 + "\n", tmp_path))


def test_find_prefers_option_then_env_then_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("one", "two", "three/deep/er"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "one" / "ahead.yml").write_text("repos: []\nenvironments: [dev]\n")
    (tmp_path / "two" / "ahead.yml").write_text("repos: []\nenvironments: [dev]\n")
    (tmp_path / "three" / "ahead.yml").write_text("repos: []\nenvironments: [dev]\n")
    monkeypatch.setenv("AHEAD_WORKSPACE", str(tmp_path / "two"))
    assert workspace.find(tmp_path / "one") == tmp_path / "one" / "ahead.yml"
    assert workspace.find(None) == tmp_path / "two" / "ahead.yml"
    monkeypatch.delenv("AHEAD_WORKSPACE")
    assert (
        workspace.find(None, cwd=tmp_path / "three" / "deep" / "er")
        == tmp_path / "three" / "ahead.yml"
    )
    with pytest.raises(WorkspaceNotFound, match="ahead init"):
        workspace.find(tmp_path / "nowhere")


def test_cli_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "ahead.yml").write_text("repos: []\nenvironments: [dev]\nsetings: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f'ahead: {tmp_path / "ahead.yml"}:3: setings: unknown key (did you mean "settings"?)'
    )


# -- pipelines --------------------------------------------------------------------------------------

ENVS = ("dev", "preprod", "prod")


def pipe_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        pipeline.parse(text, "app@abc1234:.ahead/pipeline.yml", ENVS, runners=("local", "far"))
    return info.value


def test_pipeline_stage_selection() -> None:
    text = """\
on:
  main: all
  branches: [validate, plan]
stages:
  - name: validate
    steps: [terraform validate]
  - name: plan
    steps:
      - run: [terraform, plan, -out=plan.bin]
        artifact: plan.bin
        timeout: 10m
  - name: apply-preprod
    environment: preprod
    env: {TF_IN_AUTOMATION: "1"}
    steps: [terraform apply plan.bin]
  - name: apply-prod
    environment: prod
    steps: [terraform apply plan.bin]
"""
    p = pipeline.parse(text, "x", ENVS)
    assert [s.name for s in p.selected(True)] == ["validate", "plan", "apply-preprod", "apply-prod"]
    assert [s.name for s in p.selected(False)] == ["validate", "plan"]
    plan = p.stages[1].steps[0]
    assert plan.argv == ("terraform", "plan", "-out=plan.bin") and plan.timeout == 600
    assert plan.artifacts == ("plan.bin",)
    assert p.stages[0].steps[0].argv == ("sh", "-c", "terraform validate")
    assert p.stages[2].env == {"TF_IN_AUTOMATION": "1"}


def test_pipeline_defaults_without_on() -> None:
    p = pipeline.parse(
        "stages:\n  - {name: a, steps: [x]}\n  - {name: b, environment: dev, steps: [y]}\n",
        "x",
        ENVS,
    )
    assert [s.name for s in p.selected(True)] == ["a", "b"]
    assert [s.name for s in p.selected(False)] == ["a"]


def test_branches_all_never_includes_deploying_stages() -> None:
    text = "on: {branches: all}\nstages:\n  - {name: a, steps: [x]}\n  - {name: b, environment: dev, steps: [y]}\n"
    assert [s.name for s in pipeline.parse(text, "x", ENVS).selected(False)] == ["a"]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("stages:\n  - name: a\n    step: [x]\n", 3, "stages[0].step", 'did you mean "steps"?'),
        ("stages: []\n", 1, "stages", "at least one stage"),
        ("stages:\n  - name: a\n    steps: []\n", 3, "stages[0].steps", "at least one step"),
        (
            "stages:\n  - name: a\n    environment: staging\n    steps: [x]\n",
            3,
            "stages[0].environment",
            "use one of: dev, preprod, prod",
        ),
        (
            "on:\n  branches: [deploy]\nstages:\n  - name: deploy\n    environment: prod\n    steps: [x]\n",
            2,
            "on.branches[0]",
            "branches never run a stage that deploys",
        ),
        (
            "on:\n  main: [nope]\nstages:\n  - {name: a, steps: [x]}\n",
            2,
            "on.main[0]",
            "no stage named 'nope'",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - run: []\n",
            4,
            "stages[0].steps[0].run",
            "empty",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - name: x\n",
            4,
            "stages[0].steps[0]",
            'missing required key "run"',
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - run: x\n        timeout: -5\n",
            5,
            "stages[0].steps[0].timeout",
            "longer than zero",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - run: x\n        env: {AHEAD_COMMIT: x}\n",
            5,
            "stages[0].steps[0].env.AHEAD_COMMIT",
            "set by the engine",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - run: x\n        artifact: ../../etc/passwd\n",
            5,
            "stages[0].steps[0].artifact[0]",
            "outside the checkout",
        ),
        (
            "stages:\n  - {name: a, steps: [x]}\n  - {name: a, steps: [y]}\n",
            3,
            "stages[1].name",
            "used twice",
        ),
        ("stages:\n  - name: a b\n    steps: [x]\n", 2, "stages[0].name", "not a valid stage name"),
        (
            "stages:\n  - name: a\n    runner: far-away\n    steps: [x]\n",
            3,
            "stages[0].runner",
            "runners: local, far",
        ),
    ],
)
def test_pipeline_errors_name_line_field_and_fix(
    text: str, line: int, field: str, words: str
) -> None:
    error = pipe_error(text)
    assert (error.line, error.field) == (line, field), error
    assert words in str(error)
    assert str(error).startswith(f"app@abc1234:.ahead/pipeline.yml:{line}: {field}")
