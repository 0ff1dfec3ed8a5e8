"""terraform plan, stand-in: plans resources.json against every environment's live state."""

import json
import os
from pathlib import Path

import tf

plans = {}
for env in os.environ.get("PLAN_ENVIRONMENTS", "dev").split():
    plans[env], _ = tf.plan(env)
    tf.show(plans[env])
Path("plan.json").write_text(json.dumps({"commit": os.environ.get("AHEAD_COMMIT"), "plans": plans},
                                        indent=2) + "\n")
print("plan.json written (kept with this run as an artifact)")
