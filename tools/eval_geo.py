#!/usr/bin/env python
"""``vissl-neg eval-geo`` from a checkout: python tools/eval_geo.py --help (the code is vissl_neg.cli.evaluate.eval_geo_main)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.cli.evaluate import eval_geo_main  # noqa: E402

main = eval_geo_main

if __name__ == "__main__":
    sys.exit(main())
