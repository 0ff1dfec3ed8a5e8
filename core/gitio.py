"""Everything that reads or writes git repositories.

Ref detection reads ref files directly (loose refs and packed-refs: ~15 µs a repo, against
~2.8 ms for GitPython per poll); history and checkouts use the `git` command with argv lists,
never a shell, and `--end-of-options` before anything that came from a repository. The only
module that imports GitPython (kept short-lived: its README warns it leaks in long-running
processes). All functions here block: the engine calls them in worker threads.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from core.errors import GitError
from core.text import email_identity

SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock$|/$|^/|^\.|^-")
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "LC_ALL": "C",
    # git flushes after every commit when writing to a pipe; that made `git log` over 50k commits
    # 2x slower here (20,869 reads for 550 KB). We read to the end anyway.
    "GIT_FLUSH": "0",
    # Replace refs and grafts make git show one commit's sha with another commit's content or
    # history: a pusher's `refs/replace/<C>` would deploy C' while every record says C. Off for
    # every git we run (`core.useReplaceRefs=false` below too); the graft file is a path that
    # cannot exist (a file under /dev/null).
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_GRAFT_FILE": os.path.join(os.devnull, "no-grafts"),
}
# Options before every git subcommand we run (argv, never a shell).
# No hooks: the engine's git (worktree add, fetch) never runs a script a config file names, so a
# hooksPath planted in any config it reads cannot run code as the engine outside the sandbox.
GIT_OPTIONS = [
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.useReplaceRefs=false",
    "-c",
    "core.hooksPath=/dev/null",
]
# `git log -z` with NUL between fields: git cuts a message or name at a NUL byte, so no commit
# content can add a field or a record (any other separator byte can be committed).
LOG_FIELDS = ("%H", "%an", "%ae", "%ce", "%ct", "%s")
LOG_FORMAT = "%x00".join(LOG_FIELDS)
# The trailers that name more authors of a commit (values unfolded: one line each).
AUTHOR_TRAILERS = "%(trailers:key=Co-authored-by,key=Signed-off-by,valueonly,unfold)"


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    author: str
    email: str
    committer_email: str
    time: float
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:7]


def valid_branch(name: str) -> bool:
    """A branch name we are willing to track: git's own rules, and never option-like."""
    return (
        bool(name)
        and len(name) <= 255
        and not any(_BAD_REF.search(part) for part in name.split("/"))
        and not _BAD_REF.search(name)
    )


def git(
    repo: Path | None,
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> str:
    """Run git with an argv list and return stdout as text.

    Raises:
        GitError: git failed (its stderr is in the message) or timed out.
    """
    argv = ["git", *GIT_OPTIONS]
    if repo is not None:
        argv += ["-C", str(repo)]
    argv += list(args)
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    # A timer kills a hung git; `subprocess.run(timeout=...)` would instead poll waitpid with
    # sleeps, adding ~1.1 ms to every call (measured in bench/bench_engine.py).
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror}") from None
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate(input)
    finally:
        timer.cancel()
    if fired.is_set():
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s in {repo}")
    if check and proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        raise GitError(
            f"git {args[0]} failed in {repo}: {message[-1] if message else proc.returncode}"
        )
    return out.decode("utf-8", "surrogateescape")


# -- refs, read straight from the files ---------------------------------------------------------


def git_dirs(repo: Path) -> tuple[Path, Path]:
    """(git dir, common dir) of a work tree or bare repository, without running git."""
    dot = repo / ".git"
    if dot.is_dir():
        git_dir = dot
    elif dot.is_file():
        text = dot.read_text("utf-8", "replace").strip()
        if not text.startswith("gitdir:"):
            raise GitError(f"{dot} is not a gitdir link")
        git_dir = (repo / text[len("gitdir:") :].strip()).resolve()
    elif (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        git_dir = repo
    else:
        raise GitError(f"{repo} is not a git repository (no .git)")
    common = git_dir
    link = git_dir / "commondir"
    if link.is_file():
        common = (git_dir / link.read_text("utf-8", "replace").strip()).resolve()
    return git_dir, common


def read_branches(common_dir: Path) -> dict[str, str]:
    """Every local branch and the sha it points at (loose refs override packed-refs)."""
    branches: dict[str, str] = {}
    try:
        with open(common_dir / "packed-refs", "rb") as fh:
            for raw in fh:
                if raw[:1] in (b"#", b"^"):
                    continue
                parts = raw.rstrip(b"\n").split(b" ", 1)
                if len(parts) == 2 and parts[1].startswith(b"refs/heads/"):
                    name = parts[1][11:].decode("utf-8", "surrogateescape")
                    branches[name] = parts[0].decode("ascii", "replace")
    except FileNotFoundError:
        pass
    heads = common_dir / "refs" / "heads"
    stack = [(heads, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), name + "/"))
            elif entry.is_file(follow_symlinks=False) and not entry.name.endswith(".lock"):
                try:
                    with open(entry.path, "rb") as fh:
                        value = fh.read(128).strip().decode("ascii", "replace")
                except (FileNotFoundError, IsADirectoryError):
                    continue
                if SHA.match(value):
                    branches[name] = value
                elif value.startswith("ref: "):
                    continue  # a symbolic ref under heads/: not a branch of its own
    return {name: sha for name, sha in branches.items() if SHA.match(sha)}


def stamp_paths(common_dir: Path) -> list[str]:
    """The paths whose modification times move when a branch moves (see `ref_stamp`)."""
    return [str(common_dir / "packed-refs"), str(common_dir / "refs" / "heads")]


def ref_stamp(paths: list[str]) -> tuple[int, ...]:
    """A cheap fingerprint that changes when any branch may have moved (stat calls only)."""
    stamps: list[int] = []
    for path in paths:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    return tuple(stamps)


# -- commits and history ----------------------------------------------------------------------


def _records(out: str, width: int) -> list[list[str]]:
    """The records of `git log -z` output whose format has `width` NUL-separated fields, each
    checked to start with a commit id.

    Raises:
        GitError: the output does not split into whole records (git never emits a NUL inside a
            field, so this means git changed, not that a commit is hostile).
    """
    fields = out.split("\0")
    if fields and fields[-1] == "":
        fields.pop()  # -z ends the last record with a NUL too
    if len(fields) % width:
        raise GitError(f"git log output has {len(fields)} fields, not a multiple of {width}")
    records = [fields[i : i + width] for i in range(0, len(fields), width)]
    for record in records:
        if not SHA.match(record[0]):
            raise GitError(f"git log output has {record[0][:50]!r} where a commit id belongs")
    return records


def _parse_log(out: str) -> list[Commit]:
    return [
        Commit(r[0], r[1], r[2].lower(), r[3].lower(), float(r[4] or 0), r[5])
        for r in _records(out, len(LOG_FIELDS))
    ]


def check_sha(sha: str) -> str:
    if not SHA.match(sha):
        raise GitError(f"{sha!r} is not a full commit id")
    return sha


def resolve(repo: Path, ref: str) -> str:
    """The full sha of `ref` (a branch, tag or abbreviated sha) as a commit.

    Raises:
        GitError: no such commit.
    """
    if ref.startswith("-") or not ref or "\x00" in ref:
        raise GitError(f"{ref!r} is not a valid ref")
    out = git(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        check=False,
    ).strip()
    if not SHA.match(out):
        raise GitError(f"no commit {ref!r} in {repo}")
    return out


def commit(repo: Path, sha: str) -> Commit:
    out = git(repo, "log", "-1", "-z", f"--format={LOG_FORMAT}", "--end-of-options", check_sha(sha))
    found = _parse_log(out)
    if not found:
        raise GitError(f"no commit {sha} in {repo}")
    return found[0]


def log_range(repo: Path, base: str | None, head: str, limit: int | None = None) -> list[Commit]:
    """Commits in base..head (all of head's history when base is None), newest first."""
    args = ["log", "-z", f"--format={LOG_FORMAT}"]
    if limit is not None:
        args.append(f"--max-count={limit}")
    args.append("--end-of-options")
    args.append(f"{check_sha(base)}..{check_sha(head)}" if base else check_sha(head))
    return _parse_log(git(repo, *args))


def range_people(repo: Path, base: str | None, head: str) -> dict[str, dict[str, str]]:
    """Every identity in base..head, each with the newest commit naming it:
    {"authors": {email: sha}, "committers": {email: sha}, "trailers": {email: sha}}, the last
    for `Co-authored-by:` and `Signed-off-by:` trailers. The whole range, however long.

    Emails are identities (`core.text.email_identity`: case and `+tag` folded). The `.mailmap`
    of `base` (the deployed, approved commit; never the commits under review, whose author
    writes them) maps an email to another; both the email and what it maps to are kept, so a
    mailmap can only add people, never hide one.
    """
    args = ["log", "-z", f"--format=%H%x00%ae%x00%ce%x00{AUTHOR_TRAILERS}", "--end-of-options"]
    args.append(f"{check_sha(base)}..{check_sha(head)}" if base else check_sha(head))
    aliases = mailmap(repo, base) if base else {}
    people: dict[str, dict[str, str]] = {"authors": {}, "committers": {}, "trailers": {}}

    def add(kind: str, email: str, sha: str) -> None:
        if not email:
            return
        who = email_identity(email)
        people[kind].setdefault(who, sha)
        if who in aliases:
            people[kind].setdefault(aliases[who], sha)

    for sha, author, committer, trailers in _records(git(repo, *args), 4):
        add("authors", author, sha)
        add("committers", committer, sha)
        for value in trailers.splitlines():
            add("trailers", trailer_email(value), sha)
    return people


def trailer_email(value: str) -> str:
    """The email of a trailer value like `Name <email>` (or a bare email), or ""."""
    found = re.findall(r"<([^<>]*)>", value)
    if found:
        return str(found[-1]).strip()
    value = value.strip()
    return value if "@" in value and " " not in value else ""


def mailmap(repo: Path, sha: str) -> dict[str, str]:
    """{email identity: identity it maps to} from the `.mailmap` of commit `sha` (none when the
    commit has no such file, or it is a link). Lines naming two emails map the second to the first."""
    try:
        text = read_file(repo, sha, ".mailmap")
    except GitError:
        return {}
    result: dict[str, str] = {}
    for line in (text or "").splitlines():
        emails = re.findall(r"<([^<>]*)>", line.split("#", 1)[0])
        if len(emails) >= 2 and emails[0].strip() and emails[1].strip():
            result[email_identity(emails[1])] = email_identity(emails[0])
    return result


def pending_summary(repo: Path, base: str | None, head: str) -> tuple[int, float | None]:
    """(count, commit time of the oldest) of base..head, in one git call."""
    args = ["log", "--format=%ct", "--end-of-options"]
    args.append(f"{check_sha(base)}..{check_sha(head)}" if base else check_sha(head))
    out = git(repo, *args).split()
    if not out:
        return 0, None
    return len(out), float(out[-1])


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    proc = subprocess.run(  # exit status is the answer here
        [
            "git",
            *GIT_OPTIONS,
            "-C",
            str(repo),
            "merge-base",
            "--is-ancestor",
            "--end-of-options",
            check_sha(older),
            check_sha(newer),
        ],
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    return proc.returncode == 0


READ_MAX = (
    1024 * 1024
)  # what read_file reads at most: core.yamlfile.MAX_BYTES, the pipeline's own cap


def read_file(repo: Path, sha: str, path: str, max_bytes: int = READ_MAX) -> str | None:
    """The text of `path` at commit `sha`, or None when the commit has no such file.

    `git cat-file --batch-check` first gives the blob's size: a blob over `max_bytes` is refused
    without being read (a 100 MB pipeline.yml never reaches memory). Then one `git cat-file
    --batch` call answers "what is in it" and (from the parent tree) "is it a symbolic link".
    git never follows a symlink inside a tree, so a link cannot make this read anything outside
    the commit; a link is refused so the error says why.

    Raises:
        GitError: `path` is a symbolic link in that commit.
        ConfigError: the file is larger than `max_bytes`.
    """
    if "\n" in path or not path:
        raise GitError(f"{path!r} is not a valid path")
    from core.errors import ConfigError

    check_sha(sha)
    fields = git(repo, "cat-file", "--batch-check", input=f"{sha}:{path}\n".encode()).split()
    if len(fields) == 3 and fields[1] == "blob" and int(fields[2]) > max_bytes:
        raise ConfigError(
            f"{sha[:7]}:{path}",
            None,
            "",
            f"file is {int(fields[2])} bytes, larger than {max_bytes // 1024} KiB (not read)",
            "split it or remove generated content",
        )
    parent, _, leaf = path.rpartition("/")
    tree_spec = f"{sha}:{parent}" if parent else f"{sha}^{{tree}}"
    out = git(repo, "cat-file", "--batch", input=f"{tree_spec}\n{sha}:{path}\n".encode())
    data = out.encode("utf-8", "surrogateescape")
    tree, rest = _batch_object(data)
    blob, _ = _batch_object(rest)
    if blob is None or blob[0] != "blob":
        return None
    if (
        tree is not None
        and _tree_mode(tree[2], leaf.encode("utf-8", "surrogateescape"), tree[1]) == b"120000"
    ):
        raise GitError(
            f"{path} is a symbolic link at {sha[:7]}; commit the file itself, not a link"
        )
    return blob[2].decode("utf-8", "surrogateescape")


def _batch_object(data: bytes) -> tuple[tuple[str, int, bytes] | None, bytes]:
    """(type, object id length in bytes, body) of the first `cat-file --batch` answer, and the rest."""
    header, _, rest = data.partition(b"\n")
    fields = header.split()
    if len(fields) != 3:
        return None, rest
    size = int(fields[2])
    return (fields[1].decode(), len(fields[0]) // 2, rest[:size]), rest[size + 1 :]


def _tree_mode(tree: bytes, name: bytes, oid_len: int) -> bytes | None:
    """The mode of entry `name` in a raw tree object (entries: mode SP name NUL oid)."""
    at = 0
    while at < len(tree):
        space = tree.index(b" ", at)
        nul = tree.index(b"\0", space)
        if tree[space + 1 : nul] == name:
            return tree[at:space]
        at = nul + 1 + oid_len
    return None


# -- checkouts and mirrors ----------------------------------------------------------------------


_worktree_locks: dict[str, threading.Lock] = {}
_worktree_locks_guard = threading.Lock()


def _worktree_lock(repo: Path) -> threading.Lock:
    """One lock per repository for adding and removing worktrees: a `worktree prune` running
    while another run's `worktree add` is half done deletes the new entry and fails the add."""
    with _worktree_locks_guard:
        return _worktree_locks.setdefault(str(repo), threading.Lock())


def worktree_add(repo: Path, dest: Path, sha: str) -> None:
    """A detached checkout of exactly `sha` at `dest` (touches no branch)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _worktree_lock(repo):
        git(repo, "worktree", "add", "--detach", "--force", "--", str(dest), check_sha(sha))


def verify_checkout(repo: Path, dest: Path, sha: str) -> None:
    """Check that the checkout at `dest` is exactly commit `sha` of `repo`: HEAD is `sha`, the
    tree checked out is the commit's own tree (replace refs and grafts off), and nothing in the
    work tree or index differs from it (no change, no untracked or ignored file).

    Raises:
        GitError: any difference, naming the commit, both trees and what differs.
    """
    check_sha(sha)
    want = git(repo, "rev-parse", "--verify", "--end-of-options", f"{sha}^{{tree}}").strip()
    head, tree = (git(dest, "rev-parse", "HEAD", "HEAD^{tree}").split() + ["", ""])[:2]
    if head != sha or tree != want:
        raise GitError(
            f"checkout {dest} is commit {head[:12] or '?'} tree {tree[:12] or '?'}, but the run "
            f"pins commit {sha[:12]} tree {want[:12]}; refusing to run on it"
        )
    status = git(
        dest, "status", "--porcelain=v1", "-z", "-uall", "--ignored=traditional", "--no-renames"
    )
    changed = [entry for entry in status.split("\0") if entry]
    if changed:
        raise GitError(
            f"checkout {dest} of commit {sha[:12]} (tree {want[:12]}) differs from the commit: "
            f"{changed[0][:200]!r}{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}; "
            "refusing to run on it"
        )


def archive_command(repo: Path, sha: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of `git archive` writing commit `sha` as a tar stream to stdout
    (a remote runner gets the code this way; the caller streams it, so nothing blocks here)."""
    argv = ["git", *GIT_OPTIONS, "-C", str(repo), "archive", "--format=tar", check_sha(sha)]
    return argv, {**os.environ, **GIT_ENV}


def worktree_remove(repo: Path, dest: Path) -> None:
    with _worktree_lock(repo):
        git(repo, "worktree", "remove", "--force", "--", str(dest), check=False)
        git(repo, "worktree", "prune", check=False)


MIRROR_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def mirror(url: str, dest: Path) -> None:
    """Clone `url` as a bare copy at `dest`, or fetch it when it exists: branches and tags only.
    Never `refs/replace/*` (a pushed replace ref would swap a commit's content) nor anything
    else; replace refs left by an older `clone --mirror` are deleted."""
    if not (dest / "HEAD").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        git(None, "clone", "--bare", "--quiet", "--", url, str(dest), timeout=600)
    git(dest, "fetch", "--prune", "--quiet", "--no-tags", "origin", *MIRROR_REFSPECS, timeout=600)
    stale = git(dest, "for-each-ref", "--format=delete %(refname)", "refs/replace/")
    if stale:
        git(
            dest,
            "update-ref",
            "--no-deref",
            "--stdin",
            input=stale.encode("utf-8", "surrogateescape"),
        )


def head_branch(repo: Path) -> str | None:
    """The branch HEAD points at (used by `ahead init` to guess the default branch)."""
    try:
        _, common = git_dirs(repo)
        text = (common / "HEAD").read_text("utf-8", "replace").strip()
    except (OSError, GitError):
        return None
    if text.startswith("ref: refs/heads/"):
        return text[len("ref: refs/heads/") :]
    return None


def check_repo(repo: Path, branch: str) -> str | None:
    """A problem with `repo` as a tracked repository, or None when it is usable.

    Uses GitPython (short-lived) for a thorough look at the repository.
    """
    import git as gitpython  # confined to this module; imported late (costs ~80 ms)

    if not repo.exists():
        return f"{repo} does not exist"
    try:
        with gitpython.Repo(repo) as handle:
            names = {h.name for h in handle.heads}
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        return f"{repo} is not a git repository"
    except Exception as exc:  # GitPython raises many kinds; this is a diagnostic
        return f"{repo} cannot be read: {exc}"
    if branch not in names:
        return f"{repo} has no branch {branch!r} (branches: {', '.join(sorted(names)) or 'none'})"
    return None


# -- live trees (drift) ------------------------------------------------------------------------
# A drift target gets a private git dir of its own: HEAD is a commit of the desired tree, the
# index is that tree, and the objects are borrowed from the repo (alternates). `git status`
# with the live directory as work tree then finds what differs at the speed of git itself, and
# keeps the index's stat data between checks (so a warm check hashes nothing). Global and
# system git config are not read: only the private config below applies.

LIVE_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "change-ahead",
    "GIT_AUTHOR_EMAIL": "drift@change-ahead",
    "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_NAME": "change-ahead",
    "GIT_COMMITTER_EMAIL": "drift@change-ahead",
    "GIT_COMMITTER_DATE": "@0 +0000",
}
LIVE_CONFIG = """[core]
\trepositoryformatversion = 0
\tbare = false
\tfilemode = true
\tsymlinks = true
\tquotepath = false
\tfsmonitor = false
\tuntrackedCache = false
\texcludesFile = /dev/null
\thooksPath = /dev/null
[index]
\tthreads = true
"""


def live_index(repo: Path, private: Path, sha: str, path: str) -> bool:
    """Make `private` a git dir whose HEAD and index are the tree `path` of commit `sha` (kept
    when they already are: commits never change, so a warm check runs no git here). False when
    the commit has no directory `path`."""
    _, common = git_dirs(repo)
    marker = private / "desired-tree"
    want = f"{check_sha(sha)}:{path}"
    if not (private / "HEAD").is_file():
        (private / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (private / "refs").mkdir(exist_ok=True)
        (private / "config").write_text(LIVE_CONFIG)
        (private / "objects" / "info" / "alternates").write_text(str(common / "objects") + "\n")
        (private / "HEAD").write_text("0" * 40 + "\n")
    elif marker.is_file() and marker.read_text().rstrip("\n") == want:
        return True
    if "\n" in path:
        return False
    env = {**LIVE_ENV, "GIT_DIR": str(private)}
    tree = f"{check_sha(sha)}^{{tree}}" if path in ("", ".") else want
    try:  # one git call resolves the path and makes the commit; not a directory: git refuses
        commit = git(
            None, "commit-tree", "-m", "desired state", "--end-of-options", tree, env=env
        ).strip()
    except GitError:
        return False
    (private / "HEAD").write_text(check_sha(commit) + "\n")
    git(None, "read-tree", "--end-of-options", commit, env=env)
    marker.write_text(want + "\n")
    return True


def live_status(
    private: Path, live: Path, timeout: float
) -> tuple[int, list[tuple[str, str]], str]:
    """(exit code, [(status, path)], stderr) of `git status` of `live` against the desired tree.

    Status codes: " M" changed, " T" type changed, " D" removed, "??" added, "!!" added but
    matched by a .gitignore in the live tree (still reported: a hidden file is still drift).
    """
    argv = [
        "git",
        *GIT_OPTIONS,
        "--git-dir",
        str(private),
        "--work-tree",
        str(live),
        "status",
        "--porcelain=v1",
        "-z",
        "-uall",
        "--ignored=traditional",
        "--no-renames",
    ]
    env = {**os.environ, **GIT_ENV, **LIVE_ENV}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=private,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise GitError(f"git status of {live} took longer than {timeout:.0f}s") from None
    entries = []
    for item in out.split(b"\0"):
        if len(item) > 3:
            entries.append(
                (item[:2].decode("ascii", "replace"), item[3:].decode("utf-8", "surrogateescape"))
            )
    return proc.returncode, entries, err.decode("utf-8", "replace")


def desired_blobs(private: Path, paths: list[str], cap: int) -> dict[str, bytes | None]:
    """The desired content of `paths`: bytes for blobs of at most `cap` bytes, None otherwise."""
    env = {**os.environ, **GIT_ENV, **LIVE_ENV, "GIT_DIR": str(private)}

    def batch(mode: str, names: list[str]) -> bytes:
        return subprocess.run(
            ["git", *GIT_OPTIONS, "cat-file", mode],
            input="".join(f"HEAD:{p}\n" for p in names).encode(),
            capture_output=True,
            env=env,
            check=False,
            timeout=60,
        ).stdout

    wanted = [p for p in paths if "\n" not in p]
    small = []
    for path, line in zip(wanted, batch("--batch-check", wanted).splitlines(), strict=False):
        fields = line.split()
        if len(fields) == 3 and fields[1] == b"blob" and int(fields[2]) <= cap:
            small.append(path)
    result: dict[str, bytes | None] = dict.fromkeys(wanted)
    data, pos = batch("--batch", small), 0
    for path in small:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        size = int(data[pos:end].split()[2])
        result[path] = data[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return result
