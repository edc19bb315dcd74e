"""``python -m benchmarks [--quick] [--codec-only] [--json PATH]``."""

import sys

from .suite import main

sys.exit(main())
