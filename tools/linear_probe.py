#!/usr/bin/env python
"""Linear-probe top-1 of a run's frozen backbone: standardised features, logistic regression.

    python tools/linear_probe.py RUN_DIR [--random-init]

Prints the result and writes RUN_DIR/linear_probe.json (or linear_probe_random_init.json).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.errors import cli_entry  # noqa: E402
from vissl_neg.cli.evaluate import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli_entry(cli)("linear_probe", __doc__))
