"""``python -m lakehouse`` is the same as the ``opensky-lakehouse`` console script."""

import sys

from lakehouse.app.cli import main

sys.exit(main())
