"""``python -m pipelines.blockwise``: see :mod:`pipelines.blockwise.cli`."""

import sys

from pipelines.blockwise.cli import main

sys.exit(main())
