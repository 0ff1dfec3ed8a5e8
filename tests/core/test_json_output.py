"""`--json` output: the one naming scheme the README documents ("JSON output"), pinned by the
keys of each command's output against a real workspace, store and run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core import cli
from tests.conftest import commit, make_workspace

RUN = {
    "id",
    "repo",
    "branch",
    "ref",
    "commit",
    "on_main",
    "status",
    "trigger",
    "actor",
    "author",
    "author_email",
    "subject",
    "committed_at",
    "created_at",
    "started_at",
    "finished_at",
    "retry_of",
    "pipeline_digest",
    "error",
    "cancel_requested",
    "engine",
    "environment",
}
#: command -> {path: keys}; a path walks dicts by key and lists by their first item ("[]").
SHAPES: dict[str, dict[str, set[str]]] = {
    "status": {
        "": {"workspace", "environments", "repos", "engine"},
        "engine": {"state", "holder"},
        "repos.[]": {"name", "branch", "head_commit", "last_run", "error", "environments"},
        "repos.[].last_run": {"id", "status", "commit", "branch"},
        "repos.[].environments.dev": {
            "deploys",
            "deployed_commit",
            "deployed_at",
            "pending",
            "lag_seconds",
            "oldest_pending_at",
            "lock",
        },
    },
    "runs": {"": {"runs"}, "runs.[]": RUN},
    "show 1": {
        "": RUN | {"stages", "artifacts"},
        "stages.[]": {
            "id",
            "run_id",
            "idx",
            "name",
            "environment",
            "status",
            "started_at",
            "finished_at",
            "error",
            "steps",
        },
    },
    "pending app prod": {
        "": {"repo", "environment", "pending"},
        "pending.[]": {"commit", "author", "email", "committer_email", "committed_at", "subject"},
    },
    "audit": {"": {"audit"}, "audit.[]": {"id", "at", "actor", "action", "subject", "detail"}},
    "audit head": {"": {"seq", "hash"}},
    "changes --all": {"": {"changes"}},
    "locks": {"": {"locks"}},
}
#: Names the scheme replaced: none may appear anywhere in --json output (outside audit details).
OLD_NAMES = {
    "sha",
    "commit_sha",
    "head_sha",
    "base_sha",
    "head",
    "deployed",
    "ts",
    "time",
    "since",
    "until",
}


def walk(data: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        data = data[0] if part == "[]" else data[part]
    return data


def names(data: Any) -> set[str]:
    """Every key in `data`, skipping audit details (what was audited, under its own names)."""
    if isinstance(data, dict):
        return set(data) | {n for k, v in data.items() if k != "detail" for n in names(v)}
    if isinstance(data, list):
        return {n for v in data for n in names(v)}
    return set()


def strings(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in strings(v)]
    return [data] if isinstance(data, str) else []


def test_json_output_keys_follow_the_documented_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = make_workspace(tmp_path / "ws")
    base = ["--workspace", str(ws.root)]
    assert cli.main([*base, "trigger", "app", "--wait"]) == cli.OK
    commit(ws.repo_dir(ws.repo("app")), "pending for prod")
    capsys.readouterr()
    for command, shapes in SHAPES.items():
        assert cli.main([*base, *command.split(), "--json"]) == cli.OK, command
        data = json.loads(capsys.readouterr().out)
        for path, keys in shapes.items():
            assert set(walk(data, path)) == keys, (command, path)
        assert not names(data) & OLD_NAMES, (command, names(data) & OLD_NAMES)
        for text in strings(data):  # no JSON inside a string
            assert not (text.startswith(("{", "[")) and text.endswith(("}", "]"))), (command, text)
    assert cli.main([*base, "logs", "1", "--json"]) == cli.OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(set(line) == {"step", "seq", "at", "line"} for line in lines)
