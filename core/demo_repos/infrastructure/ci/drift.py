"""terraform plan -detailed-exitcode, stand-in: plan the environment being checked against its
live state; exit 0 when nothing would change, 2 when something would (drift)."""

import os
import sys

import tf

plan, _ = tf.plan(os.environ["AHEAD_ENVIRONMENT"])
tf.show(plan)
sys.exit(2 if plan["add"] or plan["change"] or plan["destroy"] else 0)
