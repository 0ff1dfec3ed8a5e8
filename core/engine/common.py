"""Logging shared by the engine's parts: one logger (`ahead.engine`) and an adapter whose
lines carry repo and run.

Depends on nothing of ahead's: every part of core/engine/ may import it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ahead.engine")


class ContextLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines that carry repo and run."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        prefix = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"[{prefix}] {msg}", kwargs
