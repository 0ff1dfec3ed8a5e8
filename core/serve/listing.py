"""The read-only listings an SSH client may run: `ssh host status --json`.

Run as `python -m core.serve.listing AHEAD_YML OPERATOR COMMAND [ARGS...]` by the server, with
the operator it authenticated; the command must be one of LISTINGS, and its options are those of
the `ahead` subcommand (global options such as --workspace cannot be given: they would come
after the subcommand, where argparse refuses them).
"""

from __future__ import annotations

import sys
from pathlib import Path

LISTINGS = ("status", "runs", "changes", "drift")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] not in LISTINGS:
        print("ahead: only these listings: " + ", ".join(LISTINGS), file=sys.stderr)
        return 2
    from core import cli

    ahead_yml, _operator, command = Path(argv[0]), argv[1], argv[2:]
    return cli.main(["--workspace", str(ahead_yml.parent), *command])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
