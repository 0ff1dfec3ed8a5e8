"""`python -m core.cli`: the `ahead` command (what the installed `ahead` runs, without the console)."""

import sys

from core.cli.commands import main

sys.exit(main())
