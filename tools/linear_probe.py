#!/usr/bin/env python
"""``vissl-neg linear-probe`` from a checkout: python tools/linear_probe.py --help (the code is vissl_neg.cli.evaluate.linear_probe_main)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.cli.evaluate import linear_probe_main  # noqa: E402

main = linear_probe_main

if __name__ == "__main__":
    sys.exit(main())
