#!/usr/bin/env python
"""Cross-view recall (R@1, R@5, R@10, R@1%) of a geo run: ground panoramas against satellite tiles.

    python tools/eval_geo.py RUN_DIR [--random-init] [--root /data/CVUSA] [--split test]

Prints the result and writes RUN_DIR/eval_geo.json (or eval_geo_random_init.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vissl_neg.errors import cli_entry  # noqa: E402
from vissl_neg.cli.evaluate import evaluate_geo_run  # noqa: E402


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture, untrained")
    parser.add_argument("--root", help="the CVUSA root, if it moved since training (default: the run's data.root)")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_geo_run(args.run_dir, args.random_init, args.device, args.root, args.split)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
