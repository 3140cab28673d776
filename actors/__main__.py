"""``python -m actors`` is the ``rayline`` command."""

import sys

from actors.cli import main

sys.exit(main())
