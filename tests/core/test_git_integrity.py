"""Git integrity, attacked: replace refs and grafts, spoofed `git log` output, oversized commit
metadata and author identities that try to slip past the approval rules.

Real git repositories, a real engine, real SQLite, real step processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import gitio
from core.engine import Engine
from core.errors import GitError
from core.workspace import Workspace
from tests.conftest import commit, git, make_repo
from tests.core.helpers import query, wait_for, wait_run_done
from tests.core.test_approvals import decide, make_ws, waiting_change


def service_ws(root: Path, policy: str = "approvals: 2") -> Workspace:
    """test_approvals' workspace, its first commit by dave (not an approver) instead of alice."""
    ws = make_ws(root, policy)
    dave = {
        "GIT_AUTHOR_NAME": "Dave",
        "GIT_AUTHOR_EMAIL": "dave@example.com",
        "GIT_COMMITTER_NAME": "Dave",
        "GIT_COMMITTER_EMAIL": "dave@example.com",
    }
    git(
        ws.repo_dir(ws.repo("service")),
        "commit",
        "-q",
        "--amend",
        "--reset-author",
        "--no-edit",
        env=dave,
    )
    return ws


def evil_twin(repo: Path, sha: str, files: dict[str, str]) -> str:
    """A commit with `sha`'s parent, author and message but other content (never on a branch)."""
    scratch = repo.parent / f"twin-{sha[:7]}"
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), sha)
    for rel, text in files.items():
        (scratch / rel).write_text(text)
    git(scratch, "add", "-A")
    tree = git(scratch, "write-tree")
    twin = git(scratch, "commit-tree", tree, "-p", f"{sha}^", "-m", "release")
    git(repo, "worktree", "remove", "--force", str(scratch))
    return twin


# -- replace refs and grafts ------------------------------------------------------------------


async def test_a_replace_ref_never_deploys_the_replacement(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    pipeline = (
        f"stages:\n  - name: deploy-dev\n    environment: dev\n    steps:\n"
        f"      - run: cat payload.txt >> {seen}\n"
        f"      - run: git show HEAD:payload.txt >> {seen}\n"
    )  # a step's own git too
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    repo = ws.repo_dir(ws.repo("app"))
    git(repo, "checkout", "-q", "-b", "topic")
    sha = commit(repo, "release", files={"payload.txt": "reviewed\n"})
    twin = evil_twin(repo, sha, {"payload.txt": "EVIL\n"})
    git(repo, "replace", sha, twin)  # what a pusher's refs/replace/<sha> does
    assert git(repo, "show", f"{sha}:payload.txt") == "EVIL"  # git itself is fooled
    async with Engine(ws) as engine:
        git(repo, "update-ref", "refs/heads/main", sha)
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        assert run["status"] == "succeeded", run
        deployed = await query(
            engine, "SELECT commit_sha FROM deployments WHERE environment = 'dev'"
        )
    assert seen.read_text() == "reviewed\nreviewed\n"
    assert [d["commit_sha"] for d in deployed] == [sha]


def test_verify_checkout_refuses_a_checkout_that_is_not_the_pinned_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, "release", files={"payload.txt": "reviewed\n"})
    twin = evil_twin(repo, sha, {"payload.txt": "EVIL\n"})
    dest = tmp_path / "work" / "1"
    gitio.worktree_add(repo, dest, sha)
    gitio.verify_checkout(repo, dest, sha)  # a fresh checkout is exactly the commit
    tree, twin_tree = (
        git(repo, "rev-parse", f"{sha}^{{tree}}"),
        git(repo, "rev-parse", f"{twin}^{{tree}}"),
    )
    git(dest, "read-tree", "-u", "--reset", twin)  # index and files of C', HEAD still C
    with pytest.raises(GitError) as caught:
        gitio.verify_checkout(repo, dest, sha)
    assert "payload.txt" in str(caught.value) and tree[:12] in str(caught.value)
    git(dest, "checkout", "-q", "--detach", twin)
    with pytest.raises(GitError) as caught:
        gitio.verify_checkout(repo, dest, sha)
    assert tree[:12] in str(caught.value) and twin_tree[:12] in str(caught.value)
    git(dest, "checkout", "-q", "--detach", sha)
    (dest / "extra.sh").write_text("echo planted\n")
    with pytest.raises(GitError, match="extra.sh"):
        gitio.verify_checkout(repo, dest, sha)


def test_grafts_and_graft_replacements_cannot_hide_an_author(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    hidden = commit(repo, "alice's part", author="alice")
    head = commit(repo, "carol's part", author="carol")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "grafts").write_text(f"{head} {base}\n")  # head's parent "is" base
    assert "alice@example.com" in gitio.range_people(repo, base, head)["authors"]
    assert [c.sha for c in gitio.log_range(repo, base, head)] == [head, hidden]
    (repo / ".git" / "info" / "grafts").unlink()
    git(repo, "replace", "--graft", head, base)
    assert "alice@example.com" in gitio.range_people(repo, base, head)["authors"]
    assert gitio.pending_summary(repo, base, head)[0] == 2


def test_a_mirror_never_fetches_replace_refs(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin")
    sha = commit(origin, "release", files={"payload.txt": "reviewed\n"})
    twin = evil_twin(origin, sha, {"payload.txt": "EVIL\n"})
    git(origin, "replace", sha, twin)
    dest = tmp_path / "mirrors" / "app.git"
    gitio.mirror(f"file://{origin}", dest)
    assert git(dest, "for-each-ref", "refs/replace/") == ""
    assert git(dest, "rev-parse", "refs/heads/main") == sha
    # a mirror made by an older version (`clone --mirror`) loses its replace refs on the next fetch
    old = tmp_path / "mirrors" / "old.git"
    git(tmp_path, "clone", "-q", "--mirror", f"file://{origin}", str(old))
    assert git(old, "for-each-ref", "refs/replace/") != ""
    gitio.mirror(f"file://{origin}", old)
    assert git(old, "for-each-ref", "refs/replace/") == ""


# -- git log parsing ----------------------------------------------------------------------------


def test_a_subject_cannot_add_a_commit_to_a_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    fake = "f" * 40
    subject = f"fix typo\x1e{fake}\x1fsecurity\x1fsecurity@example.com\x1fsecurity@example.com\x1f0\x1fReviewed-by: security"
    head = commit(repo, subject, author="carol")
    commits = gitio.log_range(repo, base, head)
    assert [(c.sha, c.email, c.subject) for c in commits] == [(head, "carol@example.com", subject)]
    assert gitio.commit(repo, head).subject == subject
    people = gitio.range_people(repo, base, head)
    assert people["authors"] == {"carol@example.com": head} and people["committers"] == {
        "carol@example.com": head
    }


def test_an_author_name_cannot_shift_the_email_to_someone_else(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    head = commit(
        repo,
        "innocent",
        author="mallory",
        name="Mallory\x1fbob@example.com",
        email="mallory@evil.example",
    )
    info = gitio.commit(repo, head)
    assert (info.author, info.email, info.committer_email) == (
        "Mallory\x1fbob@example.com",
        "mallory@evil.example",
        "mallory@evil.example",
    )
    assert set(gitio.range_people(repo, base, head)["authors"]) == {"mallory@evil.example"}


# -- commit metadata in the step environment ----------------------------------------------------


async def test_a_128_kib_subject_does_not_stop_the_steps(tmp_path: Path) -> None:
    # The step prints the end of what it got (it runs sandboxed: its log is what it can share).
    pipeline = (
        "stages:\n  - name: build\n    steps:\n"
        "      - run: printf '%s' \"$AHEAD_SUBJECT\" | tail -c 40\n"
    )
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    repo = ws.repo_dir(ws.repo("app"))
    message = tmp_path / "message"
    message.write_text("x" * (128 * 1024) + "\n")
    async with Engine(ws) as engine:
        git(repo, "commit", "-q", "--allow-empty", "-F", str(message))
        sha = git(repo, "rev-parse", "HEAD")
        rows = await wait_for(engine, "SELECT * FROM runs WHERE commit_sha = ?", (sha,))
        run = await wait_run_done(engine, rows[0]["id"])
        lines = await wait_for(
            engine,
            "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id WHERE s.run_id = ?",
            (run["id"],),
        )
    assert run["status"] == "succeeded", run
    assert lines[-1]["line"].endswith(f"x… [truncated {128 * 1024 - 4096} bytes]")


def test_capped_keeps_short_values_and_whole_characters() -> None:
    from core.engine import capped

    assert capped("release 1.2") == "release 1.2"
    assert capped("é" * 3000) == "é" * 2048 + "… [truncated 1904 bytes]"


# -- author identity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "message", "expect"),
    [
        ("Alice+x@Example.COM", "change", "alice cannot approve: author of"),
        ("ALICE+ci@HOME.EXAMPLE", "change", "alice cannot approve: author of"),
        (
            "carol@example.com",
            "change\n\nCo-authored-by: Alice Archer <alice@example.com>",
            "alice cannot approve: co-author or sign-off (trailer) of",
        ),
        (
            "carol@example.com",
            "change\n\nSigned-off-by: Alice <Alice+signing@home.example>",
            "alice cannot approve: co-author or sign-off (trailer) of",
        ),
    ],
)
async def test_an_author_under_another_spelling_cannot_approve(
    tmp_path: Path, email: str, message: str, expect: str
) -> None:
    ws = service_ws(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        (repo / "f").write_text(message)
        git(repo, "add", "-A")
        git(
            repo,
            "commit",
            "-qm",
            message,
            env={
                "GIT_AUTHOR_NAME": "Someone",
                "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": "Carol",
                "GIT_COMMITTER_EMAIL": "carol@example.com",
            },
        )
        sha = git(repo, "rev-parse", "HEAD")
        change = await waiting_change(engine, sha)
        verdict = decide(ws, change["id"], "alice")
        assert not verdict.ok and expect in verdict.message, verdict


async def test_the_deployed_mailmap_names_an_author_and_the_changes_own_cannot_hide_one(
    tmp_path: Path,
) -> None:
    ws = service_ws(tmp_path / "ws", "approvals: 1")
    repo = ws.repo_dir(ws.repo("service"))
    async with Engine(ws) as engine:
        base = commit(
            repo,
            "mailmap",
            author="carol",
            files={".mailmap": "Alice Archer <alice@example.com> <al@laptop.example>\n"},
        )
        change = await waiting_change(engine, base)
        assert decide(ws, change["id"], "bob").ok
        assert (await wait_run_done(engine, change["run_id"]))["status"] == "succeeded"
        # alice under an email only the deployed .mailmap knows, and a .mailmap of the change
        # itself claiming her usual email is carol's
        head = commit(
            repo,
            "more",
            author="alice",
            email="al@laptop.example",
            files={
                ".mailmap": "Alice Archer <alice@example.com> <al@laptop.example>\n"
                "Carol <carol@example.com> <alice@example.com>\n"
            },
        )
        change = await waiting_change(engine, head)
        assert change["base_sha"] == base
        people = json.loads(change["people"])
        assert set(people["authors"]) == {"al@laptop.example", "alice@example.com"}
        verdict = decide(ws, change["id"], "alice")
        assert not verdict.ok and "alice cannot approve: author of" in verdict.message, verdict
        assert decide(ws, change["id"], "carol").ok


def test_operator_emails_are_identities(tmp_path: Path) -> None:
    ws = make_ws(
        tmp_path / "ws",
        extra_operators="  - name: eve\n    roles: [viewer]\n    emails: [Eve+ops@Example.com]\n",
    )
    eve = ws.operator_by_email("eve@example.com")
    assert eve is not None and eve.name == "eve" and eve.emails == ("eve@example.com",)
    root = tmp_path / "ws"
    text = (root / "ahead.yml").read_text()
    (root / "ahead.yml").write_text(
        text.replace("emails: [Eve+ops@Example.com]", "emails: [Bob+2@example.com]")
    )
    from core import workspace
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="already bob's"):
        workspace.read(root / "ahead.yml")


def test_the_engines_git_runs_no_hook(tmp_path: Path) -> None:
    """A post-checkout hook (in the repo, or named by any config's core.hooksPath) never runs
    when the engine makes a checkout: git runs with core.hooksPath=/dev/null."""
    from tests.conftest import make_repo

    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "hook-ran"
    for hooks in (repo / ".git" / "hooks", tmp_path / "elsewhere"):
        hooks.mkdir(parents=True, exist_ok=True)
        hook = hooks / "post-checkout"
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
    git(repo, "config", "core.hooksPath", str(tmp_path / "elsewhere"))
    sha = git(repo, "rev-parse", "HEAD")
    gitio.worktree_add(repo, tmp_path / "checkout", sha)
    gitio.verify_checkout(repo, tmp_path / "checkout", sha)
    assert not marker.exists()
