#!/usr/bin/env python
"""Weighted kNN top-1 (cosine) of a run's frozen backbone on the test split.

    python tools/knn.py RUN_DIR [--random-init]

Prints the result and writes RUN_DIR/knn.json (or knn_random_init.json).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.errors import cli_entry  # noqa: E402
from vissl_neg.cli.evaluate import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli_entry(cli)("knn", __doc__))
