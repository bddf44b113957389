"""``python -m boundary_xg``: the ``boundary-xg`` command line."""

import sys

from .cli import main

sys.exit(main())
