#!/usr/bin/env python
"""``vissl-neg knn`` from a checkout: python tools/knn.py --help (the code is vissl_neg.cli.evaluate.knn_main)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.cli.evaluate import knn_main  # noqa: E402

main = knn_main

if __name__ == "__main__":
    sys.exit(main())
