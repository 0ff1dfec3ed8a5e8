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
    if len(argv) < 3 or argv[2] not in LISTINGS or not read_only(argv[2:]):
        print("ahead: only these listings: " + ", ".join(LISTINGS) + " (drift: only the list and "
              "`drift show`)", file=sys.stderr)
        return 2
    from core import cli

    ahead_yml, _operator, command = Path(argv[0]), argv[1], argv[2:]
    return cli.main(["--workspace", str(ahead_yml.parent), *command])


def read_only(command: list[str]) -> bool:
    """`drift` has actions that write (check, ack, reconcile, trust): only its list and `show`
    are listings."""
    if command[0] != "drift":
        return True
    rest = command[1:]
    if rest and rest[0] == "show":
        return True
    return all(arg.startswith("-") for arg in rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
