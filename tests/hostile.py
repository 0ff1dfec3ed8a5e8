"""A corpus of hostile strings, and a workspace whose repo is full of them.

The strings go into commit messages, author names and emails, branch and tag names, step names
and log output. Families: shell metacharacters (each one would create the canary file if it ever
reached a shell), git option injection, line breaks, bidi and zero-width characters, Rich and
Textual markup (`[@click=app.quit]`), terminal escapes (OSC 52 clipboard, CSI, C1 controls),
format strings and odd values. Used by tests/core/test_injection.py and the console's tests.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SHELL = [
    "$(touch {c})",
    "`touch {c}`",
    "; touch {c}",
    "&& touch {c} #",
    "| touch {c}",
    '"; touch {c}; echo "',
    "'; touch {c}; echo '",
    "${{IFS}}$(touch${{IFS}}{c})",
    "\ntouch {c}\n",
    "$(sh -c 'touch {c}')",
    "> {c}",
    ">> {c}",
    "x || touch {c}",
    "$(printf x > {c})",
    "{{touch,{c}}}",
    "$'\\x74ouch' {c}",
    "\\$(touch {c})",
    "x/$(touch${{IFS}}{c})",
    "x/`touch${{IFS}}{c}`",
    "x/;touch${{IFS}}{c}",
    "x&&touch${{IFS}}{c}",
    "x|touch${{IFS}}{c}",
    "$((1+1))$(touch${{IFS}}{c})",
    "$HOME$(touch${{IFS}}{c})",
]
OPTIONS = [
    "--upload-pack=touch {c}",
    "--upload-pack=touch${{IFS}}{c}",
    "-u touch {c}",
    "--exec=touch {c}",
    "--output={c}",
    "-o{c}",
    "--receive-pack=touch {c}",
    "--config=core.sshCommand=touch {c}",
    "-c core.fsmonitor=touch {c}",
    "--template={c}",
    "-",
    "--",
    "-x",
    "--end-of-options",
    "--help",
    "-h",
    "ext::sh -c touch% {c}",
    "--open-files-in-pager=touch${{IFS}}{c}",
    "-p",
    "--no-index",
    "--output=x",
    "-ofoo",
]
LINES = [
    "line one\nline two",
    "a\r\nb",
    "a\rb",
    "\n\n\nthird",
    "trailing\n",
    "x\x0by",
    "x\x0cy",
    "tab\there",
    "\u2028sep\u2029para",
    "\x85next line",
]
UNICODE = [
    "\u202eevil\u202c",
    "\u2066iso\u2069",
    "\u2067rtl\u2069",
    "a\u200bb",
    "zw\u200djoin",
    "\u200e\u200fmarks",
    "\ufeffbom",
    "\u2060wj",
    "e\u0301\u0301\u0301",
    "Z\u0337\u0322a\u0335l\u0334g\u0336o",
    "مرحبا",
    "日本語",
    "🚀💥",
    "\U000e0041tag",
    "\u00a0nbsp",
    "\u3000wide space",
    "ﬁ ligature",
    "ＡＢＣ fullwidth",
    "\ufffd",
    "𝕏 math",
]
MARKUP = [
    "[bold red]ALERT[/]",
    "[@click=app.quit]quit[/]",
    "[@click=app.exit]x[/]",
    "[link=https://evil.example]click[/link]",
    "[blink]x[/blink]",
    "[/]",
    "[b]unclosed",
    "[bold green]APPROVED[/] ✓",
    "[reverse]inverse",
    "[on red]bg[/]",
    "\\[escaped]",
    "[red",
    "]",
    "[@click=screen.dismiss]x[/]",
    "[italic]$(x)[/]",
    ":smile: :warning:",
    "[$accent]var[/]",
    "[link=file:///etc/passwd]p[/]",
    "[@click=app.push_screen('help')]h[/]",
    "[not a tag]",
]
ESCAPES = [
    "\x1b]52;c;aGVsbG8=\x07",
    "\x1b]52;c;aGVsbG8=\x1b\\",
    "\x1b[2J\x1b[H",
    "\x1b[31mred\x1b[0m",
    "\x1b[1;1H",
    "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",
    "\x1b]0;title\x07",
    "\x1bP+q544e\x1b\\",
    "\x9b2J",
    "\x9d0;c1 title\x9c",
    "\x1b[6n",
    "\x1b[?1049h",
    "\x1b[?1000h",
    "\x07bell",
    "\x08\x08\x08backspace",
    "\x1bc",
    "\x1b[200~paste",
    "\x1b]1337;File=x\x07",
    "\x1b[0;0;0t",
    "\x1b]4;1;rgb:ff/00/00\x07",
]
OTHER = [
    "%s%s%s%n",
    "{0}{1}",
    "%(x)s",
    "{self.__class__}",
    "$AHEAD_STEP_TOKEN",
    "${HOME}",
    "$HOME",
    "~root",
    "../../etc/passwd",
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "NULL",
    "None",
    "true",
    "<script>alert(1)</script>",
    "&amp;",
    "\\",
    "\\\\",
    "%00",
    "*",
    "A" * 3000,
]
FAMILIES = {
    "shell": SHELL,
    "options": OPTIONS,
    "lines": LINES,
    "unicode": UNICODE,
    "markup": MARKUP,
    "escapes": ESCAPES,
    "other": OTHER,
}

# What must never reach a terminal: ESC, BEL, other C0 controls (tab and newline aside), C1
# controls and the bidi/zero-width characters that reorder or hide text.
FORBIDDEN_ON_SCREEN = [
    chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))
] + [
    "\u200b",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\ufeff",
]


def corpus(canary: Path) -> list[str]:
    """Every family's strings with the canary path filled in, then mixtures of the families
    (markup + escape + shell, and so on): 200 or more distinct strings."""
    filled = [
        [s.format(c=canary) if strings in (SHELL, OPTIONS) else s for s in strings]
        for strings in FAMILIES.values()
    ]
    singles = [s for strings in filled for s in strings]
    mixed = []
    for i in range(70):
        a, b, c = filled[i % 7], filled[(i + 2) % 7], filled[(i + 5) % 7]
        mixed.append(a[i % len(a)] + " " + b[(i * 3) % len(b)] + " " + c[(i * 7) % len(c)])
    return list(dict.fromkeys(singles + mixed))


def leaks(text: str) -> list[str]:
    """The forbidden characters present in `text` (empty when it is safe to show)."""
    return sorted({repr(ch) for ch in FORBIDDEN_ON_SCREEN if ch in text})


GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
    "HOSTILE_TEST_HELPER": "1",
}  # not recorded by the git wrapper of test_injection


def git(
    repo: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input,
        capture_output=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {args} failed: {done.stderr!r}")
    return done


@dataclass
class HostileRepo:
    """What went into the repo: the commits (sha, message, author name, email) and the names git
    accepted as branches and tags, and those it refused."""

    commits: list[tuple[str, str, str, str]] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    refused_names: list[str] = field(default_factory=list)
    refused_people: int = 0


def fill(repo: Path, strings: list[str], refs: bool = True) -> HostileRepo:
    """One commit per string on main (the string as subject and body, and as author name and
    email where git takes it), then (with `refs`) each string tried as a branch and a tag name."""
    made = HostileRepo()
    parent = git(repo, "rev-parse", "HEAD").stdout.decode().strip()
    tree = git(repo, "rev-parse", "HEAD^{tree}").stdout.decode().strip()
    for i, text in enumerate(strings):
        message = f"{text}\n\nbody: {text}\n"
        name, email = text[:200], f"{text[:60]}@example.com"
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_AUTHOR_DATE": f"{1_700_000_000 + i} +0000",
            "GIT_COMMITTER_DATE": f"{1_700_000_000 + i} +0000",
        }
        done = git(
            repo,
            "commit-tree",
            tree,
            "-p",
            parent,
            "-F",
            "-",
            env=env,
            input=message.encode(),
            check=False,
        )
        if done.returncode != 0:  # git refuses some names (e.g. only "crud" characters)
            made.refused_people += 1
            env.update(
                GIT_AUTHOR_NAME="Eve",
                GIT_AUTHOR_EMAIL="eve@example.com",
                GIT_COMMITTER_NAME="Eve",
                GIT_COMMITTER_EMAIL="eve@example.com",
            )
            name, email = "Eve", "eve@example.com"
            done = git(
                repo, "commit-tree", tree, "-p", parent, "-F", "-", env=env, input=message.encode()
            )
        parent = done.stdout.decode().strip()
        made.commits.append((parent, message, name, email))
    git(repo, "update-ref", "refs/heads/main", parent)
    for text in strings if refs else []:
        name = text if text.startswith("x/") else f"h/{text}"
        if (
            git(repo, "check-ref-format", "--branch", name, check=False).returncode == 0
            and git(repo, "update-ref", f"refs/heads/{name}", parent, check=False).returncode == 0
        ):
            made.branches.append(name)
        else:
            made.refused_names.append(name)
        tag = f"t{text}"
        if git(repo, "tag", tag, parent, check=False).returncode == 0:
            made.tags.append(tag)
    return made


def write_raw_refs(repo: Path, sha: str, names: list[str]) -> list[str]:
    """Loose ref files git's porcelain would refuse (a hostile server or a hand edit makes them)."""
    written = []
    heads = repo / ".git" / "refs" / "heads"
    for name in names:
        if "/" in name or "\x00" in name or name in (".", "..") or len(name.encode()) > 200:
            continue
        try:
            (heads / name).write_text(sha + "\n")
        except OSError:
            continue
        written.append(name)
    return written
