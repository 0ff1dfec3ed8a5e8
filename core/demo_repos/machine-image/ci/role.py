"""ansible-playbook, stand-in: applies the base role (role/) to the image being baked."""

import json
import os
import string
from pathlib import Path

role = Path("role")
root = Path("build/rootfs")
spec = json.loads((role / "vars.json").read_text())
values = dict(spec["vars"], commit=os.environ.get("AHEAD_COMMIT", "unknown")[:7])
print("ansible would now apply the base role over SSH to the VM packer booted;")
print("here it renders the role's templates into build/rootfs")
print("PLAY [default] " + "*" * 50)
changed = 0
for dest, template in sorted(spec["files"].items()):
    text = string.Template((role / "templates" / template).read_text()).substitute(values)
    target = root / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    before = target.read_text() if target.exists() else None
    target.write_text(text)
    changed += before != text
    print(f"TASK [base : template /{dest}]")
    print(("changed" if before != text else "ok") + ": [default]")
print(f"PLAY RECAP: default ok={len(spec['files'])} changed={changed} failed=0")
