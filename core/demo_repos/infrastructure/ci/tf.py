"""A small stand-in for terraform, shared by plan.py and apply.py.

Desired state: resources.json ("{env}" in a value becomes the environment's name). Live state:
state.json in the environment's live directory, $AHEAD_WORKSPACE/$LIVE_ROOT/<env>/<repo>/.
"""

import json
import os
from pathlib import Path

# Changing one of these replaces the resource (destroy, then create), as in terraform.
FORCE_NEW = ("type", "cidr", "network", "subnet")


def live_dir(env):
    return Path(os.environ["AHEAD_WORKSPACE"], os.environ["LIVE_ROOT"], env, os.environ["AHEAD_REPO"])


def desired(env):
    resources = json.loads(Path("resources.json").read_text())["resources"]
    return {name: {key: value.replace("{env}", env) if isinstance(value, str) else value
                   for key, value in attrs.items()} for name, attrs in resources.items()}


def state(env):
    path = live_dir(env) / "state.json"
    if not path.exists():
        return {"serial": 0, "commit": None, "resources": {}}
    return json.loads(path.read_text())


def plan(env):
    """What applying resources.json to `env` would do, and the desired resources."""
    want, current = desired(env), state(env)
    have = current["resources"]
    result = {"environment": env, "serial": current["serial"], "from_commit": current["commit"],
              "add": sorted(set(want) - set(have)), "destroy": sorted(set(have) - set(want)),
              "change": {}, "replace": [], "blocked": []}
    for name in sorted(set(want) & set(have)):
        keys = sorted(set(want[name]) | set(have[name]))
        changed = {k: [have[name].get(k), want[name].get(k)] for k in keys
                   if have[name].get(k) != want[name].get(k)}
        if changed:
            result["change"][name] = changed
        if any(k in FORCE_NEW for k in changed):
            result["replace"].append(name)
    for name in result["destroy"] + result["replace"]:
        if env in have[name].get("prevent_destroy", []):
            result["blocked"].append(name)
    return result, want


def show(p):
    env = p["environment"]
    source = (p["from_commit"] or "")[:7] or "nothing applied yet"
    print(f"{env}: live state serial {p['serial']} ({source})")
    for name in p["add"]:
        print(f"  + {name}")
    for name, changed in p["change"].items():
        parts = [f"{key}: {json.dumps(old)} -> {json.dumps(new)}"
                 + (" (forces replacement)" if key in FORCE_NEW else "")
                 for key, (old, new) in changed.items()]
        print(f"  {'-/+' if name in p['replace'] else '~'} {name}: " + "; ".join(parts))
    for name in p["destroy"]:
        print(f"  - {name}")
    for name in p["blocked"]:
        print(f"  ! {name} is protected in {env} (prevent_destroy): apply will refuse to destroy it")
    replaced = len(p["replace"])
    print(f"  Plan: {len(p['add']) + replaced} to add, {len(p['change']) - replaced} to change, "
          f"{len(p['destroy']) + replaced} to destroy.")
