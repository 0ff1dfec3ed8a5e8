"""The workspace: one ahead.yml and its state directory.

Parses and validates ahead.yml (repos, ordered environments, operators, runners, settings,
policies) into frozen dataclasses, and finds the workspace from `--workspace`, `AHEAD_WORKSPACE`
or the current directory and its parents. Every error names file, line and field. Depends on
core.yamlfile and core.fields only; opens no database and touches no repository.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import fields as f
from core.errors import ConfigError, CoreError, PermissionDenied, WorkspaceNotFound
from core.policy import Policy, parse_policy
from core.secrets import SecretSource
from core.text import email_identity
from core.yamlfile import Document, load

if TYPE_CHECKING:
    from core.sshclient import Address

FILENAME = "ahead.yml"
ROLES = ("viewer", "operator", "approver", "admin")


@dataclass(frozen=True)
class RepoConfig:
    """A tracked repository: a local path or a remote URL mirrored into the state directory."""

    name: str
    path: Path | None
    url: str | None
    branch: str = "main"
    fetch_interval: float = 60.0

    @property
    def is_remote(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class Operator:
    name: str
    roles: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    os_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runner:
    """Where a stage's steps run: this machine, or a host reached over SSH (core/remote.py)."""

    name: str
    kind: str = "local"  # local or ssh
    ssh: Address | None = None
    workdir: str = "~/.ahead-runner"  # on the remote host; "~/" is its user's home


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    max_parallel_runs: int = 4
    step_timeout: float = 3600.0
    cancel_grace: float = 10.0
    poll_interval: float = 1.0
    keep_logs_days: int = 30
    drift_interval: float = 300.0
    drift_revision_interval: float = 3600.0
    drift_timeout: float = 300.0
    drift_parallel: int = 4
    lease_timeout: float = 15.0  # an engine silent this long loses the workspace to the next one
    artifact_max_bytes: int = 512 * 1024**2  # an artifact larger than this fails its step
    sandbox: bool = True  # False: `sandbox: off`, untrusted steps run unisolated (core/sandbox.py)


@dataclass(frozen=True)
class Workspace:
    """A validated ahead.yml."""

    file: Path
    repos: tuple[RepoConfig, ...]
    environments: tuple[str, ...]
    settings: Settings
    operators: tuple[Operator, ...] = ()
    runners: tuple[Runner, ...] = (Runner("local"),)
    policies: dict[str, Policy] = field(default_factory=dict)
    secrets: dict[str, SecretSource] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    def repo(self, name: str) -> RepoConfig:
        from core.errors import NotFound

        for repo in self.repos:
            if repo.name == name:
                return repo
        known = ", ".join(r.name for r in self.repos) or "none"
        raise NotFound(f"no repo named {name!r} in {self.file} (known: {known})")

    def repo_dir(self, repo: RepoConfig) -> Path:
        """Where the repository's git data lives (the mirror for remote repos)."""
        if repo.path is not None:
            return repo.path
        return self.state_dir / "mirrors" / f"{repo.name}.git"

    @property
    def runner_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.runners)

    def runner(self, name: str) -> Runner:
        """The runner called `name`.

        Raises:
            NotFound: no such runner (the message suggests the closest name).
        """
        import difflib

        from core.errors import NotFound

        for runner in self.runners:
            if runner.name == name:
                return runner
        names = [r.name for r in self.runners]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise NotFound(
            f"no runner named {name!r} in {self.file} ({hint}runners: {', '.join(names)})"
        )

    def operator(self, name: str) -> Operator | None:
        return next((op for op in self.operators if op.name == name), None)

    def operator_by_email(self, email: str) -> Operator | None:
        who = email_identity(email)
        return next(
            (op for op in self.operators if who in {email_identity(e) for e in op.emails}), None
        )

    def operator_for_os_user(self, user: str | None = None) -> Operator | None:
        user = user or current_os_user()
        for operator in self.operators:
            if user in operator.os_users:
                return operator
        return None


def current_os_user() -> str:
    """The OS user this process runs as, from its real uid and the passwd database.

    Never from the environment: `LOGNAME`, `USER` and `LNAME` are set by whoever starts the
    process, so `LOGNAME=carol ahead --as carol approve 6` must not make anyone carol.

    Raises:
        PermissionDenied: the uid has no passwd entry (no name to match against `os_users`).
    """
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise PermissionDenied(
            f"uid {uid} has no entry in the passwd database: cannot tell which "
            "operator you are (add the user, or run as a user that has one)"
        ) from None


TOP_KEYS = ["repos", "environments", "policies", "operators", "runners", "settings", "secrets"]
REPO_KEYS = ["name", "path", "url", "branch", "fetch_interval"]
OPERATOR_KEYS = ["name", "roles", "keys", "emails", "os_users"]
RUNNER_KEYS = ["name", "local", "ssh", "workdir"]
SETTINGS_KEYS = [
    "state_dir",
    "max_parallel_runs",
    "step_timeout",
    "cancel_grace",
    "poll_interval",
    "keep_logs_days",
    "drift_interval",
    "drift_revision_interval",
    "drift_timeout",
    "drift_parallel",
    "lease_timeout",
    "artifact_max_bytes",
    "sandbox",
]


def parse(text: str, file: Path) -> Workspace:
    """Validate the text of an ahead.yml.

    Raises:
        ConfigError: the first problem found, naming file, line and field.
    """
    doc = load(text, str(file))
    root: Path = file.parent
    top = f.mapping(doc, (), doc.data if doc.data is not None else {}, "the workspace")
    f.check_keys(doc, (), top, TOP_KEYS)
    repos_value = f.require(
        doc, (), top, "repos", "add a list of repos, e.g. repos: [{name: app, path: ../app}]"
    )
    envs_value = f.require(
        doc, (), top, "environments", "add an ordered list, e.g. environments: [dev, prod]"
    )

    environments = tuple(_environments(doc, envs_value))
    repos = tuple(_repos(doc, repos_value, root))
    operators = tuple(_operators(doc, top.get("operators") or []))
    runners = tuple(_runners(doc, top.get("runners")))
    settings = _settings(doc, top.get("settings") or {}, root)
    raw_policies = f.mapping(doc, ("policies",), top.get("policies") or {}, "environment: policy")
    policies: dict[str, Policy] = {}
    for env, value in raw_policies.items():
        if env not in environments:
            raise doc.error(
                ("policies", env),
                f"no environment named {env!r}",
                "policies are keyed by a name from environments: " + ", ".join(environments),
            )
        policies[env] = parse_policy(doc, env, value, list(operators))
    secrets = _secrets(
        doc, top.get("secrets") or {}, root, environments, tuple(r.name for r in repos)
    )
    return Workspace(
        file=file,
        repos=repos,
        environments=environments,
        settings=settings,
        operators=operators,
        runners=runners,
        policies=policies,
        secrets=secrets,
    )


SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _secrets(
    doc: Document,
    value: Any,
    root: Path,
    environments: tuple[str, ...] = (),
    repos: tuple[str, ...] = (),
) -> dict[str, SecretSource]:
    """`secrets: {NAME: {env: VAR} | {file: path}}`: where each value lives (never the value),
    and where it may go: `environments: [..]` (only stages deploying there), `repos: [..]` and
    `branches: true` (branch runs too; by default a secret is for main runs only)."""
    entries = f.mapping(doc, ("secrets",), value, "NAME: {env: VARIABLE} or NAME: {file: path}")
    found: dict[str, SecretSource] = {}
    for name, item in entries.items():
        path: tuple[str | int, ...] = ("secrets", name)
        if (
            not isinstance(name, str)
            or not SECRET_NAME.match(name)
            or name.upper().startswith("AHEAD_")
        ):
            raise doc.error(
                path,
                f"{name!r} is not a usable secret name",
                "steps get it as an environment variable: letters, digits and _, not AHEAD_...",
            )
        entry = f.mapping(doc, path, item, "env: VARIABLE or file: path")
        f.check_keys(doc, path, entry, ["env", "file", "environments", "repos", "branches"])
        if ("env" in entry) == ("file" in entry):
            raise doc.error(
                path,
                "needs exactly one of env or file",
                "env: NAME_OF_THE_ENGINE_VARIABLE, or file: path/to/file (relative to ahead.yml)",
            )
        branches = entry.get("branches", False)
        if not isinstance(branches, bool):
            raise doc.error(
                path + ("branches",),
                f"must be true or false, got {str(branches)[:40]}",
                "true gives the secret to branch runs too (false, the default: main runs only)",
            )
        envs = _secret_scope(doc, path, entry, "environments", environments)
        only = _secret_scope(doc, path, entry, "repos", repos)
        if "env" in entry:
            var = f.string(doc, path + ("env",), entry["env"], "an environment variable name")
            if not SECRET_NAME.match(var):
                raise doc.error(path + ("env",), f"{var!r} is not an environment variable name")
            found[name] = SecretSource(
                name, env=var, environments=envs, repos=only, branches=branches
            )
        else:
            rel = f.string(doc, path + ("file",), entry["file"], "a file path")
            found[name] = SecretSource(
                name,
                file=(root / os.path.expanduser(rel)).resolve(),
                environments=envs,
                repos=only,
                branches=branches,
            )
    return found


def _secret_scope(
    doc: Document,
    path: tuple[str | int, ...],
    entry: dict[str, Any],
    key: str,
    known: tuple[str, ...],
) -> tuple[str, ...] | None:
    """A secret's `environments:` or `repos:`: names from the workspace (None: not limited)."""
    if entry.get(key) is None:
        return None
    names = f.string_list(doc, path + (key,), entry[key], f"names from {key}:")
    if not names:
        raise doc.error(
            path + (key,),
            "is empty: the secret could go nowhere",
            f"list names from {key}: ({', '.join(known)}), or remove the key",
        )
    for k, item in enumerate(names):
        if item not in known:
            raise doc.error(
                path + (key, k),
                f"no {key[:-1]} named {item!r}",
                f"{key}: known are " + (", ".join(known) or "none"),
            )
    return tuple(names)


def _environments(doc: Document, value: Any) -> list[str]:
    items = f.sequence(doc, ("environments",), value, "environment names in order")
    if not items:
        raise doc.error(("environments",), "must list at least one environment", "e.g. [dev, prod]")
    seen: list[str] = []
    for i, item in enumerate(items):
        env = f.name(doc, ("environments", i), item, "environment name")
        if env in seen:
            raise doc.error(("environments", i), f"environment {env!r} is listed twice")
        seen.append(env)
    return seen


def _repos(doc: Document, value: Any, root: Path) -> list[RepoConfig]:
    items = f.sequence(doc, ("repos",), value, "repos")
    repos: list[RepoConfig] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        path = ("repos", i)
        entry = f.mapping(doc, path, item, "a repo with name and path or url")
        f.check_keys(doc, path, entry, REPO_KEYS)
        name = f.name(
            doc,
            path + ("name",),
            f.require(doc, path, entry, "name", "give the repo a name"),
            "repo name",
        )
        if name in names:
            raise doc.error(
                path + ("name",), f"repo name {name!r} is used twice", "names must be unique"
            )
        names.add(name)
        has_path, has_url = entry.get("path") is not None, entry.get("url") is not None
        if has_path == has_url:
            raise doc.error(
                path,
                "needs exactly one of path or url",
                "path: ../app for a local repository, url: https://... for a remote one",
            )
        repo_path = None
        url = None
        if has_path:
            raw = f.string(doc, path + ("path",), entry["path"], "a directory")
            repo_path = (root / os.path.expanduser(raw)).resolve()
        else:
            url = f.string(doc, path + ("url",), entry["url"], "a git URL")
            if url.startswith("-") or url.lower().startswith("ext::"):
                raise doc.error(
                    path + ("url",),
                    "is not an acceptable git URL",
                    "use https://, ssh://, git@host:path or file:// URLs",
                )
        branch = f.string(doc, path + ("branch",), entry.get("branch", "main"), "a branch name")
        if branch.startswith("-") or not branch or any(c in branch for c in " ~^:?*[\\"):
            raise doc.error(path + ("branch",), f"{branch!r} is not a valid branch name")
        interval = 60.0
        if "fetch_interval" in entry:
            interval = f.duration(doc, path + ("fetch_interval",), entry["fetch_interval"])
        repos.append(
            RepoConfig(name=name, path=repo_path, url=url, branch=branch, fetch_interval=interval)
        )
    return repos


def _operators(doc: Document, value: Any) -> list[Operator]:
    items = f.sequence(doc, ("operators",), value, "operators")
    operators: list[Operator] = []
    seen: set[str] = set()
    key_owners: dict[str, str] = {}
    email_owners: dict[str, str] = {}
    for i, item in enumerate(items):
        path = ("operators", i)
        entry = f.mapping(doc, path, item, "an operator")
        f.check_keys(doc, path, entry, OPERATOR_KEYS)
        name = f.name(
            doc,
            path + ("name",),
            f.require(doc, path, entry, "name", "give the operator a name"),
            "operator name",
        )
        if name in seen:
            raise doc.error(path + ("name",), f"operator {name!r} is listed twice")
        seen.add(name)
        roles = f.string_list(doc, path + ("roles",), entry.get("roles") or [], "a role")
        for j, role in enumerate(roles):
            if role not in ROLES:
                raise doc.error(
                    path + ("roles", j), f"unknown role {role!r}", "roles are " + ", ".join(ROLES)
                )
        operators.append(
            Operator(
                name=name,
                roles=tuple(roles),
                keys=_keys(doc, path + ("keys",), entry.get("keys") or [], key_owners, name),
                emails=_emails(
                    doc, path + ("emails",), entry.get("emails") or [], email_owners, name
                ),
                os_users=tuple(
                    f.string_list(
                        doc, path + ("os_users",), entry.get("os_users") or [], "a user name"
                    )
                ),
            )
        )
    return operators


def _emails(
    doc: Document, path: tuple[str | int, ...], value: Any, owners: dict[str, str], name: str
) -> tuple[str, ...]:
    """An operator's git emails as identities (core.text.email_identity: `Alice+x@Example.COM` is
    `alice@example.com`), each one operator's only: it decides who may not approve a change."""
    emails = []
    for j, email in enumerate(f.string_list(doc, path, value, "an email")):
        who = email_identity(email)
        if owners.get(who, name) != name:
            raise doc.error(
                path + (j,),
                f"{email!r} is the identity {who!r}, already {owners[who]}'s",
                "each git identity belongs to one operator",
            )
        owners[who] = name
        emails.append(who)
    return tuple(emails)


def _keys(
    doc: Document, path: tuple[str | int, ...], value: Any, owners: dict[str, str], name: str
) -> tuple[str, ...]:
    """An operator's SSH public keys, each checked (type, data) and owned by one operator only:
    a key is who logs in over SSH, so a key shared by two operators would be ambiguous."""
    from core.serve.keys import KeyProblem, parse_public_key

    keys = f.string_list(doc, path, value, "an SSH public key")
    for j, key in enumerate(keys):
        try:
            _, fp = parse_public_key(key)
        except KeyProblem as exc:
            raise doc.error(
                path + (j,),
                f"not an SSH public key: {exc}",
                "paste one line of a .pub file, e.g. ssh-ed25519 AAAA... you@host",
            ) from None
        if fp in owners:
            raise doc.error(
                path + (j,),
                f"this key ({fp}) is already {owners[fp]}'s",
                "each operator logs in with their own key",
            )
        owners[fp] = name
    return tuple(keys)


def _runners(doc: Document, value: Any) -> list[Runner]:
    if value is None:
        return [Runner("local")]
    items = f.sequence(doc, ("runners",), value, "runners")
    runners: list[Runner] = []
    for i, item in enumerate(items):
        path = ("runners", i)
        entry = f.mapping(doc, path, item, "a runner")
        f.check_keys(doc, path, entry, RUNNER_KEYS)
        name = f.name(
            doc,
            path + ("name",),
            f.require(doc, path, entry, "name", "give the runner a name"),
            "runner name",
        )
        if any(r.name == name for r in runners):
            raise doc.error(
                path + ("name",), f"runner {name!r} is listed twice", "names must be unique"
            )
        if "ssh" not in entry and "workdir" in entry:
            raise doc.error(
                path + ("workdir",),
                "only a remote runner has a workdir",
                "add ssh: user@host, or remove workdir",
            )
        runners.append(_remote_runner(doc, path, entry, name) if "ssh" in entry else Runner(name))
    if not any(r.name == "local" for r in runners):
        runners.insert(0, Runner("local"))
    return runners


def _remote_runner(
    doc: Document, path: tuple[str | int, ...], entry: dict[str, Any], name: str
) -> Runner:
    """A runner with `ssh: user@host[:port]` and an optional remote `workdir`."""
    from core.sshclient import parse_address  # asyncssh is imported only by workspaces that use it

    if name == "local" or entry.get("local") is not None:
        raise doc.error(
            path + ("ssh",),
            "a runner is either local or ssh, not both",
            "give the remote runner its own name, e.g. name: build-box",
        )
    text = f.string(doc, path + ("ssh",), entry["ssh"], "user@host[:port]")
    address = parse_address(text)
    if address is None:
        raise doc.error(
            path + ("ssh",),
            f"{text!r} is not user@host[:port]",
            "e.g. ssh: deploy@build-1.example.com or ssh: ci@10.0.0.5:2222",
        )
    workdir = "~/.ahead-runner"
    if entry.get("workdir") is not None:
        workdir = f.string(doc, path + ("workdir",), entry["workdir"], "a directory on the runner")
        if not (workdir.startswith("/") or workdir == "~" or workdir.startswith("~/")) or any(
            c in workdir for c in "\n\r"
        ):
            raise doc.error(
                path + ("workdir",),
                f"{workdir!r} is not an absolute path",
                "use /path/on/the/runner or ~/dir (in the runner user's home)",
            )
    return Runner(name, "ssh", address, workdir)


def _settings(doc: Document, value: Any, root: Path) -> Settings:
    path: tuple[str, ...] = ("settings",)
    entry = f.mapping(doc, path, value, "settings")
    f.check_keys(doc, path, entry, SETTINGS_KEYS)
    state = root / ".ahead"
    if "state_dir" in entry:
        state = (
            root
            / os.path.expanduser(
                f.string(doc, path + ("state_dir",), entry["state_dir"], "a directory")
            )
        ).resolve()
    kwargs: dict[str, Any] = {}
    if "max_parallel_runs" in entry:
        kwargs["max_parallel_runs"] = f.positive_int(
            doc, path + ("max_parallel_runs",), entry["max_parallel_runs"], "runs at once"
        )
    if "keep_logs_days" in entry:
        kwargs["keep_logs_days"] = f.positive_int(
            doc, path + ("keep_logs_days",), entry["keep_logs_days"], "days"
        )
    if "drift_parallel" in entry:
        kwargs["drift_parallel"] = f.positive_int(
            doc, path + ("drift_parallel",), entry["drift_parallel"], "checks at once"
        )
    if "artifact_max_bytes" in entry:
        kwargs["artifact_max_bytes"] = f.size(
            doc, path + ("artifact_max_bytes",), entry["artifact_max_bytes"]
        )
    for key in (
        "step_timeout",
        "cancel_grace",
        "poll_interval",
        "drift_interval",
        "drift_revision_interval",
        "drift_timeout",
        "lease_timeout",
    ):
        if key in entry:
            kwargs[key] = f.duration(doc, path + (key,), entry[key])
    if "sandbox" in entry:
        kwargs["sandbox"] = f.switch(
            doc,
            path + ("sandbox",),
            entry["sandbox"],
            "write `sandbox: off` only to run untrusted steps without isolation",
        )
    return Settings(state_dir=state, **kwargs)


def read(file: Path) -> Workspace:
    """Read and validate a workspace file.

    Raises:
        ConfigError: the file is missing, unreadable or invalid.
    """
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(str(file), None, "", f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(file),
            raw.count(b"\n", 0, exc.start) + 1,
            "",
            f"not UTF-8 text (byte {exc.start})",
            "save the file as UTF-8",
        ) from None
    return parse(text, file.resolve())


class WorkspaceWatch:
    """ahead.yml as it says now, for checks that must not use a copy read at start-up (who may
    act, with which roles). Read again only when the file's inode, size or mtime changed, so a
    check per command costs one stat.

    A file that cannot be read or is invalid fails closed: `current` raises, and the copy read
    before is never used again to grant anything until the file is fixed.
    """

    def __init__(self, ws: Workspace) -> None:
        self.file = ws.file
        self._ws = ws
        self._stamp: tuple[int, int, int, int] | None = None
        try:
            self._stamp = _stamp(ws.file)
        except OSError:
            pass  # read (and fail) at the first check

    def current(self) -> Workspace:
        """The workspace as the file says now.

        Raises:
            PermissionDenied: the file is unreadable or invalid (the message says why and where).
        """
        try:
            stamp = _stamp(self.file)
            if stamp != self._stamp:
                self._ws, self._stamp = read(self.file), stamp
        except (OSError, CoreError) as exc:
            self._stamp = None  # read it again next time, whatever its stamp
            what = exc.render() if isinstance(exc, ConfigError) else str(exc)
            raise PermissionDenied(
                f"refused: {self.file} cannot be used to check who you are "
                f"({what}); fix the file and try again"
            ) from None
        return self._ws


def _stamp(file: Path) -> tuple[int, int, int, int]:
    st = file.stat()
    return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns


def find(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Find ahead.yml: `explicit` dir or file, else $AHEAD_WORKSPACE, else cwd and its parents.

    Raises:
        WorkspaceNotFound: nothing found; the message says where it looked.
    """
    for source, given in (
        ("--workspace", explicit),
        ("AHEAD_WORKSPACE", os.environ.get("AHEAD_WORKSPACE")),
    ):
        if given:
            candidate = Path(given).expanduser()
            if candidate.is_dir():
                candidate = candidate / FILENAME
            if candidate.is_file():
                return candidate.resolve()
            raise WorkspaceNotFound(
                f"{source} points at {given}, which has no {FILENAME} "
                f"(create one with: ahead init {given})"
            )
    here = (cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILENAME
        if candidate.is_file():
            return candidate
    raise WorkspaceNotFound(
        f"no {FILENAME} in {here} or its parents "
        "(use --workspace DIR, set AHEAD_WORKSPACE, or run: ahead init)"
    )
