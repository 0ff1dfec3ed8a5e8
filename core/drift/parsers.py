"""Reading a drift command's result: the exit code protocol of `terraform plan
-detailed-exitcode` (0 in sync, 2 drifted, anything else unknown), with terraform's plan and
ansible's PLAY RECAP summarised into the items that would change.

Pure functions over text: may not depend on git, the store, processes or the other modules of
core/drift/ except the `Finding` type (targets.py).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from core.drift.targets import Finding

OUTPUT_CAP = 256 * 1024  # characters of command output kept
TERRAFORM_PLAN = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
TERRAFORM_ITEM = re.compile(r"^\s*# (\S+) (will be|must be) (.+)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ANSIBLE_RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
)


def interpret(parse: str, exit_code: int | None, output: str) -> Finding:
    """A command's result: exit codes as `terraform plan -detailed-exitcode` (0 in sync,
    2 drifted, else unknown), with terraform's plan or ansible's recap summarised."""
    clean = ANSI.sub("", output)
    detail: dict[str, Any] = {
        "exit_code": exit_code,
        "output": output[-OUTPUT_CAP:],
        "parse": parse,
    }
    items: list[str] = []
    if parse == "ansible":
        recaps = [
            m.groups() for m in (ANSIBLE_RECAP.match(line) for line in clean.splitlines()) if m
        ]
        current = ""
        for line in clean.splitlines():
            if line.startswith("TASK ["):
                current = line[6 : line.rfind("]")] if "]" in line else line[6:]
            elif line.startswith("changed:") and current and current not in items:
                items.append(current)
        detail["items"] = items
        if exit_code != 0 and exit_code is not None and not recaps or exit_code is None:
            return Finding("unknown", f"ansible-playbook failed (exit {exit_code})", detail)
        if any(int(r[3]) or int(r[4]) for r in recaps):
            return Finding("unknown", "hosts unreachable or tasks failed", detail)
        changed = sum(int(r[2]) for r in recaps)
        if not recaps:
            return Finding("unknown", "no PLAY RECAP in the output", detail)
        if changed:
            return Finding(
                "drifted",
                f"{changed} task(s) would change",
                detail,
                hashlib.sha256("\n".join(items).encode()).hexdigest(),
            )
        return Finding("in_sync", "no task would change", detail)
    if parse == "terraform":
        items = [
            f"{m[1]} {m[2]} {m[3]}"
            for m in (TERRAFORM_ITEM.match(line) for line in clean.splitlines())
            if m
        ]
        detail["items"] = items
    if exit_code == 0:
        return Finding(
            "in_sync", "no changes" if parse == "terraform" else "exit 0: in sync", detail
        )
    if exit_code == 2:
        plan = TERRAFORM_PLAN.search(clean) if parse == "terraform" else None
        summary = (
            f"{plan[1]} to add, {plan[2]} to change, {plan[3]} to destroy"
            if plan
            else "exit 2: drifted"
        )
        basis = "\n".join(items) if items else clean
        return Finding(
            "drifted", summary, detail, hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()
        )
    return Finding(
        "unknown",
        f"the command failed (exit {exit_code})"
        if exit_code is not None
        else "the command did not finish",
        detail,
    )
