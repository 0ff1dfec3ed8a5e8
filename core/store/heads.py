"""The audit chain head the last `ahead audit verify` printed, kept outside the state directory.

A hash chain cannot show that its tail was cut off, or that the whole store was rolled back to an
older copy or emptied (a truncated WAL): what is left is a valid, shorter chain. Each successful
verify remembers the head it printed in `$XDG_STATE_HOME/ahead/audit-heads/` (default
`~/.local/state`), keyed by the store's path, so the next verify reports a chain that is shorter
than it was, or whose remembered entry changed. Outside the state directory so that whoever can
write the store cannot as easily rewrite this too; an off-host head (`--head`) is stronger still.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from core.store.db import Store


def heads_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ahead" / "audit-heads"


def head_file(store: Store) -> Path:
    key = hashlib.sha256(str(store.path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[
        :16
    ]
    return heads_dir() / f"{key}.head"


def load(store: Store) -> dict[str, object] | None:
    try:
        data = json.loads(head_file(store).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("seq"), int) else None


def compare(store: Store, count: int) -> str:
    """ "" when the chain still holds the remembered head, else what is wrong (one line)."""
    seen = load(store)
    if seen is None:
        return ""
    seq = int(seen["seq"])  # type: ignore[call-overload]
    digest = str(seen.get("hash") or "")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(seen.get("ts") or 0)))  # type: ignore[arg-type]
    was = f"{seq} entries long at {when} (head {digest[:16]}...)"
    remove = f"if the store was restored on purpose, remove {head_file(store)}"
    if count < seq:
        return (
            f"the chain has {count} entries but was {was}: the log was cut off, or the store "
            f"rolled back or emptied; {remove}"
        )
    if seen.get("store_id") and seen["store_id"] != store.store_id:
        return (
            f"the store {store.path} is not the one verified before (store id {store.store_id or 'none'}, "
            f"was {seen['store_id']} when its chain was {was}); {remove}"
        )
    if seq:
        row = store.query_one("SELECT hash FROM audit WHERE id = ?", (seq,))
        if row is None or row["hash"] != digest:
            return f"entry {seq} no longer has the hash it had at {when} (the chain was rewritten); {remove}"
    return ""


def save(store: Store, head: tuple[int, str] | None) -> str:
    """Remember `head`; returns where (or why not)."""
    path = head_file(store)
    data = {
        "db": str(store.path.resolve()),
        "store_id": store.store_id,
        "seq": head[0] if head else 0,
        "hash": head[1] if head else "",
        "ts": time.time(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n", "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        return f"nowhere ({path}: {exc.strerror or exc})"
    return str(path)
