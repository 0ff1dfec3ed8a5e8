"""Secrets: given only to the steps that declare them (after the gate for gated stages), never
in argv, the store, the audit log or error messages, and masked in stored logs in raw, base64
(also inside longer base64 text and double-encoded), URL- and JSON-encoded forms, including
when a value is split between two 64 KiB reads or sits in a line longer than the line limit."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from core import runner
from core.engine import Engine
from core.errors import ConfigError
from core.pipeline import parse as parse_pipeline
from core.runner import LineBatcher
from core.secrets import Masker, forms
from core.workspace import parse as parse_workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import query, wait_for, wait_run_done

TOKEN = "s3cr3t+/Tok=en&x y%41"
PASSWORD = "hunter2-Pa$$w0rd:é"

SCRIPT = r"""
import base64, json, os, sys, urllib.parse as u
values = [os.environ["API_TOKEN"], os.environ["DB_PASSWORD"]]
out = sys.stdout
for v in values:
    b = v.encode()
    for text in (v, base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode(),
                 base64.b64encode(b"user:" + b).decode(), base64.b64encode(b"ab" + b + b"zz").decode(),
                 base64.b64encode(base64.b64encode(b)).decode(), u.quote(v, safe=""), u.quote_plus(v),
                 json.dumps({"k": v}), "Authorization: Bearer " + v, v + v):
        print(text)
    sys.stderr.write("error: bad credentials " + v + "\n")
out.flush()
token = values[0]
out.write("x" * (65536 - 5) + token + "y" * 10 + "\n")   # straddles the first 64 KiB read
out.write("z" * 20000 + token + "q" * 20000 + "\n")      # a line over the 16 KiB line limit
out.write("w" * (16 * 1024 + 3) + token + "\n")
out.write("end " + os.environ.get("DEPLOY_TOKEN", "no source variable") + "\n")
"""

PIPELINE = """\
stages:
  - name: build
    steps:
      - run: 'echo "build sees [${API_TOKEN:-nothing}] [${DEPLOY_TOKEN:-nothing}]"'
  - name: deploy-prod
    environment: prod
    secrets: [API_TOKEN]
    steps:
      - name: deploy
        run: [python3, deploy.py]
        secrets: [DB_PASSWORD]
"""


def secret_ws(root: Path) -> Path:
    ws = make_workspace(
        root,
        {"app": PIPELINE},
        environments=("dev", "prod"),
        extra=(
            "secrets:\n  API_TOKEN: {env: DEPLOY_TOKEN}\n  DB_PASSWORD: {file: secrets/db}\n"
            "policies:\n  prod:\n    approvals: 1\n    approvers: [bob]\n"
            "operators:\n  - name: bob\n    roles: [approver]\n  - name: alice\n    roles: [operator]\n"
        ),
    )
    (root / "secrets").mkdir()
    (root / "secrets" / "db").write_text(PASSWORD + "\n")
    commit(ws.repo_dir(ws.repo("app")), "deploy script", files={"deploy.py": SCRIPT})
    return root


async def test_run_echoing_secrets_leaves_no_trace_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import workspace
    from core.approvals import decide
    from core.services import Actor, Services
    from core.store.db import Store

    root = secret_ws(tmp_path / "ws")
    monkeypatch.setenv("DEPLOY_TOKEN", TOKEN)
    ws = workspace.read(root / "ahead.yml")
    async with Engine(ws) as engine:
        with Store(ws.db_path) as store:
            run_id = Services(ws, store).trigger("app", Actor("alice"))
        change = (await wait_for(engine, "SELECT id FROM change_requests WHERE status = 'open'"))[0]
        # at the gate: nothing has read or received the secrets yet
        lines = await query(engine, "SELECT line FROM log_lines ORDER BY step_id, seq")
        assert [r["line"] for r in lines] == ["build sees [nothing] [nothing]"]
        with Store(ws.db_path) as store:
            assert decide(store, ws, change["id"], "bob", "approve").ok
        run = await wait_run_done(engine, run_id)
        assert run["status"] == "succeeded", run
        rows = await query(
            engine,
            "SELECT l.line FROM log_lines l JOIN steps s ON s.id = l.step_id "
            "WHERE s.name = 'deploy' ORDER BY l.seq",
        )
    text = "\n".join(r["line"] for r in rows)
    assert text.count("***") >= 25 and "Authorization: Bearer ***" in text
    assert "end no source variable" in text  # the secret's source variable is not passed on
    assert "user:" not in text
    assert_no_trace(ws.state_dir)


def assert_no_trace(state_dir: Path) -> None:
    """Grep every file of the state directory (the SQLite file, WAL, logs, artifacts) for
    every form of every secret: 0 hits."""
    needles = {f for v in (TOKEN, PASSWORD) for f in forms(v)}
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)
    hits = [(str(p), n) for p in files for n in needles if n in p.read_bytes()]
    assert hits == []


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096, 65536])
async def test_masking_holds_at_every_chunk_boundary(size: int) -> None:
    masker = Masker([TOKEN])
    for before in (0, 1, 5, runner.MAX_LINE - 3, runner.MAX_LINE + 11):
        data = b"a" * before + TOKEN.encode() + b"b\n" + b"c" * before + TOKEN.encode()
        got: list[str] = []

        async def sink(lines: list[tuple[int, float, str]], got: list[str] = got) -> None:
            got.extend(line for _, _, line in lines)

        batcher = LineBatcher(sink, masker)
        for start in range(0, len(data), size):
            batcher.feed(data[start : start + size])
        await batcher.close()
        joined = "".join(got)
        assert TOKEN not in joined and joined.count("***") == 2, (size, before)


def test_forms_cover_encodings() -> None:
    masker = Masker([TOKEN])
    b = TOKEN.encode()
    for text in (
        b,
        base64.b64encode(b),
        base64.b64encode(b"x" + b),
        base64.b64encode(b"xy" + b + b"!"),
        base64.urlsafe_b64encode(b),
        quote(TOKEN, safe="").encode(),
        quote_plus(TOKEN).encode(),
        json.dumps(TOKEN).encode(),
        base64.b64encode(base64.b64encode(b)),
    ):
        masked = masker.mask(b"<" + text + b">")
        assert b"***" in masked, text


async def test_missing_secret_fails_the_step_naming_the_variable_not_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import workspace

    root = secret_ws(tmp_path / "ws")
    monkeypatch.delenv("DEPLOY_TOKEN", raising=False)
    (root / "secrets" / "db").write_text("short\n")
    ws = workspace.read(root / "ahead.yml")
    pipeline = PIPELINE.replace("environment: prod\n", "environment: dev\n")
    commit(ws.repo_dir(ws.repo("app")), "dev only", files={".ahead/pipeline.yml": pipeline})
    async with Engine(ws) as engine:
        from core.services import Actor, Services
        from core.store.db import Store

        with Store(ws.db_path) as store:
            run_id = Services(ws, store).trigger("app", Actor("alice"))
        run = await wait_run_done(engine, run_id)
        steps = await query(
            engine, "SELECT name, status, error FROM steps WHERE run_id = ?", (run_id,)
        )
    assert run["status"] == "failed"
    deploy = next(s for s in steps if s["name"] == "deploy")
    assert deploy["status"] == "failed" and "DEPLOY_TOKEN is not set" in deploy["error"]


def test_secret_declarations_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        parse_pipeline(
            "stages:\n  - name: a\n    steps:\n      - run: x\n        secrets: [NOPE]\n",
            secrets=("API_TOKEN",),
        )
    assert "no secret named 'NOPE'" in str(err.value) and "pipeline.yml:5:" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_workspace(
            "repos: []\nenvironments: [dev]\nsecrets:\n  X_TOKEN: {env: A, file: b}\n",
            Path("/tmp/ahead.yml"),
        )
    assert "exactly one of env or file" in str(err.value)
    assert os.environ.get("AHEAD_FAULT", "") == ""


def test_reading_a_secret_refuses_short_missing_or_unset_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.secrets import SecretError, SecretSource, read

    (tmp_path / "short").write_text("abc\n")
    monkeypatch.setenv("SHORT_TOKEN", "1234567")
    cases = {
        SecretSource("A", file=tmp_path / "short"): "shorter than 8",
        SecretSource("B", file=tmp_path / "missing"): "cannot read",
        SecretSource("C", env="SHORT_TOKEN"): "shorter than 8",
        SecretSource("D", env="UNSET_TOKEN_XYZ"): "UNSET_TOKEN_XYZ is not set",
    }
    for source, expected in cases.items():
        with pytest.raises(SecretError) as err:
            read(source)
        assert expected in str(err.value) and source.name in str(err.value)
        assert "1234567" not in str(err.value) and "abc" not in str(err.value)
    (tmp_path / "key").write_text("-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----\n")
    value = read(SecretSource("K", file=tmp_path / "key"))
    assert not value.endswith("\n")
    assert Masker([value]).mask(b"line AAAABBBBCCCCDDDD printed alone") == b"line *** printed alone"


# -- issue 11: masking after the display's normalisation ---------------------------------------------

SPLITS = {
    "ansi reset": "\x1b[0m",
    "zero-width space": "\u200b",
    "carriage return": "\r",
    "delete": "\x7f",
    "osc": "\x1b]0;title\x07",
    "bidi isolate": "\u2066",
}


def test_masker_finds_values_split_by_invisible_characters_wrapped_base64_and_any_case_escapes() -> (
    None
):
    from core.text import inert

    masker = Masker([TOKEN])
    for what, mark in SPLITS.items():
        for cut in (1, 5, len(TOKEN) - 1):
            line = f"token={TOKEN[:cut]}{mark}{TOKEN[cut:]} done".encode()
            masked = masker.mask(line).decode()
            assert TOKEN not in inert(masked) and inert(masked) == "token=*** done", (
                what,
                cut,
                masked,
            )
    escaped = quote(TOKEN, safe="")
    lower = re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), escaped)
    for variant in (
        lower,
        escaped.replace("%2B", "%2b"),
        escaped.replace("%2F", "%2f").replace("%3D", "%3d"),
    ):
        assert masker.mask(b"u=" + variant.encode()) == b"u=***", variant
    long_value = "k3y-" + "Q" * 70 + "/end-of-key"  # its base64 fills whole wrapped lines
    for value in (TOKEN, long_value):
        m = Masker([value])
        for width in (76, 64):
            for before in (0, 1, 2, 30, 74):
                text = base64.b64encode(b"h" * before + value.encode() + b"tail").decode()
                lines = [text[i : i + width] for i in range(0, len(text), width)]
                shown = "".join(m.mask(line.encode()).decode() for line in lines)
                decoded = base64.b64decode(text)
                assert "***" in shown
                # no piece of 4+ base64 characters of the value is left between masks
                for piece in shown.split("***"):
                    assert (
                        value.encode()[:3]
                        not in base64.b64decode(piece + "=" * (-len(piece) % 4), validate=False)
                        or len(piece) < 4
                    ), (width, before, piece)
                assert decoded  # the payload itself decodes: the test text is real base64


async def test_invisible_splits_are_masked_in_the_store_and_in_ahead_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store.db import Store
    from core.text import inert
    from tests.core.test_cli import ahead

    value = "spl1t/s3cret+Value"
    printer = (
        "import base64, sys\nv = sys.argv[1]\n"
        + "".join(
            f"print('{what}: ' + v[:6] + {mark!r} + v[6:])\n" for what, mark in SPLITS.items()
        )
        + (
            "print('escaped: ' + v[:5] + '%2f' + v[6:12] + '%2b' + v[13:])\n"
            "payload = base64.encodebytes(b'x' * 50 + v.encode() + b'y' * 50).decode()\n"
            "print(payload, end='')\n"
        )
    )
    pipeline = (
        "stages:\n  - name: print\n    steps:\n"
        "      - run: 'python3 printer.py \"$SPLIT_TOKEN\"'\n        secrets: [SPLIT_TOKEN]\n"
    )
    ws = make_workspace(
        tmp_path / "ws",
        {"app": pipeline},
        extra="secrets:\n  SPLIT_TOKEN: {env: SPLIT_SOURCE, branches: true}\n",
    )
    commit(ws.repo_dir(ws.repo("app")), "printer", files={"printer.py": printer})
    monkeypatch.setenv("SPLIT_SOURCE", value)
    done = ahead(ws.root, "trigger", "app", "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    with Store(ws.db_path) as store:
        stored = [
            r["line"] for r in store.query("SELECT line FROM log_lines ORDER BY step_id, seq")
        ]
    shown = ahead(ws.root, "logs", "1").stdout
    for what in SPLITS:
        line = next(s for s in stored if s.startswith(what))
        assert inert(line) == f"{what}: ***", (what, line)
        assert f"{what}: ***" in shown.splitlines(), shown
    assert "escaped: ***" in shown
    assert value not in shown and value not in "".join(inert(s) for s in stored)
    encoded = base64.b64encode(b"x" * 50 + value.encode() + b"y" * 50).decode()
    assert encoded not in "".join(inert(s) for s in stored)
    assert value.encode() not in base64.b64decode(
        "".join(s for s in stored if s and ":" not in s).replace("***", ""), validate=False
    )


# Characters a terminal draws with no width and no glyph that inert() kept: the word joiner and
# invisible operators, a soft hyphen, the combining grapheme joiner, the Arabic letter mark (a
# bidi control), Mongolian selectors, Hangul fillers, variation selectors and Unicode tags.
MORE_INVISIBLE = {
    "word joiner": "\u2060",
    "invisible times": "\u2062",
    "soft hyphen": "\u00ad",
    "grapheme joiner": "\u034f",
    "arabic letter mark": "\u061c",
    "mongolian vowel separator": "\u180e",
    "hangul filler": "\u3164",
    "variation selector": "\ufe0f",
    "tag space": "\U000e0020",
    "variation selector 17": "\U000e0100",
    "inhibit swapping": "\u206a",
}


def test_masker_finds_values_split_by_every_zero_width_character_a_terminal_hides() -> None:
    import unicodedata

    from core.text import inert

    def seen(text: str) -> str:  # what a terminal shows: no zero-width format or filler characters
        return "".join(
            c for c in text if unicodedata.category(c) != "Cf" and c not in MORE_INVISIBLE.values()
        )

    masker = Masker([TOKEN])
    for what, mark in MORE_INVISIBLE.items():
        for cut in (1, 5, len(TOKEN) - 1):
            line = f"token={TOKEN[:cut]}{mark}{TOKEN[cut:]} done"
            masked = masker.mask(line.encode()).decode()
            assert TOKEN not in seen(inert(masked)), (what, cut, masked)
            assert inert(masked) == "token=*** done", (what, cut, masked)
            assert inert(line) == f"token={TOKEN} done", what  # the display drops it too
