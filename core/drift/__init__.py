"""Drift: the live state of each environment against git at its deployed commit.

Targets, per (repo, environment):
- `revision`, built in for every environment a repo has deployed to: main ahead of the
  deployed commit (the pending commits) is drift of the whole environment. (An environment never
  deployed to shows as "never" in the overview; it has no live state to compare.)
- `files`, from the pipeline file's `drift:` at the deployed commit: a directory of the repo
  against a live directory on this machine or on a host over SSH. Local trees are compared by
  `git status` with a private index per target (see core/gitio.py "live trees"); remote trees
  are first mirrored over SFTP (only entries whose size, mtime or mode changed are fetched; no
  link is ever followed), then compared the same way.
- `command`, also from `drift:`: a command run in a checkout of the deployed commit, with the
  exit code protocol of `terraform plan -detailed-exitcode` (0 in sync, 2 drifted, anything
  else unknown); terraform and ansible output is summarised.

A check ends `in_sync`, `drifted` or `unknown` (it could not tell: never shown as in sync). The
store keeps the latest finding per target (`drift`), each check (`drift_checks`, the last 100
per target) and acknowledgements (`drift_acks`: valid while the drift's fingerprint is the one
acknowledged and the expiry has not passed). A change of state or of what drifted is audited.

The engine checks on schedule (`every:`, default `settings.drift_interval`), right after each
deploy; the CLI and consoles check on demand in their own process (`ahead drift check`, the
Drift screen's `c`). A per-target file lock keeps two checks of one target from overlapping.

The parts, one module each: targets.py (what is checked; `Target`, `Finding`), checks.py
(revision, files, command), parsers.py (terraform, ansible), mirror.py (SFTP), scheduler.py
(`DriftChecker`: running checks and their schedule, the per-target file lock) and records.py
(the store: record, listing, detail, acknowledge). The names other modules use are re-exported
here: `from core import drift; drift.listing(...)` keeps working. No part imports this module.
"""

from __future__ import annotations

from core.drift.checks import (
    DIFF_FILE_CAP,
    DIFF_FILES,
    DIFF_TOTAL_CAP,
    LIST_CAP,
    check_command,
    check_files_local,
    check_revision,
    read_beneath,
)
from core.drift.mirror import mirror_remote
from core.drift.parsers import OUTPUT_CAP, interpret
from core.drift.records import KEEP_CHECKS, acknowledge, detail, listing, record, record_many, worst
from core.drift.scheduler import DriftChecker
from core.drift.targets import (
    REVISION,
    Finding,
    PipelineCache,
    Target,
    deployed_commits,
    discover,
    unknown,
)

__all__ = [
    "DIFF_FILES",
    "DIFF_FILE_CAP",
    "DIFF_TOTAL_CAP",
    "KEEP_CHECKS",
    "LIST_CAP",
    "OUTPUT_CAP",
    "REVISION",
    "DriftChecker",
    "Finding",
    "PipelineCache",
    "Target",
    "acknowledge",
    "check_command",
    "check_files_local",
    "check_revision",
    "deployed_commits",
    "detail",
    "discover",
    "interpret",
    "listing",
    "mirror_remote",
    "read_beneath",
    "record",
    "record_many",
    "unknown",
    "worst",
]
