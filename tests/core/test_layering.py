"""core is the product without a screen: it never imports textual, rich, tui or themes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_core_imports_no_ui() -> None:
    code = ("import sys, core.cli, core.engine, core.services, core.demo; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui', 'themes')]; "
            "print(','.join(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == ""


def test_sqlite_and_gitpython_are_confined() -> None:
    for path in ROOT.glob("core/**/*.py"):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        if "import sqlite3" in text:
            assert rel.startswith("core/store/"), rel
        if "import git as" in text or "\nimport git\n" in text or "from git import" in text:
            assert rel == "core/gitio.py", rel
