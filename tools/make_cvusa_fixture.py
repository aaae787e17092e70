#!/usr/bin/env python
"""Write a small CVUSA tree in the real layout (with a learnable planted structure).

python tools/make_cvusa_fixture.py ROOT [--train 96] [--val 32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.geo.fixture import write_cvusa_fixture  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ids = write_cvusa_fixture(args.root, args.train, args.val, seed=args.seed)
    print(json.dumps({"root": args.root, "train": len(ids["train"]), "val": len(ids["test"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
