"""``python -m archlab``: the same as the ``archlab`` command."""

import sys

from archlab.cli import main

sys.exit(main())
