#!/usr/bin/env python
"""Linear-probe top-1 of a run's frozen backbone: standardised features, logistic regression.

    python tools/linear_probe.py RUN_DIR [--random-init]

Prints the result and writes RUN_DIR/linear_probe.json (or linear_probe_random_init.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.errors import cli_entry  # noqa: E402
from vissl_neg.eval.run import evaluate_run  # noqa: E402


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture, untrained")
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_run(args.run_dir, "linear_probe", args.random_init, args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
