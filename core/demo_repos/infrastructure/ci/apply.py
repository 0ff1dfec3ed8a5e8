"""terraform apply, stand-in: makes this environment's live state match resources.json."""

import json
import os
import sys

import tf

env = os.environ["AHEAD_ENVIRONMENT"]
live = tf.live_dir(env)
lock = live / "state.lock"
if lock.exists():
    info = json.loads(lock.read_text())
    print("Error: Error acquiring the state lock")
    print("  Lock Info:")
    for key in ("ID", "Operation", "Who", "Created", "Info"):
        print(f"    {key + ':':11}{info.get(key.lower(), '')}")
    print(f"  Another apply holds the {env} state. Wait for it to finish and run again; if it")
    print(f"  died, remove live/{env}/{os.environ['AHEAD_REPO']}/state.lock (terraform force-unlock).")
    sys.exit(1)
plan, want = tf.plan(env)
tf.show(plan)
if plan["blocked"]:
    for name in plan["blocked"]:
        print(f"Error: Instance cannot be destroyed: {name} has prevent_destroy for {env}")
    print("  This change would destroy it and its data. To rename it, move it in the state")
    print("  instead (terraform's moved block); to retire it, drop the protection first.")
    sys.exit(1)
live.mkdir(parents=True, exist_ok=True)
changed = bool(plan["add"] or plan["change"] or plan["destroy"])
new_state = {"serial": plan["serial"] + changed, "commit": os.environ["AHEAD_COMMIT"],
             "run": int(os.environ["AHEAD_RUN_ID"]), "resources": want}
(live / "state.json.tmp").write_text(json.dumps(new_state, indent=2, sort_keys=True) + "\n")
os.replace(live / "state.json.tmp", live / "state.json")
replaced = len(plan["replace"])
print(f"Apply complete! Resources: {len(plan['add']) + replaced} added, "
      f"{len(plan['change']) - replaced} changed, {len(plan['destroy']) + replaced} destroyed.")
