"""The one door into core for front ends (the CLI, console sessions, the SSH listings).

`Api` (core/api/door.py) holds every command and read; `views` the typed read models;
`session.ClientSession` is a console's async client over the same door. Front ends import from
here, never from the store, runstate, approvals, drift, gitio, services or the engine (the
import-linter contracts in pyproject.toml hold this).
"""

from __future__ import annotations

from core.api.door import Api, EngineState, is_production
from core.approvals import Verdict
from core.services import Actor, Revoked
from core.states import Capability
from core.store.db import DatabaseError

__all__ = [
    "Actor",
    "Api",
    "Capability",
    "DatabaseError",
    "EngineState",
    "Revoked",
    "Verdict",
    "is_production",
]
