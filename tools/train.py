#!/usr/bin/env python
"""``vissl-neg train`` from a checkout: python tools/train.py --help (the code is vissl_neg.cli.train.main)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
