"""The read-only listings an SSH client may run: `ssh host status --json`.

Run as `python -m core.serve.listing AHEAD_YML OPERATOR COMMAND [ARGS...]` by the server, with
the operator it authenticated; the command must be one of LISTINGS, and its options are those of
the `ahead` subcommand (global options such as --workspace cannot be given: they would come
after the subcommand, where argparse refuses them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

LISTINGS = ("status", "runs", "changes", "drift")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] not in LISTINGS or not read_only(argv[2:]):
        print(
            "ahead: only these listings: " + ", ".join(LISTINGS) + " (drift: only the list and "
            "`drift show`)",
            file=sys.stderr,
        )
        return 2
    # The listings' own module and the door, never core.cli (which imports this server).
    from core.cli import drift as cli_drift
    from core.cli import listings as cli_listings
    from core.text import LOG_FORMAT, InertFormatter, inert_output

    ahead_yml, _operator, command = Path(argv[0]), argv[1], argv[2:]
    parser = argparse.ArgumentParser(prog="ahead")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_listings.add_parsers(sub)
    cli_listings.add_changes_parser(sub)
    cli_drift.add_parser(sub)
    with inert_output():  # usage errors quote the SSH client's arguments
        args = parser.parse_args(command)
    args.workspace, args.as_name = str(ahead_yml.parent), None
    stderr = logging.StreamHandler()
    stderr.setFormatter(InertFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.WARNING, handlers=[stderr])
    handlers = {
        "status": cli_listings.cmd_status,
        "runs": cli_listings.cmd_runs,
        "changes": cli_listings.cmd_changes,
        "drift": cli_drift.cmd_drift,
    }
    with inert_output():
        return cli_listings.run(handlers[args.command], args)


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
