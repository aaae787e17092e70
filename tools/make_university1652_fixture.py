#!/usr/bin/env python
"""Write a small University-1652 tree in the release's layout (train/satellite, train/drone,
test/query_*, test/gallery_* with distractor classes) with a learnable planted structure.

python tools/make_university1652_fixture.py ROOT [--train 32] [--drones 4] [--test 16] [--distractors 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.geo.fixture import write_university1652_fixture  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=32, help="training classes")
    parser.add_argument("--drones", type=int, default=4, help="drone images per class")
    parser.add_argument("--test", type=int, default=16, help="query classes")
    parser.add_argument("--distractors", type=int, default=4, help="gallery-only classes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_university1652_fixture(args.root, args.train, args.drones, args.test, args.distractors, seed=args.seed)
    print(json.dumps({"root": args.root, **{k: len(v) for k, v in out.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
