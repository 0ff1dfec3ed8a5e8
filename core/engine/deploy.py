"""The deploy checkout: once a gated stage's gate passed, a fresh checkout of the approved
commit in the 0700 deploy directory (no sandboxed step can see it), verified against the commit
(HEAD, tree, a clean `git status`), with the run's kept artifacts restored and checked against
their recorded SHA-256. Anything different refuses the deploy (CheckoutChanged).

Git and files only, in a worker thread: may not depend on the engine, the store or the run's
execution (the run's artifact rows are read through the callable it is given).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from core import gitio, safepath
from core.engine.common import ContextLog
from core.errors import CoreError, GitError
from core.store.db import Row

DEPLOY_DIR = "deploy"  # under the state dir, 0700: gated stages' checkouts, made after the gate


class CheckoutChanged(CoreError):
    """A deploy checkout differs from the approved commit."""


def verify_deploy_checkout(repo: Path, dest: Path, sha: str) -> None:
    """(worker thread) Refuse a deploy checkout at `dest` that is not exactly commit `sha`
    (gitio.verify_checkout: HEAD, the commit's own tree, and a clean `git status`).

    Raises:
        CheckoutChanged: with the first differences.
    """
    try:
        gitio.verify_checkout(repo, dest, sha)
    except GitError as exc:
        raise CheckoutChanged(str(exc)) from None


def make_deploy_checkout(
    top: Path,
    repo_dir: Path,
    dest: Path,
    sha: str,
    store_rows: Callable[[str], list[Row]],
    log: ContextLog,
) -> None:
    """(worker thread) The deploy checkout of commit `sha` at `dest` under `top` (the 0700
    deploy directory, made so), verified against the commit, with the run's kept artifacts
    (`store_rows(sql)`: the run's rows) restored and their SHA-256 checked.

    Raises:
        CheckoutChanged: the checkout or a kept artifact is not what was approved.
        GitError, OSError: the checkout cannot be made.
    """
    top.mkdir(mode=0o700, parents=True, exist_ok=True)
    top.chmod(0o700)
    if dest.exists():  # left by an engine stop during a deploy
        gitio.worktree_remove(repo_dir, dest)
        shutil.rmtree(dest, ignore_errors=True)
    gitio.worktree_add(repo_dir, dest, sha)
    verify_deploy_checkout(repo_dir, dest, sha)
    for row in store_rows(
        "SELECT path, stored_path, sha256 FROM artifacts WHERE run_id = ? ORDER BY id"
    ):
        stored = Path(row["stored_path"])
        try:  # the checkout may hold links (committed ones too): never write through them
            copied = safepath.copy_inside(dest, row["path"], stored)  # in chunks, never whole
        except safepath.OutsideCheckout as exc:
            log.warning("artifact not restored: %s", exc)
            continue
        # What the deploy will read is checked, not the stored file before the copy (which a
        # writer could swap in between): hashed in chunks.
        digest = hashlib.sha256()
        with copied.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != row["sha256"]:
            raise CheckoutChanged(
                f"artifact {row['path']!r} ({stored}) changed since it "
                "was kept; re-run the pipeline"
            )
