"""Random direct edits of the audit table, as an attacker with write access to state.db makes them.

The attacker opens the file with sqlite3, drops the append-only triggers, edits, and puts the
triggers back. Each edit is applied to a fresh copy of a real store; `verify_audit` must find
every edit its design can find (any change before the last entry), and `verify_audit(head=...)`
with the chain head taken before the edit (what `ahead audit head` ships off the host) must find
the rest, except entries appended after that head, which no hash chain can tell from real ones.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.store.db import GENESIS, Store, audit_hash
from tests.conftest import make_workspace

ROOT = Path(__file__).parents[2]
FIELDS = ["id", "ts", "actor", "session", "action", "subject", "detail", "prev_hash", "hash"]
TRIGGERS = """
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""
ENTRIES = 30
# What each kind of edit can be caught by: the chain alone, only with an off-host head, or nothing.
CHAIN, HEAD, NOTHING = "chain", "head", "nothing"


def build_store(path: Path) -> None:
    with Store(path, session="test:base") as store:
        for i in range(ENTRIES):
            with store.transaction():
                store.audit(
                    ["alice", "bob", "Ève ☃"][i % 3],
                    ["change.approve", "deploy", "run.trigger"][i % 3],
                    f"run/{i}",
                    {"n": i, "note": "x" * (i % 7), "uni": "\u202e\u200b"},
                )


class Attacker:
    """Direct sqlite3 access to the file, triggers dropped for the edit and put back after."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("DROP TRIGGER audit_no_update")
        self.conn.execute("DROP TRIGGER audit_no_delete")
        self.conn.execute("BEGIN")

    def rows(self) -> list[dict[str, object]]:
        cur = self.conn.execute("SELECT * FROM audit ORDER BY id")
        return [dict(zip(FIELDS, row, strict=True)) for row in cur.fetchall()]

    def put(self, row: dict[str, object]) -> None:
        self.conn.execute(
            f"INSERT INTO audit ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
            [row[f] for f in FIELDS],
        )

    def delete(self, seq: int) -> None:
        self.conn.execute("DELETE FROM audit WHERE id = ?", (seq,))

    def close(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.executescript(TRIGGERS)
        self.conn.close()


def rehash(row: dict[str, object], prev: str) -> dict[str, object]:
    row = {**row, "prev_hash": prev}
    row["hash"] = audit_hash(
        prev,
        row["ts"],
        row["actor"],
        row["session"],
        row["action"],  # type: ignore[arg-type]
        row["subject"],
        row["detail"],
    )
    return row


def changed(value: object, rng: random.Random) -> object:
    """`value` with one character (or, for a number, the last bit) changed."""
    if isinstance(value, float):
        return math.nextafter(value, math.inf)
    if isinstance(value, int):
        return value + rng.randint(1, 5) * 1000
    text = str(value)
    at = rng.randrange(len(text))
    new = chr((ord(text[at]) + rng.randint(1, 30)) % 0x10FFFF or 1)
    if 0xD800 <= ord(new) <= 0xDFFF:
        new = "Z" if text[at] != "Z" else "Y"
    return text[:at] + new + text[at + 1 :]


def tamper(kind: str, a: Attacker, rng: random.Random) -> str:
    """Make one edit of `kind`; returns what should catch it."""
    rows = a.rows()
    last = len(rows)
    k = rng.randint(1, last)
    row = rows[k - 1]
    if kind == "change a byte":
        field = rng.choice(FIELDS)
        a.delete(k)
        a.put({**row, field: changed(row[field], rng)})
        return CHAIN
    if kind == "change a type":  # same text, stored as a blob or a number
        field = rng.choice(["actor", "session", "action", "subject", "detail", "ts"])
        a.delete(k)
        a.put({**row, field: str(row[field]).encode() if field != "ts" else int(row[field])})  # type: ignore[call-overload]
        return CHAIN
    if kind == "delete a row":
        a.delete(k)
        return CHAIN if k < last else HEAD
    if kind == "swap rows":
        j = rng.choice([i for i in range(1, last + 1) if i != k])
        other = rows[j - 1]
        a.delete(k)
        a.delete(j)
        a.put({**other, "id": k})
        a.put({**row, "id": j})
        return CHAIN
    if kind == "re-insert an edited row with its hash recomputed":
        a.delete(k)
        a.put(rehash({**row, "actor": "mallory"}, str(row["prev_hash"])))
        return CHAIN if k < last else HEAD
    if kind == "truncate the tail":
        for seq in range(k, last + 1):
            a.delete(seq)
        return HEAD
    if kind == "re-chain from an edited row onward":
        prev = str(row["prev_hash"])
        for seq in range(k, last + 1):
            old = rows[seq - 1]
            edited = rehash(
                {**old, "detail": json.dumps({"forged": True})} if seq == k else old, prev
            )
            a.delete(seq)
            a.put(edited)
            prev = str(edited["hash"])
        return HEAD
    if kind == "append a forged entry":
        a.put(
            rehash(
                {**rows[-1], "id": last + 1, "actor": "mallory", "action": "change.approve"},
                str(rows[-1]["hash"]),
            )
        )
        return NOTHING
    raise AssertionError(kind)


KINDS = [
    "change a byte",
    "change a type",
    "delete a row",
    "swap rows",
    "re-insert an edited row with its hash recomputed",
    "truncate the tail",
    "re-chain from an edited row onward",
    "append a forged entry",
]


def campaign(tmp_path: Path, edits: int, seed: int) -> dict[str, Counter[str]]:
    base = tmp_path / "base.db"
    build_store(base)
    with Store(base) as store:
        head = store.audit_head()
        assert head is not None and head[0] == ENTRIES
        assert store.verify_audit(head) == (True, ENTRIES, "")
    rng = random.Random(seed)
    tally: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    work = tmp_path / "work.db"
    for _ in range(edits):
        shutil.copyfile(base, work)
        kind = rng.choice(KINDS)
        attacker = Attacker(work)
        expected = tamper(kind, attacker, rng)
        attacker.close()
        with Store(work) as store:
            by_chain = not store.verify_audit()[0]
            with_head = not store.verify_audit(head)[0]
        counts = tally[kind]
        counts["edits"] += 1
        counts["found by the chain"] += by_chain
        counts["found with the head"] += with_head
        # the guarantee: everything the design can see, it sees
        if expected == CHAIN:
            assert by_chain, f"{kind}: not detected by the chain"
        if expected in (CHAIN, HEAD):
            assert with_head, f"{kind}: not detected even with the head"
        counts[f"expected: {expected}"] += 1
        os.remove(work)
    return tally


def report(tally: dict[str, Counter[str]]) -> str:
    lines = [
        f"{'edit':50} {'edits':>5} {'chain can':>9} {'chain did':>9} {'+head can':>9} {'+head did':>9}"
    ]
    for kind, c in tally.items():
        can_head = c[f"expected: {CHAIN}"] + c[f"expected: {HEAD}"]
        lines.append(
            f"{kind:50} {c['edits']:5} {c[f'expected: {CHAIN}']:9} {c['found by the chain']:9} "
            f"{can_head:9} {c['found with the head']:9}"
        )
    return "\n".join(lines)


def test_100_random_edits_are_caught_as_far_as_the_design_allows(tmp_path: Path) -> None:
    tally = campaign(tmp_path, 100, seed=7)
    print("\n" + report(tally))
    assert sum(c["edits"] for c in tally.values()) == 100
    assert tally["append a forged entry"]["found with the head"] == 0  # the documented gap


@pytest.mark.slow
def test_1000_random_edits_are_caught_as_far_as_the_design_allows(tmp_path: Path) -> None:
    tally = campaign(tmp_path, 1000, seed=20261126)
    print("\n" + report(tally))
    assert sum(c["edits"] for c in tally.values()) == 1000


def test_audit_head_and_verify_head_from_the_cli(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    build_store(ws.db_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ahead(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "audit", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    head = ahead("head").stdout.strip()
    seq, digest = head.split(":")
    assert int(seq) == ENTRIES and len(digest) == 64
    assert json.loads(ahead("head", "--json").stdout) == {"seq": ENTRIES, "hash": digest}
    ok = ahead("verify", "--head", head)
    assert ok.returncode == 0 and f"entry {head} intact" in ok.stdout
    assert ahead("verify", "--head", "12:nothex").returncode == 1
    # the attacker cuts off the last three entries: the chain still verifies, the head does not
    attacker = Attacker(ws.db_path)
    for s in (ENTRIES, ENTRIES - 1, ENTRIES - 2):
        attacker.delete(s)
    attacker.close()
    # the chain alone still verifies; the head the last verify remembered (outside the state
    # directory) shows the cut
    shrunk = ahead("verify")
    assert shrunk.returncode == 1 and f"but was {ENTRIES} entries long" in shrunk.stderr, (
        shrunk.stderr
    )
    cut = ahead("verify", "--head", head)
    assert cut.returncode == 1 and f"entry {ENTRIES} is missing" in cut.stderr, cut.stderr


def test_verify_reports_a_value_of_the_wrong_type_instead_of_crashing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    build_store(db)
    attacker = Attacker(db)
    attacker.conn.execute("UPDATE audit SET detail = CAST(detail AS BLOB) WHERE id = 3")
    attacker.close()
    with Store(db) as store:
        assert store.verify_audit() == (False, 3, "entry 3: contents do not match its hash")
    assert GENESIS == "0" * 64
