"""``python -m lakehouse`` is the same as the ``opensky-lakehouse`` console script."""

import sys

from lakehouse.cli import main

sys.exit(main())
