"""``python -m jobber``: the same as the ``jobber`` command."""

import sys

from jobber.cli import main

sys.exit(main())
