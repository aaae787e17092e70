#!/usr/bin/env python
"""Write a small VIGOR tree in the real layout (four cities, 13-field label files, half-overlapping
satellite tiles, a learnable planted structure).

python tools/make_vigor_fixture.py ROOT [--layout official|reference] [--rows 4] [--cols 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.geo.fixture import write_vigor_fixture  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--layout", choices=("official", "reference"), default="official")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    meta = write_vigor_fixture(args.root, args.layout, args.rows, args.cols, seed=args.seed)
    summary = {
        "root": args.root,
        "layout": args.layout,
        "satellites": sum(len(v) for v in meta["satellites"].values()),
        "panoramas": len(meta["panoramas"]),
        "same_area_train": sum(p["split"] == "train" for p in meta["panoramas"].values()),
        "two_pano_sats": len(meta["two_pano_sats"]),
        "semi_only_sats": len(meta["semi_only_sats"]),
        "semi_first": meta["semi_first"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
