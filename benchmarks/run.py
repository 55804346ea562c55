#!/usr/bin/env python
"""sagegan's benchmarks; ``python benchmarks/run.py --help`` (or ``python -m benchmarks.run``).

The command line of :mod:`benchmarks.harness.cli`; the harness lives in ``benchmarks/harness/``.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
