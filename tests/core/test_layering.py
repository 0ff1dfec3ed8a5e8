"""core is the product without a screen: it never imports textual, rich, tui or themes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _core_modules() -> list[str]:
    """Every module of the core package (the demo's repo scripts are package data, not modules)."""
    names = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "demo_repos" in rel.parts or rel.name == "__main__":  # __main__ runs a program
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return names


def test_core_imports_no_ui() -> None:
    """Import every core module in a fresh interpreter: none may pull in a UI package."""
    modules = _core_modules()
    assert len(modules) > 30, modules  # the walk found the package
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui', 'themes')]\n"
        "print(','.join(sorted(bad)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == ""


def test_sqlite_and_gitpython_are_confined() -> None:
    for path in ROOT.glob("core/**/*.py"):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        if "import sqlite3" in text:
            assert rel.startswith("core/store/"), rel
        if "import git as" in text or "\nimport git\n" in text or "from git import" in text:
            assert rel == "core/gitio.py", rel


FRONT_ENDS = (
    "core/cli/__init__.py",
    "core/cli/commands.py",
    "core/cli/drift.py",
    "core/cli/listings.py",
    "core/serve/listing.py",
    "core/api/session.py",
)


def test_front_ends_hold_no_sql() -> None:
    """The CLI, the SSH listings and the console session read and write through the door
    (core.api): no SQL of their own (issue 12: cmd_audit, step_names, the session's reads)."""
    for rel in FRONT_ENDS:
        text = (ROOT / rel).read_text()
        for needle in ("SELECT ", "INSERT ", "UPDATE ", ".query(", ".execute("):
            assert needle not in text, (rel, needle)


def test_the_ssh_listings_do_not_import_the_command_line(tmp_path: Path) -> None:
    """`ssh host status` runs core.serve.listing: it must not import core.cli.commands, which imports the
    server (the cli -> serve.server -> serve.session -> serve.listing -> cli cycle)."""
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws")
    code = (
        "import sys\nfrom core.serve import listing\n"
        f"code = listing.main([{str(ws.file)!r}, 'alice', 'status', '--json'])\n"
        "print('CLI', 'core.cli.commands' in sys.modules, code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "CLI False 0", done.stdout + done.stderr
