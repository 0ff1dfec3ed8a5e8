"""Terminal escapes from repo and operator content never reach a terminal.

`ahead check` output, the foreground engine's log, a refusal that quotes another operator's
reject comment: real subprocesses, checked byte for byte. A static check keeps core/ from writing
to the terminal by any other way than the CLI's inert output (core.text.inert_output).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from core.engine import Engine
from tests.conftest import commit, make_workspace
from tests.core.test_approvals import decide, make_ws, waiting_change

ROOT = Path(__file__).parents[2]
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # "copy `rm -rf ~` to the clipboard"
HOSTILE = OSC52 + "\x1b[2J\x9b31m\u202eevil\u202c"
DANGER = re.compile(
    rb"\x1b|\x07|\xc2[\x80-\x9f]|\xe2\x80[\xae\xab\xaa\xac\xad]|\xe2\x81[\xa6-\xa9]"
)


def ahead(ws_root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws_root), *args],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def assert_inert(data: bytes) -> None:
    found = DANGER.search(data)
    assert found is None, f"escape bytes {found.group()!r} reach the terminal in {data!r}"


def test_check_output_of_a_hostile_pipeline_key_is_inert(tmp_path: Path) -> None:
    pipeline = f'stages:\n  - name: build\n    "{HOSTILE}": 1\n    steps:\n      - run: echo hi\n'
    pipeline = pipeline.replace("\x1b", "\\e").replace("\x07", "\\a").replace("\x9b", "\\x9b")
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    done = ahead(ws.root, "check")
    assert done.returncode == 1 and b"unknown key" in done.stdout, done  # the key is quoted ...
    assert_inert(done.stdout + done.stderr)  # ... without its escapes


def test_foreground_engine_log_is_inert(tmp_path: Path) -> None:
    bad = f'stages:\n  - name: build\n    "{HOSTILE}": 1\n    steps:\n      - run: echo hi\n'
    bad = bad.replace("\x1b", "\\e").replace("\x07", "\\a").replace("\x9b", "\\x9b")
    ws = make_workspace(tmp_path / "ws", {"app": bad})
    engine = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 10
        while (
            b"engine: not running" in ahead(ws.root, "status").stdout
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        commit(ws.repo_dir(ws.repo("app")), HOSTILE + " subject", files={"x": "1"})
        while (
            b'"failed"' not in ahead(ws.root, "runs", "--json").stdout
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    finally:
        engine.terminate()
        out, err = engine.communicate(timeout=20)
    assert b"pipeline invalid" in err and b"unknown key" in err, (
        err
    )  # the hostile key is logged ...
    assert_inert(out + err)  # ... inert


async def test_a_reject_comment_quoted_in_another_operators_refusal_is_inert(
    tmp_path: Path,
) -> None:
    ws = make_ws(tmp_path / "ws")
    async with Engine(ws) as engine:
        sha = commit(ws.repo_dir(ws.repo("service")), "x", author="alice")
        change = await waiting_change(engine, sha)
        assert decide(ws, change["id"], "bob", "reject", "no " + HOSTILE).ok
    refused = ahead(ws.root, "--as", "carol", "approve", str(change["id"]))
    assert refused.returncode == 3 and b"rejected by bob: no " in refused.stderr, refused
    assert_inert(refused.stdout + refused.stderr)
    assert_inert(decide(ws, change["id"], "carol").message.encode())


# -- static: core/ reaches a terminal only through the CLI's inert output -------------------------

CLI_MODULES = {
    "core/cli/commands.py",
    "core/cli/drift.py",
    "core/cli/listings.py",
    "core/serve/listing.py",
    "core/demo.py",
    # runs as a step's parent inside the sandbox: what it prints is the step's log,
    # which is stored masked and shown through inert like any step output
    "core/sandbox_launch.py",
}


def test_core_writes_to_the_terminal_only_from_cli_modules_under_inert_output() -> None:
    """print() only in the CLI's modules (main wraps them in inert_output); no direct writes to
    sys.stdout/sys.stderr or fds 1/2 anywhere in core/ (the repos' own scripts aside)."""
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("core/demo_repos/") or rel == "core/text.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name == "print" and rel not in CLI_MODULES:
                offenders.append(f"{rel}:{node.lineno}: print outside the CLI")
            if name in (
                "sys.stdout.write",
                "sys.stderr.write",
                "sys.__stdout__.write",
                "sys.__stderr__.write",
                "sys.stdout.buffer.write",
                "sys.stderr.buffer.write",
            ):
                offenders.append(f"{rel}:{node.lineno}: {name}")
            if name == "os.write" and node.args and ast.unparse(node.args[0]) in ("1", "2"):
                offenders.append(f"{rel}:{node.lineno}: os.write to a terminal fd")
    assert offenders == []
    cli = (ROOT / "core/cli/commands.py").read_text()
    assert "with inert_output():" in cli and "InertFormatter(LOG_FORMAT)" in cli
