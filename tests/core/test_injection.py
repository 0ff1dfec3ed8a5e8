"""Commit metadata is data, never code: the hostile corpus (tests/hostile.py) through real commits,
branches, tags, triggers, pipelines and every CLI listing.

One workspace gets a commit per hostile string (as subject, body, author name and email), a
branch and a tag per string where git takes the name, loose ref files git would refuse (leading
`-`), and a pipeline whose step name and log output are hostile too. The engine runs every
branch; the operator triggers tags and hostile refs and commit ids. Then: the canary file never
exists, no option-like file (`--output=x`, `-ofoo`) appears, every branch's name reached its
steps verbatim through the environment, and no listing prints an escape sequence.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from core import cli, gitio
from core.engine import Engine
from core.errors import NotFound
from core.services import Actor, Services
from core.store.db import Store
from tests.conftest import make_workspace
from tests.core.helpers import TERMINAL, query, wait_for
from tests.hostile import OPTIONS, corpus, fill, leaks, write_raw_refs

ROOT = Path(__file__).parents[2]
PIPELINE = """\
stages:
  - name: show
    steps:
      - name: "\\e]52;c;aGk=\\a [bold red]step[/] $(touch {canary})"
        run: echo "subject=$AHEAD_SUBJECT"; echo "branch=$AHEAD_BRANCH"; echo "author=$AHEAD_AUTHOR"; printf '\\033]52;c;aGk=\\007 \\033[2J [@click=app.quit]log[/] \\302\\233 31m\\n'
      - run: [sh, -c, 'printf "%s\\n" "$AHEAD_REF"']
"""


def option_files(*dirs: Path) -> list[Path]:
    """Files an option smuggled into git (`--output=x`, `-ofoo`) would have created."""
    return [d / name for d in dirs for name in ("x", "foo", "ofoo") if (d / name).exists()]


async def drive(ws: Any, canary: Path, strings: list[str], tag_step: int) -> dict[str, Any]:
    repo = ws.repo_dir(ws.repo("app"))
    facts: dict[str, Any] = {}
    async with Engine(ws) as engine:
        made = fill(repo, strings)
        head = made.commits[-1][0]
        facts["raw_refs"] = write_raw_refs(
            repo, head, [o for o in OPTIONS if o.startswith("-")] + ["-x", ".hidden"]
        )
        svc_store = Store(ws.db_path, session="test:injection")
        with svc_store:
            svc = Services(ws, svc_store)
            triggered = refused = 0
            for tag in made.tags[::tag_step]:
                svc.trigger("app", Actor("tester", ("admin",)), ref=tag)
                triggered += 1
            for text in strings:  # as a ref and as a commit id: refused, or a real commit
                for kind in ("ref", "commit"):
                    try:
                        svc.trigger("app", Actor("tester", ("admin",)), **{kind: text})
                        triggered += 1
                    except NotFound:
                        refused += 1
        watched = [b for b in made.branches if gitio.valid_branch(b)]  # the engine ignores the rest
        expected = 1 + len(watched) + triggered
        rows = await wait_for(
            engine,
            "SELECT * FROM runs",
            check=lambda r: len(r) >= expected and all(x["status"] in TERMINAL for x in r),
            timeout=90,
        )
        logs = await query(
            engine, "SELECT s.run_id, l.line FROM log_lines l JOIN steps s ON s.id = l.step_id"
        )
    facts.update(
        made=made,
        watched=watched,
        runs=rows,
        logs=logs,
        triggered=triggered,
        refused=refused,
        head=head,
    )
    return facts


@pytest.fixture(scope="module")
def hostile_ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The workspace after the engine ran everything (built once for this module's tests)."""
    return build(tmp_path_factory.mktemp("injection"), tag_step=4)


def build(root: Path, tag_step: int) -> dict[str, Any]:
    canary = root / "canary"
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    saved = {k: os.environ.get(k) for k in [*env, "PATH"]}
    os.environ.update(env)
    try:
        ws = make_workspace(root / "ws", {"app": PIPELINE.format(canary=canary)})
        git_log = record_git_calls(root / "bin", root / "git-calls")
        strings = corpus(canary)
        facts = asyncio.run(drive(ws, canary, strings, tag_step=tag_step))
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return {"ws": ws, "canary": canary, "strings": strings, "git_log": git_log, **facts}


def record_git_calls(bin_dir: Path, log: Path) -> Path:
    """Put a `git` on PATH that records each argv (NUL-separated) and runs the real git. The
    test's own set-up calls (HOSTILE_TEST_HELPER set) are not recorded."""
    real = shutil.which("git")
    assert real is not None
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(f"""#!/bin/sh
if [ -z "$HOSTILE_TEST_HELPER" ]; then printf '%s\\0' "$@" >> {shlex.quote(str(log))}; printf '\\001END\\001\\0' >> {shlex.quote(str(log))}; fi
exec {shlex.quote(real)} "$@"
""")
    wrapper.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    log.touch()
    return log


def test_the_corpus_is_large_and_reached_git(hostile_ws: dict[str, Any]) -> None:
    made = hostile_ws["made"]
    counts = {
        "strings": len(hostile_ws["strings"]),
        "commits": len(made.commits),
        "branches": len(made.branches),
        "tags": len(made.tags),
        "names git refused": len(made.refused_names),
        "branches run": len(hostile_ws["watched"]),
        "raw refs": len(hostile_ws["raw_refs"]),
        "runs": len(hostile_ws["runs"]),
        "triggers refused": hostile_ws["refused"],
    }
    print("\n" + json.dumps(counts))
    assert counts["strings"] >= 200 and counts["commits"] == counts["strings"]
    assert counts["branches"] >= 40 and counts["raw refs"] >= 8


def test_nothing_executes_and_no_ref_becomes_an_option(hostile_ws: dict[str, Any]) -> None:
    ws, canary = hostile_ws["ws"], hostile_ws["canary"]
    assert not canary.exists()
    repo = ws.repo_dir(ws.repo("app"))
    assert option_files(repo, ws.root, ws.state_dir, Path.cwd()) == []
    statuses = {r["status"] for r in hostile_ws["runs"]}
    assert statuses == {"succeeded"}, [r for r in hostile_ws["runs"] if r["status"] != "succeeded"][
        :3
    ]
    branches = {r["branch"] for r in hostile_ws["runs"]}
    assert not any(b.startswith("-") or b.startswith(".") for b in branches)  # loose refs ignored
    assert set(hostile_ws["watched"]) <= branches
    ignored = set(hostile_ws["made"].branches) - set(hostile_ws["watched"])
    assert all(any(part.startswith("-") for part in name.split("/")) for name in ignored), ignored


def test_every_branch_name_reached_its_steps_verbatim(hostile_ws: dict[str, Any]) -> None:
    by_run: dict[int, list[str]] = {}
    for row in hostile_ws["logs"]:
        by_run.setdefault(row["run_id"], []).append(row["line"])
    for run in hostile_ws["runs"]:
        if run["ref"].startswith("refs/heads/h/") or run["ref"].startswith("refs/heads/x/"):
            lines = by_run[run["id"]]
            assert f"branch={run['branch']}" in lines and run["ref"] in lines, (
                run["branch"],
                lines,
            )
    main = next(r for r in hostile_ws["runs"] if r["branch"] == "main" and r["trigger"] == "commit")
    assert main["commit_sha"] == hostile_ws["head"]
    assert f"subject={hostile_ws['strings'][-1]}" in by_run[main["id"]][0]


@pytest.mark.slow
def test_every_tag_as_a_trigger(tmp_path: Path) -> None:
    """The CI run triggers every 4th tag; this one all of them."""
    facts = build(tmp_path, tag_step=1)
    assert not facts["canary"].exists() and {r["status"] for r in facts["runs"]} == {"succeeded"}
    assert facts["triggered"] >= len(facts["made"].tags)


LISTINGS = [
    ["status"],
    ["status", "--json"],
    ["runs", "--limit", "1000"],
    ["runs", "--json", "--limit", "1000"],
    ["pending", "app", "prod"],
    ["pending", "app", "prod", "--json"],
    ["changes", "--all"],
    ["changes", "--all", "--json"],
    ["audit", "--limit", "1000"],
    ["audit", "--json"],
    ["audit", "verify"],
]


def test_cli_listings_print_no_escape_sequence_and_no_bidi(
    hostile_ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = hostile_ws["ws"]
    run_ids = [r["id"] for r in hostile_ws["runs"]]
    commands = LISTINGS + [
        [c, str(i), *j]
        for i in run_ids[:: max(1, len(run_ids) // 12)]
        for c in ("show", "logs")
        for j in ([], ["--json"])
    ]
    printed = 0
    for command in commands:
        code = cli.main(["--workspace", str(ws.root), *command])
        out, err = capsys.readouterr()
        assert code == 0, (command, err)
        assert leaks(out) == [] and leaks(err) == [], (command, leaks(out), leaks(err))
        printed += len(out)
    shown = (
        cli.main(["--workspace", str(ws.root), "pending", "app", "prod"]),
        capsys.readouterr().out,
    )[1]
    assert "[@click=app.quit]quit[/]" in shown and "[bold red]ALERT[/]" in shown  # text, as written
    assert printed > 100_000
    assert not hostile_ws["canary"].exists()


# -- static checks -------------------------------------------------------------------------------

FORBIDDEN_CALLS = {
    "create_subprocess_shell",
    "system",
    "popen",
    "getoutput",
    "getstatusoutput",
    "spawnl",
    "spawnlp",
    "spawnv",
    "spawnvp",
    "execl",
    "execlp",
    "execv",
    "execvp",
}


def shell_uses(path: Path) -> list[str]:
    """Calls that hand a string to a shell: `shell=True` anywhere, `create_subprocess_shell`,
    `os.system`, `os.popen`, `subprocess.getoutput` and the os.spawn*/exec* family."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if name in FORBIDDEN_CALLS:
            found.append(f"{path.name}:{node.lineno}: {name}()")
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{path.name}:{node.lineno}: shell=")
    return found


def test_no_shell_anywhere_in_core_or_tui() -> None:
    offenders = [
        use
        for path in sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("tui/**/*.py")])
        if "demo_repos" not in path.parts
        for use in shell_uses(path)
    ]
    # the sandbox launcher becomes the step: it execs the step's own argv list (no shell added)
    offenders = [
        use
        for use in offenders
        if not (use.startswith("sandbox_launch.py:") and use.endswith(" execvp()"))
    ]
    assert offenders == []


def test_the_static_check_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, subprocess, asyncio\nos.system('x')\nos.popen('x')\n"
        "subprocess.run('x', shell=True)\nsubprocess.run('x', shell=flag)\n"
        "asyncio.create_subprocess_shell('x')\nsubprocess.run(['x'], shell=False)\n"
    )
    assert [u.split(": ", 1)[1] for u in shell_uses(bad)] == [
        "system()",
        "popen()",
        "shell=",
        "shell=",
        "create_subprocess_shell()",
    ]


def option_vocabulary() -> set[str]:
    """Every option core/ itself writes (string constants starting with -, and the constant
    part before `=` of f-strings like f"--format={...}")."""
    words: set[str] = set()
    for path in ROOT.glob("core/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("-")
            ):
                words.add(node.value.split("=", 1)[0])
            elif (
                isinstance(node, ast.JoinedStr)
                and node.values
                and isinstance(node.values[0], ast.Constant)
            ):
                head = str(node.values[0].value)
                if head.startswith("-"):
                    words.add(head.split("=", 1)[0])
    return words


def test_no_git_call_took_repo_data_as_an_option(hostile_ws: dict[str, Any]) -> None:
    """Every git argv the engine and services ran (recorded by a git wrapper on PATH): anything
    option-like that core/ does not write itself comes after `--end-of-options` or `--`."""
    vocabulary = option_vocabulary()
    calls = [c for c in hostile_ws["git_log"].read_bytes().split(b"\x01END\x01\0") if c]
    assert len(calls) > 300
    bad = []
    for raw in calls:
        argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]
        for word in argv:
            if word in ("--end-of-options", "--"):
                break
            if word.startswith("-") and word.split("=", 1)[0] not in vocabulary:
                bad.append(argv)
    assert bad == [], bad[:5]
