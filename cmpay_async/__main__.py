"""``python -m cmpay_async``: see ``python -m cmpay_async --help``."""

import sys

from ._cli import main

sys.exit(main())
