"""Fault injection: stop the process dead at a named point, for crash-recovery tests.

`AHEAD_FAULT=point[,point...]` in the environment of an ahead process (engine, CLI) makes
`fault(point)` call `os._exit(137)` there, as a `kill -9` would, with no cleanup, no rollback
handler and no flush. The variable is read once, at import; ahead.yml and repository content
cannot set it (steps get a fresh environment without AHEAD_* variables from the engine's).
Unset, `fault()` is one truthiness check.

Points (each store transaction named `x` has `x.before_commit` and `x.after_commit`):
approve, gate.pass, deploy.start, deploy.end, lock.release, unlock.
"""

from __future__ import annotations

import os

EXIT_CODE = 137
_POINTS = frozenset(p.strip() for p in os.environ.get("AHEAD_FAULT", "").split(",") if p.strip())
ARMED = bool(_POINTS)  # callers may test this first to skip building a point's name


def fault(point: str) -> None:
    """Die here (exit 137, nothing flushed) when `point` is armed in AHEAD_FAULT."""
    if _POINTS and point in _POINTS:
        os._exit(EXIT_CODE)
