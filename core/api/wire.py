"""`--json`: one naming scheme for everything a front end prints as JSON (see README, "JSON output").

- a commit id is `commit`, or `<role>_commit` (`head_commit`, `base_commit`, `deployed_commit`);
- a time is `<what>_at`, in epoch seconds (`created_at`, `committed_at`, `at` for an audit entry
  or a log line);
- no JSON inside strings: stored JSON (`people`, an audit entry's `detail`, an event's `data`)
  is an object;
- the engine is an object, `{"state": "running" | "not running", "holder": ...}`.

`jsonable` applies the scheme to a view (a dataclass: `dataclasses.asdict`) or a store row, once,
for every command; the stored names stay as they are. Depends on nothing but the stdlib.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

#: Stored or historical name -> the name `--json` uses.
RENAMES: dict[str, str] = {
    "commit_sha": "commit",
    "sha": "commit",
    "head_sha": "head_commit",
    "base_sha": "base_commit",
    "head": "head_commit",  # status: a repo's head of main
    "deployed": "deployed_commit",  # status: an environment's deployed commit
    "ts": "at",
    "time": "committed_at",  # a commit's time
    "since": "since_at",  # drift: in this state since
    "until": "until_at",  # drift: an acknowledgement's end
}
#: Stored as JSON text: printed as the object it holds.
JSON_TEXT = frozenset({"people", "detail", "data", "commits"})
#: Objects kept as recorded (an audit entry's detail is what was audited, under its own names).
VERBATIM = frozenset({"detail", "data"})


def jsonable(value: Any, key: str | None = None) -> Any:
    """`value` (a view, a row, a list of them) with the `--json` names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.repr}
    if key in JSON_TEXT and isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            return value
    if key in VERBATIM:
        return value
    if isinstance(value, dict):
        return {RENAMES.get(str(k), str(k)): jsonable(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
