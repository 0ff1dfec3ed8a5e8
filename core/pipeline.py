"""Pipelines: `.ahead/pipeline.yml` inside a repo, read at the commit being run.

Parses and validates the file into frozen dataclasses and decides which stages a run executes:
main runs what `on.main` names (every stage by default); any other branch runs what
`on.branches` names (by default the stages that deploy nowhere) and never a stage that deploys.
Depends on core.yamlfile and core.fields only.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import fields as f
from core.yamlfile import Document, load

PIPELINE_PATH = ".ahead/pipeline.yml"

TOP_KEYS = ["on", "stages", "drift", "env"]
STAGE_KEYS = ["name", "environment", "steps", "timeout", "env", "runner", "secrets", "sandbox"]
STEP_KEYS = ["name", "run", "timeout", "env", "artifact", "artifacts", "secrets"]
ON_KEYS = ["main", "branches"]
DRIFT_KEYS = ["name", "files", "live", "host", "command", "parse", "every", "timeout", "env"]
DRIFT_PARSERS = ("exit-code", "terraform", "ansible")


@dataclass(frozen=True)
class Step:
    """One command. `argv` is run as is; a string `run:` becomes ``["sh", "-c", text]``."""

    name: str
    argv: tuple[str, ...]
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # names from ahead.yml's secrets:, given to this step

    @property
    def display(self) -> str:
        if len(self.argv) == 3 and self.argv[:2] == ("sh", "-c"):
            return self.argv[2]
        return " ".join(self.argv)


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[Step, ...]
    environment: str | None = None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    runner: str | None = None
    secrets: tuple[str, ...] = ()  # names from ahead.yml's secrets:, given to every step
    sandbox: bool = False  # a deploying stage's steps isolated too (core/sandbox.py)

    @property
    def deploys(self) -> bool:
        return self.environment is not None


@dataclass(frozen=True)
class DriftSpec:
    """A drift target of one environment: a file tree or a command (see core/drift/).

    files: `path` in the repo (at the deployed commit) against the directory `live`, on this
    machine or on `host` (``user@host[:port]``) over SSH. command: `argv` run in a checkout of
    the deployed commit; `parse` reads its result (exit code 0 in sync, 2 drifted, else unknown;
    terraform and ansible output are summarised)."""

    name: str
    kind: str
    path: str = ""
    live: str = ""
    host: str | None = None
    argv: tuple[str, ...] = ()
    parse: str = "exit-code"
    every: float | None = None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    file: str
    stages: tuple[Stage, ...]
    main_stages: tuple[str, ...]
    branch_stages: tuple[str, ...]
    digest: str
    env: dict[str, str] = field(default_factory=dict)
    drift: dict[str, tuple[DriftSpec, ...]] = field(default_factory=dict)

    def selected(self, on_main: bool) -> list[Stage]:
        """The stages a run on main (or on another branch) executes, in order."""
        names = self.main_stages if on_main else self.branch_stages
        return [stage for stage in self.stages if stage.name in names]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def parse(
    text: str,
    file: str = PIPELINE_PATH,
    environments: tuple[str, ...] | None = None,
    secrets: tuple[str, ...] | None = None,
    runners: tuple[str, ...] | None = None,
    secret_scope: Callable[[str, str | None, bool], str | None] | None = None,
) -> Pipeline:
    """Validate a pipeline file.

    Args:
        text: the file's contents.
        file: how to name the file in errors (e.g. ``web-api@3f2a1c9:.ahead/pipeline.yml``).
        environments: the workspace's environments; stages may only deploy to these.
        secrets: the workspace's secret names; stages and steps may only ask for these.
        runners: the workspace's runner names; a stage's `runner:` must be one of them.
        secret_scope: why a secret may not go to a stage (`ahead check`): called with the
            secret's name, the stage's environment and whether branch runs execute the stage;
            a reason refuses the file at that secret.

    Raises:
        ConfigError: naming file, line and field.
    """
    doc = load(text, file)
    top = f.mapping(doc, (), doc.data if doc.data is not None else {}, "the pipeline")
    f.check_keys(doc, (), top, TOP_KEYS)
    stages_value = f.require(
        doc, (), top, "stages", "add a list of stages, each with a name and steps"
    )
    items = f.sequence(doc, ("stages",), stages_value, "stages")
    if not items:
        raise doc.error(("stages",), "must list at least one stage")
    stages: list[Stage] = []
    for i, item in enumerate(items):
        stage = _stage(doc, i, item, environments, secrets, runners)
        if any(s.name == stage.name for s in stages):
            raise doc.error(("stages", i, "name"), f"stage name {stage.name!r} is used twice")
        stages.append(stage)
    main, branches = _on(doc, top.get("on"), stages)
    if secret_scope is not None:
        _check_scopes(doc, stages, branches, secret_scope)
    env = f.env_map(doc, ("env",), top["env"]) if top.get("env") is not None else {}
    drift = _drift(doc, top.get("drift"), environments, env)
    return Pipeline(
        file=file,
        stages=tuple(stages),
        main_stages=main,
        branch_stages=branches,
        digest=digest(text),
        env=env,
        drift=drift,
    )


def _drift(
    doc: Document, value: Any, environments: tuple[str, ...] | None, env: dict[str, str]
) -> dict[str, tuple[DriftSpec, ...]]:
    """`drift:` maps environment names to one target (a mapping) or a list of targets. Command
    targets get the pipeline's top-level `env:` under their own, as steps do."""
    by_env = f.mapping(doc, ("drift",), value or {}, "environment: drift target(s)")
    result: dict[str, tuple[DriftSpec, ...]] = {}
    for env_name, targets in by_env.items():
        if environments is not None and env_name not in environments:
            raise doc.error(
                ("drift", env_name),
                f"no environment named {env_name!r}",
                "drift is keyed by the workspace's environments: " + ", ".join(environments),
            )
        items = targets if isinstance(targets, list) else [targets]
        specs: list[DriftSpec] = []
        for i, item in enumerate(items):
            path: tuple[str | int, ...] = (
                ("drift", env_name, i) if isinstance(targets, list) else ("drift", env_name)
            )
            spec = _drift_spec(doc, path, item)
            if spec.kind == "command" and env:
                spec = DriftSpec(**{**spec.__dict__, "env": {**env, **spec.env}})
            if spec.name == "revision" or any(s.name == spec.name for s in specs):
                raise doc.error(
                    path,
                    f"drift target name {spec.name!r} is used twice"
                    if spec.name != "revision"
                    else '"revision" is the built-in target',
                    "give each target its own name:",
                )
            specs.append(spec)
        result[env_name] = tuple(specs)
    return result


def _drift_spec(doc: Document, path: tuple[str | int, ...], item: Any) -> DriftSpec:
    entry = f.mapping(doc, path, item, "a drift target with files: and live:, or command:")
    f.check_keys(doc, path, entry, DRIFT_KEYS)
    kinds = [k for k in ("files", "command") if entry.get(k) is not None]
    if len(kinds) != 1:
        raise doc.error(
            path,
            "give exactly one of files: or command:",
            "files: a path in the repo, with live: the directory it is deployed to; "
            "or command: e.g. terraform plan -detailed-exitcode",
        )
    every = (
        f.duration(doc, path + ("every",), entry["every"])
        if entry.get("every") is not None
        else None
    )
    timeout = (
        f.duration(doc, path + ("timeout",), entry["timeout"])
        if entry.get("timeout") is not None
        else None
    )
    env = f.env_map(doc, path + ("env",), entry["env"]) if entry.get("env") is not None else {}
    name = (
        f.name(doc, path + ("name",), entry["name"], "target name")
        if entry.get("name") is not None
        else None
    )
    if kinds[0] == "files":
        for key in ("parse",):
            if entry.get(key) is not None:
                raise doc.error(
                    path + (key,), f"{key}: applies to command: targets only", f"remove {key}:"
                )
        rel = (
            f.string(doc, path + ("files",), entry["files"], "a path in the repo")
            .strip()
            .strip("/")
            or "."
        )
        if ".." in rel.split("/") or rel.startswith("-"):
            raise doc.error(
                path + ("files",),
                f"{rel!r} is outside the repo",
                "give a path inside the repo, without ..",
            )
        live = f.string(
            doc,
            path + ("live",),
            f.require(doc, path, entry, "live", "add live: the directory this path is deployed to"),
            "a directory",
        )
        host = None
        if entry.get("host") is not None:
            host = f.string(doc, path + ("host",), entry["host"], "user@host[:port]")
            from core.sshclient import parse_address

            if parse_address(host) is None:
                raise doc.error(
                    path + ("host",),
                    f"{host!r} is not user@host[:port]",
                    "e.g. host: deploy@web1:22",
                )
            if not live.startswith("/"):
                raise doc.error(
                    path + ("live",), "must be an absolute path on the host", "e.g. live: /srv/www"
                )
        return DriftSpec(
            name=name or f"files:{rel}",
            kind="files",
            path=rel,
            live=live,
            host=host,
            every=every,
            timeout=timeout,
            env=env,
        )
    for key in ("live", "host"):
        if entry.get(key) is not None:
            raise doc.error(
                path + (key,), f"{key}: applies to files: targets only", f"remove {key}:"
            )
    command = entry["command"]
    if isinstance(command, list):
        if not command:
            raise doc.error(path + ("command",), "the command list is empty")
        argv = tuple(
            f.string(doc, path + ("command", k), part, "text") for k, part in enumerate(command)
        )
    else:
        text = f.string(doc, path + ("command",), command, "a command")
        if not text.strip():
            raise doc.error(path + ("command",), "the command is empty")
        argv = ("sh", "-c", text)
    parse_as = "exit-code"
    if entry.get("parse") is not None:
        parse_as = f.string(
            doc, path + ("parse",), entry["parse"], "exit-code, terraform or ansible"
        )
        if parse_as not in DRIFT_PARSERS:
            raise doc.error(
                path + ("parse",),
                f"unknown parser {parse_as!r}",
                "use one of: " + ", ".join(DRIFT_PARSERS),
            )
    return DriftSpec(
        name=name or "command",
        kind="command",
        argv=argv,
        parse=parse_as,
        every=every,
        timeout=timeout,
        env=env,
    )


def _stage(
    doc: Document,
    i: int,
    item: Any,
    environments: tuple[str, ...] | None,
    secrets: tuple[str, ...] | None,
    runners: tuple[str, ...] | None,
) -> Stage:
    path: tuple[str | int, ...] = ("stages", i)
    entry = f.mapping(doc, path, item, "a stage with name and steps")
    f.check_keys(doc, path, entry, STAGE_KEYS)
    name = f.name(
        doc,
        path + ("name",),
        f.require(doc, path, entry, "name", "give the stage a name"),
        "stage name",
    )
    environment = None
    if entry.get("environment") is not None:
        environment = f.name(doc, path + ("environment",), entry["environment"], "environment name")
        if environments is not None and environment not in environments:
            raise doc.error(
                path + ("environment",),
                f"no environment named {environment!r} in the workspace",
                "use one of: " + ", ".join(environments),
            )
    steps_value = f.require(doc, path, entry, "steps", "add steps, e.g. steps: [{run: make test}]")
    step_items = f.sequence(doc, path + ("steps",), steps_value, "steps")
    if not step_items:
        raise doc.error(path + ("steps",), "must list at least one step")
    steps = tuple(
        _step(doc, path + ("steps", j), step, j, secrets) for j, step in enumerate(step_items)
    )
    timeout = (
        f.duration(doc, path + ("timeout",), entry["timeout"])
        if entry.get("timeout") is not None
        else None
    )
    env = f.env_map(doc, path + ("env",), entry["env"]) if entry.get("env") is not None else {}
    runner = None
    if entry.get("runner") is not None:
        runner = f.name(doc, path + ("runner",), entry["runner"], "runner name")
        if runners is not None and runner not in runners:
            close = difflib.get_close_matches(runner, runners, n=1, cutoff=0.6)
            raise doc.error(
                path + ("runner",),
                f"no runner named {runner!r} in the workspace",
                f'did you mean "{close[0]}"?' if close else "runners: " + ", ".join(runners),
            )
    sandbox = False
    if entry.get("sandbox") is not None:
        sandbox = f.switch(
            doc, path + ("sandbox",), entry["sandbox"], "sandbox: true isolates this stage's steps"
        )
        if sandbox and runner is not None:
            raise doc.error(
                path + ("sandbox",),
                "the sandbox isolates local steps only",
                "drop `sandbox:` or `runner:` from this stage",
            )
    return Stage(
        name=name,
        steps=steps,
        environment=environment,
        timeout=timeout,
        env=env,
        runner=runner,
        secrets=_secret_names(doc, path, entry, secrets),
        sandbox=sandbox,
    )


def _step(
    doc: Document,
    path: tuple[str | int, ...],
    item: Any,
    index: int,
    secrets: tuple[str, ...] | None = None,
) -> Step:
    if isinstance(item, str):
        item = {"run": item}
    entry = f.mapping(doc, path, item, "a step with run:")
    f.check_keys(doc, path, entry, STEP_KEYS)
    run = f.require(
        doc, path, entry, "run", 'add the command, e.g. run: "make test" or run: [make, test]'
    )
    if isinstance(run, list):
        if not run:
            raise doc.error(path + ("run",), "the command list is empty", "e.g. run: [make, test]")
        argv = tuple(f.string(doc, path + ("run", k), part, "text") for k, part in enumerate(run))
    else:
        text = f.string(doc, path + ("run",), run, "a command")
        if not text.strip():
            raise doc.error(path + ("run",), "the command is empty")
        argv = ("sh", "-c", text)
    name = (
        f.string(doc, path + ("name",), entry["name"], "text")
        if entry.get("name") is not None
        else ""
    )
    if not name:
        first = argv[2] if argv[:2] == ("sh", "-c") else " ".join(argv)
        name = first.strip().splitlines()[0][:60] if first.strip() else f"step {index + 1}"
    timeout = (
        f.duration(doc, path + ("timeout",), entry["timeout"])
        if entry.get("timeout") is not None
        else None
    )
    env = f.env_map(doc, path + ("env",), entry["env"]) if entry.get("env") is not None else {}
    artifacts: list[str] = []
    for key in ("artifact", "artifacts"):
        if entry.get(key) is not None:
            for k, rel in enumerate(
                f.string_list(doc, path + (key,), entry[key], "a path in the checkout")
            ):
                if rel.startswith("/") or ".." in rel.split("/"):
                    raise doc.error(
                        path + (key, k),
                        f"{rel!r} is outside the checkout",
                        "give a path relative to the repo, without ..",
                    )
                artifacts.append(rel)
    return Step(
        name=name,
        argv=argv,
        timeout=timeout,
        env=env,
        artifacts=tuple(artifacts),
        secrets=_secret_names(doc, path, entry, secrets),
    )


def _check_scopes(
    doc: Document,
    stages: list[Stage],
    branches: tuple[str, ...],
    scope: Callable[[str, str | None, bool], str | None],
) -> None:
    for i, stage in enumerate(stages):
        lists: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = [
            (("stages", i), stage.secrets)
        ]
        lists += [(("stages", i, "steps", j), step.secrets) for j, step in enumerate(stage.steps)]
        for path, names in lists:
            for k, name in enumerate(names):
                reason = scope(name, stage.environment, stage.name in branches)
                if reason is not None:
                    raise doc.error(
                        path + ("secrets", k),
                        f"stage {stage.name!r} may not have it: {reason}",
                        "remove it from this stage, or widen the secret's scope in ahead.yml",
                    )


def _secret_names(
    doc: Document, path: tuple[str | int, ...], entry: dict[str, Any], known: tuple[str, ...] | None
) -> tuple[str, ...]:
    """`secrets: [NAME, ...]`: names of secrets from ahead.yml (checked when `known` is given)."""
    if entry.get("secrets") is None:
        return ()
    names = f.string_list(
        doc, path + ("secrets",), entry["secrets"], "a secret name from ahead.yml"
    )
    for k, secret in enumerate(names):
        if known is not None and secret not in known:
            raise doc.error(
                path + ("secrets", k),
                f"no secret named {secret!r} in the workspace",
                "declare it in ahead.yml under secrets: (known: "
                + (", ".join(known) or "none")
                + ")",
            )
    return tuple(names)


def _on(doc: Document, value: Any, stages: list[Stage]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = [s.name for s in stages]
    by_name = {s.name: s for s in stages}
    main = tuple(names)
    branches = tuple(s.name for s in stages if not s.deploys)
    if value is None:
        return main, branches
    entry = f.mapping(doc, ("on",), value, "main: and branches:")
    f.check_keys(doc, ("on",), entry, ON_KEYS)

    def pick(key: str) -> tuple[str, ...] | None:
        if key not in entry:
            return None
        raw = entry[key]
        if raw in ("all", "none") or raw is None:
            return tuple(names) if raw == "all" else ()
        chosen = f.string_list(doc, ("on", key), raw, "a stage name")
        for k, stage_name in enumerate(chosen):
            if stage_name not in by_name:
                raise doc.error(
                    ("on", key, k),
                    f"no stage named {stage_name!r}",
                    "stages are: " + ", ".join(names),
                )
        return tuple(chosen)

    main = pick("main") or (() if "main" in entry else main)
    picked = pick("branches")
    if picked is not None:
        if entry["branches"] == "all":
            picked = tuple(n for n in picked if not by_name[n].deploys)
        for k, stage_name in enumerate(picked):
            if by_name[stage_name].deploys:
                raise doc.error(
                    ("on", "branches", k),
                    f"stage {stage_name!r} deploys to "
                    f"{by_name[stage_name].environment}; branches never run a stage that deploys",
                    "remove it from on.branches",
                )
        branches = picked
    return main, branches
