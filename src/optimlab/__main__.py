"""``python -m optimlab``: the lab's command line (needs the ``optimlab[lab]`` extra)."""

import sys

from optimlab.lab.commands.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
