"""Repos holding links to /etc/passwd or `../..` never make the engine read or write outside the
checkout: the pipeline file, artifacts (collected and restored) and the checkout itself.

Real repos with symbolic links committed in git, a real engine, real SQLite.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core import safepath
from core.engine import Engine
from core.store.db import Store
from tests.conftest import commit, git, make_workspace
from tests.core.helpers import query, wait_for, wait_run_done
from tests.core.test_approvals import decide, make_ws, waiting_change

PASSWD_MARK = Path("/etc/passwd").read_text().splitlines()[0]


def state_text(db: Path) -> str:
    """Every text value in the store, for checking that nothing from outside leaked in."""
    with Store(db) as store:
        tables = [
            r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return "\n".join(
            str(v)
            for t in tables
            for row in store.query(f"SELECT * FROM {t}")
            for v in row.values()
        )


def commit_link(repo: Path, link: str, target: str, message: str = "add a link") -> str:
    path = repo / link
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return commit(repo, message)


async def run_of(engine: Engine, sha: str) -> dict[str, object]:
    rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
    return await wait_run_done(engine, rows[0]["id"])


async def test_pipeline_file_that_is_a_link_to_etc_passwd_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        (repo / ".ahead" / "pipeline.yml").unlink()
        run = await run_of(engine, commit_link(repo, ".ahead/pipeline.yml", "/etc/passwd"))
        assert run["status"] == "failed"
        assert "is a symbolic link" in str(run["error"]), run
    assert PASSWD_MARK not in state_text(ws.db_path)


@pytest.mark.parametrize("target", ["../..", "/etc", "../../../../../../etc"])
async def test_pipeline_directory_that_is_a_link_finds_no_pipeline(
    tmp_path: Path, target: str
) -> None:
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    # a pipeline.yml where the link points (outside the repo) must not be picked up
    (tmp_path / "ws" / "pipeline.yml").write_text("stages: [{name: evil, steps: [touch /tmp/x]}]\n")
    async with Engine(ws) as engine:
        git(repo, "rm", "-rq", ".ahead")
        run = await run_of(engine, commit_link(repo, ".ahead", target))
        assert run["status"] == "failed" and "no pipeline file" in str(run["error"]), run


ARTIFACT_PIPELINE = """\
stages:
  - name: build
    steps:
      - run: "{run}"
        artifact: {artifact}
"""


@pytest.mark.parametrize(
    ("links", "run", "artifact"),
    [
        ({"leak.txt": "/etc/passwd"}, "true", "leak.txt"),  # committed link to a file
        ({"dist": "/etc"}, "true", "dist/passwd"),  # committed link to a dir
        ({"up": "../" * 30}, "true", "up/etc/passwd"),  # committed link up and out
        ({}, "ln -s /etc/passwd made.txt", "made.txt"),  # link made by the step
        ({}, "mkfifo pipe", "pipe"),  # not a regular file
    ],
)
async def test_artifacts_that_lead_outside_the_checkout_are_refused(
    tmp_path: Path, links: dict[str, str], run: str, artifact: str
) -> None:
    ws = make_workspace(
        tmp_path / "ws", {"app": ARTIFACT_PIPELINE.format(run=run, artifact=artifact)}
    )
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        sha = commit(repo, "no links yet")
        for link, target in links.items():
            sha = commit_link(repo, link, target)
        run_row = await run_of(engine, sha)
        assert run_row["status"] == "failed"
        steps = await query(engine, "SELECT error FROM steps WHERE run_id = ?", (run_row["id"],))
        assert "is not a file inside the checkout" in str(steps[0]["error"]), steps
        assert (
            await query(engine, "SELECT * FROM artifacts WHERE run_id = ?", (run_row["id"],)) == []
        )
    assert PASSWD_MARK not in state_text(ws.db_path)
    kept = ws.state_dir / "artifacts"
    assert not kept.exists() or not any(
        PASSWD_MARK in p.read_text("utf-8", "replace") for p in kept.rglob("*") if p.is_file()
    )


async def test_artifact_link_to_a_file_inside_the_checkout_is_kept(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws",
        {
            "app": ARTIFACT_PIPELINE.format(
                run="echo plan > plan.txt && ln -s plan.txt latest", artifact="latest"
            )
        },
    )
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        run_row = await run_of(engine, commit(repo, "go"))
        assert run_row["status"] == "succeeded"
        kept = await query(engine, "SELECT path, size FROM artifacts")
        assert kept == [{"path": "latest", "size": 5}]


RESUME_PIPELINE = """\
stages:
  - name: build
    steps:
      - run: rm dist && mkdir dist && echo plan > dist/plan.txt
        artifact: dist/plan.txt
  - name: deploy-prod
    environment: prod
    steps:
      - run: cat dist/plan.txt
"""


async def test_restored_artifacts_never_go_through_a_committed_link(tmp_path: Path) -> None:
    """The build step replaces the committed link `dist -> outside` with a real directory; after a
    restart the resumed run's fresh checkout has the link again: restoring dist/plan.txt into it
    must not write through the link (it did, with shutil.copyfile, before the fix)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = make_ws(tmp_path / "ws", policy="approvals: 1", pipeline=RESUME_PIPELINE)
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        sha = commit_link(repo, "dist", str(outside), message="dist is a link")
        change = await waiting_change(engine, sha)
    async with Engine(ws) as engine:
        assert decide(ws, change["id"], "carol").ok
        run = await wait_run_done(engine, change["run_id"])
        assert run["status"] == "failed"  # the deploy step finds no plan: it was not restored
    assert list(outside.iterdir()) == []


def test_write_inside_refuses_links_on_the_way_and_replaces_a_link_at_the_end(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "checkout", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("keep me")
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "secret")
    with pytest.raises(safepath.OutsideCheckout):
        safepath.write_inside(root, "dir/new", b"x")
    with pytest.raises(safepath.OutsideCheckout):
        safepath.write_inside(root, "dir/sub/new", b"x")
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(safepath.OutsideCheckout):
            safepath.write_inside(root, bad, b"x")
    safepath.write_inside(root, "file", b"new")
    assert (outside / "secret").read_text() == "keep me" and not (root / "file").is_symlink()
    assert (root / "file").read_bytes() == b"new" and sorted(p.name for p in outside.iterdir()) == [
        "secret"
    ]


async def test_an_unexpected_error_in_a_stage_never_reads_as_success(tmp_path: Path) -> None:
    """An OSError while keeping an artifact (here: the artifacts directory cannot be created) used
    to end the run `succeeded`: the run's status was set to succeeded before its stages ran, and
    the error skipped the rest."""
    name = "a" * 250  # also: a long name is kept under a short one (it used to be ENAMETOOLONG)
    ws = make_workspace(
        tmp_path / "ws",
        {
            "app": ARTIFACT_PIPELINE.format(run=f"touch {name}", artifact=name)
            + "  - name: after\n    steps:\n      - run: echo after\n"
        },
    )
    repo = ws.repo_dir(ws.repo("app"))
    async with Engine(ws) as engine:
        ok = await run_of(engine, commit(repo, "go"))
        assert ok["status"] == "succeeded", ok
        shutil.rmtree(ws.state_dir / "artifacts")
        (ws.state_dir / "artifacts").write_text("not a directory")
        run = await run_of(engine, commit(repo, "again"))
        assert run["status"] == "failed" and "stopped: " in str(run["error"]), run["error"]
        stages = await query(
            engine, "SELECT status FROM stages WHERE run_id = ? ORDER BY idx", (run["id"],)
        )
        assert stages[1]["status"] == "skipped", stages  # the stage after never ran
