#!/usr/bin/env python
"""Write a small CVACT tree in the release's layout (ACT_data.mat, ANU_data_small,
ANU_data_test) with a learnable planted structure.

python tools/make_cvact_fixture.py ROOT [--train 96] [--val 32] [--test 32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.geo.fixture import write_cvact_fixture  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ids = write_cvact_fixture(args.root, args.train, args.val, args.test, seed=args.seed)
    print(json.dumps({"root": args.root, **{k: len(ids[k]) for k in ("train", "val", "test", "dropped")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
