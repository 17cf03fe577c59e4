"""``python -m tfos``: the command line (see :mod:`tfos.cli`)."""

import sys

from tfos.cli import main

sys.exit(main())
