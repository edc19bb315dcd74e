"""``python -m benchmarks [--quick] [--json PATH]``."""

import sys

from .suite import main

sys.exit(main())
