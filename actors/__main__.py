"""``python -m actors`` is the ``rayline`` command."""

import sys

from actors.cli import main

if __name__ == "__main__":  # (a spawned child imports this module as __mp_main__: not again)
    sys.exit(main())
