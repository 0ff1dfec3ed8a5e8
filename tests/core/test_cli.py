"""The `ahead` command line, run as a real subprocess against real repos and a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.workspace import Workspace
from tests.conftest import commit, make_workspace

ROOT = Path(__file__).parents[2]


def ahead(
    ws_root: Path | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "core.cli"]
    if ws_root is not None:
        argv += ["--workspace", str(ws_root)]
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_trigger_wait_status_runs_show_logs(ws: Workspace) -> None:
    done = ahead(ws.root, "trigger", "app", "--wait")
    assert done.returncode == 0, done.stderr
    assert "queued run #1" in done.stdout and "run #1 ✓ succeeded" in done.stdout

    status = json.loads(ahead(ws.root, "status", "--json").stdout)
    repo = status["repos"][0]
    head = repo["head_commit"]
    assert repo["name"] == "app" and len(head) == 40
    assert repo["last_run"] == {"id": 1, "status": "succeeded", "commit": head, "branch": "main"}
    assert repo["environments"]["dev"]["deployed_commit"] == head
    assert repo["environments"]["dev"]["pending"] == 0
    prod = repo["environments"]["prod"]  # the pipeline has no prod stage: nothing is pending there
    assert (prod["deploys"], prod["deployed_commit"], prod["pending"]) == (False, None, 0)
    assert status["engine"] == {"state": "not running", "holder": None}

    runs = json.loads(ahead(ws.root, "runs", "--json").stdout)["runs"]
    assert [(r["id"], r["status"], r["trigger"]) for r in runs] == [(1, "succeeded", "manual")]
    shown = json.loads(ahead(ws.root, "show", "1", "--json").stdout)
    assert [(s["name"], s["status"]) for s in shown["stages"]] == [
        ("build", "succeeded"),
        ("deploy-dev", "succeeded"),
    ]
    assert shown["stages"][0]["steps"][0]["exit_code"] == 0
    logs = ahead(ws.root, "logs", "1").stdout.splitlines()
    assert f"building {head}" in logs and "deploying to dev" in logs
    text = ahead(ws.root, "status").stdout
    assert "app" in text and head[:7] in text
    assert text.splitlines()[-1].split()[-2:] == ["-", "-"]  # preprod, prod: not deployed by it


def test_exit_codes(ws: Workspace, tmp_path: Path) -> None:
    assert ahead(ws.root, "show", "99").returncode == 1
    assert "no run 99" in ahead(ws.root, "show", "99").stderr
    assert ahead(ws.root, "trigger", "nope").returncode == 1
    assert ahead(ws.root, "bogus").returncode == 2
    assert ahead(ws.root, "show", "not-a-number").returncode == 2
    assert ahead(ws.root).returncode == 2
    missing = ahead(tmp_path / "empty", "status")
    assert missing.returncode == 1 and "ahead init" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cancel_a_queued_run_and_retry_it(ws: Workspace) -> None:
    assert ahead(ws.root, "trigger", "app").returncode == 0
    done = ahead(ws.root, "cancel", "1")
    assert done.returncode == 0 and "cancelled" in done.stdout
    again = ahead(ws.root, "cancel", "1")
    assert again.returncode == 1 and "already cancelled" in again.stderr
    retry = ahead(ws.root, "retry", "1")
    assert retry.returncode == 0 and "queued run #2 (retry of #1)" in retry.stdout
    runs = json.loads(ahead(ws.root, "runs", "--json").stdout)["runs"]
    assert [(r["id"], r["status"], r["retry_of"]) for r in runs] == [
        (2, "queued", 1),
        (1, "cancelled", None),
    ]
    audit = json.loads(ahead(ws.root, "audit", "--json").stdout)["audit"]
    assert [a["action"] for a in reversed(audit)] == ["run.trigger", "run.cancel", "run.trigger"]
    assert ahead(ws.root, "audit", "verify").returncode == 0


def test_trigger_a_branch_and_a_commit(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    first = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    commit(repo, "second")
    subprocess.run(["git", "-C", str(repo), "branch", "topic"], check=True)
    assert ahead(ws.root, "trigger", "app", "--commit", first[:10], "--wait").returncode == 0
    assert ahead(ws.root, "trigger", "app", "--ref", "topic", "--wait").returncode == 0
    runs = json.loads(ahead(ws.root, "runs", "--json").stdout)["runs"]
    assert [(r["branch"], r["commit"] == first, r["on_main"]) for r in reversed(runs)] == [
        ("main", True, 1),
        ("topic", False, 0),
    ]
    status = json.loads(ahead(ws.root, "status", "--json").stdout)
    assert status["repos"][0]["environments"]["dev"]["deployed_commit"] == first
    assert status["repos"][0]["environments"]["dev"]["pending"] == 1
    bad = ahead(ws.root, "trigger", "app", "--ref", "--upload-pack=x")
    assert bad.returncode in (1, 2) and "Traceback" not in bad.stderr


def test_logs_follow_streams_until_the_run_ends(tmp_path: Path) -> None:
    pipeline = "stages:\n  - name: s\n    steps:\n      - run: for i in 1 2 3; do echo tick $i; sleep 0.3; done\n"
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    engine = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 10
        while (
            "engine: not running" in ahead(ws.root, "status").stdout and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert ahead(ws.root, "trigger", "app").returncode == 0
        follow = ahead(ws.root, "logs", "1", "--follow", timeout=30)
        assert follow.returncode == 0
        assert [line for line in follow.stdout.splitlines() if line.startswith("tick")] == [
            "tick 1",
            "tick 2",
            "tick 3",
        ]
        waited = ahead(ws.root, "trigger", "app", "--wait")
        assert "waiting for run #2 on engine" in waited.stdout and waited.returncode == 0
    finally:
        engine.terminate()
        engine.wait(10)


def test_init_and_check(tmp_path: Path) -> None:
    done = ahead(None, "init", str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    assert ahead(tmp_path / "new", "check").returncode == 0
    assert ahead(None, "init", str(tmp_path / "new")).returncode == 1
    ws = make_workspace(tmp_path / "ws", {"app": "stages:\n  - name: x\n    stepz: []\n"})
    check = ahead(ws.root, "check")
    assert check.returncode == 1
    assert ":.ahead/pipeline.yml:3: stages[0].stepz: unknown key" in check.stdout
