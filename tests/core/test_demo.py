"""The demo workspace: real repos, real runs of the real engine, real live directories."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from core import approvals, demo, drift, gitio, lease, workspace
from core.errors import InvalidRequest
from core.fields import NAME
from core.pipeline import PIPELINE_PATH
from core.pipeline import parse as parse_pipeline
from core.services import Actor, Services
from core.store.db import Store
from core.workspace import Workspace
from tests.cache import demo_copy, demo_source, wheel
from tests.conftest import commit, git, make_workspace
from tests.tui.scenes import NOW, freeze

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A copy of the demo for the read-only tests of this module: the one the snapshot tests
    show (reproducible, at scenes.NOW), built once per content (tests/cache.py). The demo built
    at the wall clock, runs in parallel, goes through the same checks in test_ahead_demo_end_to_end."""
    return demo_copy(tmp_path_factory.mktemp("demo") / "ws")


def status(ws: Workspace) -> dict[str, dict[str, Any]]:
    with Store(ws.db_path) as store:
        data = Services(ws, store).status()
    return {repo["name"]: repo for repo in data["repos"]}


def present(ws: Workspace) -> float:
    """The demo's present (`now` of demo.create): when it last read the repos' refs."""
    with Store(ws.db_path) as store:
        row = store.query_one("SELECT MAX(seen_at) AS at FROM refs")
    assert row is not None and row["at"] is not None
    return float(row["at"])


def ahead(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_workspace_and_pipelines_are_valid(demo_ws: Workspace) -> None:
    assert [r.name for r in demo_ws.repos] == ["machine-image", "infrastructure", "service"]
    assert demo_ws.environments == ("dev", "preprod", "prod")
    assert demo_ws.state_dir == demo_ws.root / ".ahead"
    assert demo_ws.settings.cancel_grace == 2.0
    prod = demo_ws.policies["prod"]
    assert list(demo_ws.policies) == ["prod"]
    assert (prod.approvals, prod.approvers, prod.forbid) == (
        2,
        ("role:approver",),
        ("authors", "committers", "triggerer"),
    )
    assert prod.expires == 72 * 3600 and prod.reject_needs_comment
    me = demo_ws.operator_for_os_user()
    assert me is not None and me.name == "alice" and "approver" in me.roles
    user = workspace.current_os_user()  # `--as bob` and `--as carol` work for whoever runs the demo
    assert [(op.name, op.roles, user in op.os_users) for op in demo_ws.operators] == [
        ("alice", ("operator", "approver"), True),
        ("bob", ("operator", "approver"), True),
        ("carol", ("approver",), True),
    ]
    assert demo_ws.operator_by_email("dave@contractor.example.net") is None
    for repo in demo_ws.repos:
        path = demo_ws.repo_dir(repo)
        assert repo.path == demo_ws.root / "repos" / repo.name
        _, common = gitio.git_dirs(path)
        head = gitio.read_branches(common)["main"]
        text = gitio.read_file(path, head, PIPELINE_PATH)
        assert text is not None
        pipeline = parse_pipeline(text, repo.name, demo_ws.environments)
        assert pipeline.env["LIVE_ROOT"] == "live"

    done = ahead("--workspace", str(demo_ws.root), "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tag-and-share→dev" in done.stdout and "apply-prod→prod" in done.stdout


def test_history_has_authors_dates_and_a_branch(demo_ws: Workspace) -> None:
    infra = demo_ws.root / "repos" / "infrastructure"
    log = git(infra, "log", "--all", "--format=%ae %ce %ct %s").splitlines()
    authors = {line.split()[0] for line in log}
    assert {"alice@example.com", "bob@example.com", "carol@example.com"} <= authors
    dave = [line for line in log if line.startswith("dave@")]
    assert (
        dave and dave[0].split()[1] == "carol@example.com"
    )  # an outside change, committed by carol
    times = [int(line.split()[2]) for line in log]
    assert max(times) <= time.time() and min(times) < time.time() - 5 * 24 * 3600
    assert "feature/bigger-db" in git(infra, "branch", "--list")
    for name in ("machine-image", "service"):
        count = int(git(demo_ws.root / "repos" / name, "rev-list", "--count", "main"))
        assert 3 <= count <= 6


def test_environments_are_at_different_commits(demo_ws: Workspace) -> None:
    repos = status(demo_ws)
    infra = repos["infrastructure"]
    envs = infra["environments"]
    assert isinstance(envs, dict)
    assert envs["dev"]["deployed"] == infra["head"]
    assert (
        len({envs["dev"]["deployed"], envs["preprod"]["deployed"], envs["prod"]["deployed"]}) == 3
    )
    assert 0 < envs["preprod"]["pending"] < envs["prod"]["pending"]
    assert envs["prod"]["lag_seconds"] > 24 * 3600

    service = repos["service"]["environments"]
    assert isinstance(service, dict)
    assert service["preprod"]["deployed"] == repos["service"]["head"]
    assert service["prod"]["pending"] == 4
    image = repos["machine-image"]["environments"]
    assert isinstance(image, dict)
    assert image["dev"]["deployed"] == repos["machine-image"]["head"]

    with Store(demo_ws.db_path) as store:
        runs = store.query("SELECT repo, branch, status, trigger FROM runs ORDER BY id")
        assert store.verify_audit()[0]
    assert [r["status"] for r in runs].count("succeeded") == 7
    assert {r["trigger"] for r in runs} == {"commit"}
    assert not [r for r in runs if r["status"] in ("queued", "running")]
    assert [r["repo"] for r in runs if r["status"] == "waiting"] == ["service"]
    assert ("infrastructure", "feature/bigger-db", "succeeded") in {
        (r["repo"], r["branch"], r["status"]) for r in runs
    }

    text = ahead("--workspace", str(demo_ws.root), "status").stdout
    assert "REPO" in text and "PROD" in text and "+4" in text and "waiting" in text


def test_live_directories_hold_what_was_deployed(demo_ws: Workspace) -> None:
    repos = status(demo_ws)
    live = demo_ws.root / "live"
    image = json.loads((live / "dev" / "machine-image" / "image.json").read_text())
    assert image["commit"] == repos["machine-image"]["head"] and image["image_id"].startswith(
        "ami-"
    )
    assert (live / "dev" / "machine-image" / "image.tar.gz").stat().st_size > 0
    for env in ("dev", "preprod", "prod"):
        state = json.loads((live / env / "infrastructure" / "state.json").read_text())
        envs = repos["infrastructure"]["environments"]
        assert isinstance(envs, dict)
        assert state["commit"] == envs[env]["deployed"]
    assert (
        "db.main"
        in json.loads((live / "prod" / "infrastructure" / "state.json").read_text())["resources"]
    )
    assert not (live / "prod" / "infrastructure" / "state.lock").exists()
    assert "version=1.2.0" in (live / "preprod" / "service" / "RELEASE").read_text()
    assert "version=1.1.0" in (live / "prod" / "service" / "RELEASE").read_text()
    assert (live / "prod" / "service" / "current" / "app" / "orders.py").is_file()


def test_the_demo_opens_with_one_hand_edited_file_drifted_in_prod(demo_ws: Workspace) -> None:
    with Store(demo_ws.db_path) as store:
        found = {(r["repo"], r["environment"], r["target"]): r for r in drift.listing(store)}
        [detail] = drift.detail(store, "service", "prod", "app")
    configured = {k: r["state"] for k, r in found.items() if r["kind"] != "revision"}
    assert configured == {
        ("service", "preprod", "app"): "in_sync",
        ("service", "prod", "app"): "drifted",
        ("infrastructure", "dev", "resources"): "in_sync",
        ("infrastructure", "preprod", "resources"): "in_sync",
        ("infrastructure", "prod", "resources"): "in_sync",
    }
    assert (
        detail["detail"]["changed"] == ["orders.py"]
        and '+PRICES = {"apple"' in detail["detail"]["diff"]
    )
    compile((demo_ws.root / demo.HAND_EDIT[0]).read_text(), "orders.py", "exec")  # still runs
    assert found[("service", "prod", "revision")]["state"] == "drifted"  # 1.2.0 waits at the gate


def test_failed_runs_say_why(demo_ws: Workspace) -> None:
    with Store(demo_ws.db_path) as store:
        svc = Services(demo_ws, store)
        failed = svc.runs(status="failed")
        logs = {r["id"]: "\n".join(line["line"] for line in svc.logs(r["id"])) for r in failed}
    assert len(failed) == 3
    text = "\n".join(logs.values())
    assert "Error acquiring the state lock" in text
    assert "db.main has prevent_destroy for preprod" in text
    assert "no section '## 1.2.0'" in text


def test_prod_changes_went_through_the_gate(demo_ws: Workspace) -> None:
    """Whoever wrote a change, the other two approved it; the newest waits for its second."""
    with Store(demo_ws.db_path) as store:
        changes = {c["id"]: c for c in approvals.changes(store)}
        details = {i: approvals.change_detail(store, demo_ws, i) for i in changes}
        audit = store.query(
            "SELECT actor, action, subject FROM audit WHERE action LIKE 'change.%' "
            "OR action LIKE 'gate.%'"
        )
        assert store.verify_audit()[0]
    assert {c["environment"] for c in changes.values()} == {"prod"}
    passed = [d for d in details.values() if d["status"] == "passed"]
    assert len(passed) == 5 and sorted(d["repo"] for d in passed).count("service") == 2
    for change in passed:
        authors = {c["email"].split("@")[0] for c in change["commits"]}
        approvers = {d["operator"] for d in change["decisions"]}
        assert len(authors) == 1 and len(approvers) == 2 and not authors & approvers, change["id"]
        assert {d["verdict"] for d in change["decisions"]} == {"approve"}
        assert ("engine", "gate.passed", f"change/{change['id']}") in {
            (a["actor"], a["action"], a["subject"]) for a in audit
        }
    first = min((d for d in passed if d["repo"] == "service"), key=lambda d: d["id"])
    assert first["base_sha"] is None and [c["author"] for c in first["commits"]] == ["Alice Archer"]
    assert [d["operator"] for d in first["decisions"]] == ["bob", "carol"]

    [waiting] = [d for d in details.values() if d["status"] == "open"]
    repos = status(demo_ws)
    service = repos["service"]["environments"]
    assert isinstance(service, dict)
    assert (waiting["repo"], waiting["head_sha"]) == ("service", repos["service"]["head"])
    assert waiting["base_sha"] == service["prod"]["deployed"]
    assert waiting["run"]["status"] == "waiting"
    assert waiting["run"]["error"] == "waiting for approval: 1 of 2 approvals"
    assert {c["email"] for c in waiting["commits"]} == {
        "alice@example.com",
        "dave@contractor.example.net",
    }
    assert [(d["operator"], d["verdict"]) for d in waiting["decisions"]] == [("bob", "approve")]
    check = waiting["checklist"]
    assert (check["approved_by"], check["eligible"], check["required"]) == (
        ["bob"],
        ["bob", "carol"],
        2,
    )
    assert check["barred"]["alice"].startswith("author of ")
    assert waiting["expires_at"] > present(demo_ws) + 48 * 3600  # still open tomorrow
    assert ("bob", "change.approve", f"change/{waiting['id']}") in {
        (a["actor"], a["action"], a["subject"]) for a in audit
    }


def test_create_refuses_an_existing_or_non_empty_dir(demo_ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="already exists"):
        demo.create(demo_ws.root)
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(InvalidRequest, match="not empty"):
        demo.create(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_same_now_makes_the_same_store(tmp_path: Path) -> None:
    # A build now against the cached one (tests/cache.py: built earlier in this session, or in
    # an earlier one from the same sources) at the same `now`, in the past, so nothing in the
    # history may come from the wall clock.
    now = NOW
    assert now < time.time() - 86400
    started = time.monotonic()
    demo.create(tmp_path / "a", now=now, reproducible=True)
    freeze(workspace.read(tmp_path / "a" / "ahead.yml"), now)
    took = time.monotonic() - started
    assert took < 30, f"create(reproducible=True) took {took:.1f}s"
    demo_copy(tmp_path / "b")
    for repo in ("machine-image", "infrastructure", "service"):
        shas = {git(tmp_path / name / "repos" / repo, "rev-parse", "main") for name in ("a", "b")}
        assert len(shas) == 1, repo
    branch = {
        git(tmp_path / name / "repos" / "infrastructure", "rev-parse", "feature/bigger-db")
        for name in ("a", "b")
    }
    assert len(branch) == 1
    # Dates are the story's offsets from `now`: service's last commit, 2h before.
    dates = git(tmp_path / "a" / "repos" / "service", "log", "-1", "--format=%at %ct %s", "main")
    assert dates.split(maxsplit=2) == [str(int(now - 2 * 3600))] * 2 + ["Release notes for 1.2.0"]

    # Every table but the audit log and the event feed (both keep real time; sqlite_sequence
    # counts events), down to the change requests and their decisions; paths into each
    # workspace read the same. Decisions' MACs differ (each workspace has its own secret key):
    # left out here, and each must verify with its own workspace's key.
    def tables(name: str) -> dict[str, list[str]]:
        root = str(tmp_path / name)
        with Store(tmp_path / name / ".ahead" / "state.db") as store:
            names = [
                r["name"]
                for r in store.query(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT IN ('audit', 'events', 'sqlite_sequence')"
                )
            ]
            ws = workspace.read(tmp_path / name / "ahead.yml")
            assert approvals.unauthenticated(store, ws) == []
            return {
                table: sorted(
                    json.dumps({k: v for k, v in row.items() if k != "mac"}).replace(root, "~/demo")
                    for row in store.query(f"SELECT * FROM {table}")
                )
                for table in names
            }

    a, b = tables("a"), tables("b")
    assert len(a["change_requests"]) == 6 and len(a["decisions"]) == 11
    for table in a:
        assert a[table] == b[table], table
    with Store(tmp_path / "a" / ".ahead" / "state.db") as store:
        times = store.query_one(
            "SELECT MAX(created_at) AS created, MAX(decided_at) AS decided FROM change_requests"
        )
        assert times is not None and times["created"] < now and times["decided"] < now
        last = store.query_one("SELECT MAX(created_at) AS at FROM decisions")
        assert last is not None and last["at"] < now
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # freeze put it back
            store.conn.execute("UPDATE decisions SET comment = 'edited'")


def test_demo_files_ship_in_the_wheel() -> None:
    shipped = set(
        zipfile.ZipFile(wheel()).namelist()
    )  # pip wheel, once per content (tests/cache.py)
    source = ROOT / "core" / "demo_repos"
    files = {
        f"core/demo_repos/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "core/demo_repos/service/.ahead/pipeline.yml" in files
    assert files - shipped == set()


def test_init_workspace_writes_a_valid_starter(tmp_path: Path) -> None:
    empty = tmp_path / "new" / "ws"
    file = demo.init_workspace(empty)
    ws = workspace.read(file)
    assert ws.repos == () and ws.environments == ("dev", "preprod", "prod")
    assert "# - name: web-api" in file.read_text()
    with pytest.raises(InvalidRequest, match="already exists"):
        demo.init_workspace(empty)

    here = tmp_path / "team"
    (here / "api").mkdir(parents=True)
    git(here / "api", "init", "-q", "-b", "trunk")
    commit(here / "api", "first")
    (here / "true").mkdir()  # a name YAML would read as a boolean unless quoted
    git(here / "true", "init", "-q", "-b", "main")
    ws = workspace.read(demo.init_workspace(here))
    assert [(r.name, r.branch) for r in ws.repos] == [("api", "trunk"), ("true", "main")]
    assert ws.repos[0].path == here / "api"
    if NAME.match(workspace.current_os_user()):
        assert ws.operator_for_os_user() is not None


def test_default_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert demo.default_dir() == tmp_path / "data" / "change-ahead" / "demo"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.default_dir() == tmp_path / ".local" / "share" / "change-ahead" / "demo"


def test_settle_runs_what_is_queued(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with Store(ws.db_path) as store:
        run_id = Services(ws, store).trigger("app", Actor("alice"))
    lines: list[str] = []
    demo.settle(ws, say=lines.append)
    assert lines[-1] == f"run #{run_id} app ✓ succeeded", lines
    with Store(ws.db_path) as store:
        assert store.query_one("SELECT status FROM runs WHERE id = ?", (run_id,)) == {
            "status": "succeeded"
        }
        assert lease.holder(store, 15.0) is None
    lines.clear()
    demo.settle(ws, say=lines.append)
    assert lines == []


def test_settle_leaves_the_work_to_a_running_engine(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with Store(ws.db_path) as store:
        run_id = Services(ws, store).trigger("app", Actor("alice"))
        lease.acquire(store, "another engine", "token", 15.0)  # this live process holds it
    lines: list[str] = []
    demo.settle(ws, say=lines.append)
    assert lines == []
    with Store(ws.db_path) as store:
        assert store.query_one("SELECT status FROM runs WHERE id = ?", (run_id,)) == {
            "status": "queued"
        }


def test_ahead_demo_end_to_end(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    exe = Path(sys.executable).with_name("ahead")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]

    def run_demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "demo", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    started = time.monotonic()
    done = run_demo()
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    lines = done.stdout.splitlines()
    assert lines[0].startswith("creating the demo workspace")
    header = next(line for line in lines if line.startswith("REPO"))
    assert header.split() == ["REPO", "MAIN", "LAST", "RUN", "DEV", "PREPROD", "PROD"]
    assert any(line.startswith("infrastructure") for line in lines)
    # The story's open end: 1.2.0 waits at prod's gate; bob approved, carol may approve too.
    hint = (
        f"run #10 service waits for approval: change #6 (1 of 2) — approve with: "
        f"ahead --workspace {target} --as carol approve 6"
    )
    assert hint in lines, done.stdout
    assert "#10 ⏸ waiting" in next(line for line in lines if line.startswith("service"))
    built = workspace.read(target / "ahead.yml")  # built at the wall clock, runs in parallel
    assert abs(present(built) - time.time()) < 120
    for check in READ_ONLY:  # what the module's tests check on the reproducible demo
        check(built)

    again = time.monotonic()
    done = run_demo()  # nothing to run: a waiting run does not keep `ahead demo` waiting
    assert done.returncode == 0 and hint in done.stdout.splitlines(), done.stdout + done.stderr
    assert time.monotonic() - again < 15

    refused = ahead("--workspace", str(target), "--as", "alice", "approve", "6")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "alice cannot approve: author of" in refused.stdout + refused.stderr
    approved = ahead("--workspace", str(target), "--as", "carol", "approve", "6")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved change 6 (2 of 2)" in approved.stdout

    done = run_demo()  # an engine again: the gate passes and 1.2.0 ships
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run #10 service ✓ succeeded" in done.stdout
    assert "version=1.2.0" in (target / "live" / "prod" / "service" / "RELEASE").read_text()
    with Store(target / ".ahead" / "state.db") as store:
        assert [c["status"] for c in approvals.changes(store, limit=1)] == ["passed"]


def test_each_operator_has_a_private_key_for_ahead_serve(demo_ws: Workspace) -> None:
    from core.serve.keys import parse_public_key

    for operator in demo_ws.operators:
        private = demo_ws.state_dir / "keys" / operator.name
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        public = private.with_name(operator.name + ".pub").read_text().strip()
        assert operator.keys == (public,)
        assert parse_public_key(public)[0] == "ssh-ed25519"


READ_ONLY = [
    test_workspace_and_pipelines_are_valid,
    test_history_has_authors_dates_and_a_branch,
    test_environments_are_at_different_commits,
    test_live_directories_hold_what_was_deployed,
    test_the_demo_opens_with_one_hand_edited_file_drifted_in_prod,
    test_failed_runs_say_why,
    test_prod_changes_went_through_the_gate,
    test_each_operator_has_a_private_key_for_ahead_serve,
]


def test_a_copy_of_the_cached_demo_points_only_into_itself(tmp_path: Path) -> None:
    """tests/cache.py copies one build to many tests: nothing in a copy may lead back to the
    build (a test would then read or change the cache, or another test's copy)."""
    source = str(demo_source())
    ws = demo_copy(tmp_path / "ws")
    for path in ws.root.rglob("*"):
        if path.is_file() and path.name != "state.db":
            assert source.encode() not in path.read_bytes(), path
    with Store(ws.db_path) as store:
        tables = [
            r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for row in store.query(f"SELECT * FROM {table}"):
                assert source not in json.dumps(row), (table, row)
        stored = [Path(r["stored_path"]) for r in store.query("SELECT stored_path FROM artifacts")]
    assert stored and all(p.is_relative_to(ws.root) and p.is_file() for p in stored)
    assert source.encode() not in ws.db_path.read_bytes()  # not even in free pages
    # The drift targets' private git dirs borrow the copy's objects: a check still finds the edit.
    done = ahead("--workspace", str(ws.root), "drift", "check", "service", "prod")
    assert done.returncode == 1 and "drifted" in done.stdout, done.stdout + done.stderr


def test_the_cache_builds_once_for_parallel_workers_and_redoes_a_broken_build(
    tmp_path: Path,
) -> None:
    """tests/cache.py under pytest-xdist: processes asking at once wait for one build."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom tests.cache import cached\n"
        "def build(place):\n"
        "    with open(sys.argv[1] + '/builds', 'a') as log: log.write('built\\n')\n"
        "    time.sleep(0.3)\n"
        "    (place / 'made').write_text('yes')\n"
        "print(cached('thing', 'k1', build, Path(sys.argv[1])))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(3)
    ]
    places = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert (
        places == {str(tmp_path / "thing-k1")}
        and (tmp_path / "thing-k1" / "made").read_text() == "yes"
    )
    assert (tmp_path / "builds").read_text() == "built\n"
    # A build that never finished (no completion mark) is thrown away and made again.
    (tmp_path / "thing-k1" / ".complete").unlink()
    (tmp_path / "thing-k1" / "half-made").touch()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    ]
    assert procs[0].communicate(timeout=60)[0].strip() == str(tmp_path / "thing-k1")
    assert (tmp_path / "builds").read_text() == "built\nbuilt\n"
    assert sorted(p.name for p in (tmp_path / "thing-k1").iterdir()) == [".complete", "made"]
