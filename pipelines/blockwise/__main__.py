"""``python -m pipelines.blockwise``: see :mod:`pipelines.blockwise.cli`.

``worker`` (started by ``--worker-command``) is dispatched before the
command line module is imported, so a worker imports only what its job needs.
"""

import sys

if sys.argv[1:2] == ["worker"]:
    from pipelines.blockwise.worker import main

    sys.exit(main(sys.argv[2:]))

from pipelines.blockwise.cli import main  # noqa: E402

sys.exit(main())
