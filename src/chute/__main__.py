"""``python -m chute``: the ``chute`` command (``python -m chute demo``, ...)."""

import sys

from ._cli import main

sys.exit(main())
