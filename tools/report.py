#!/usr/bin/env python
"""Draw a run's TensorBoard logs as one picture: loss and learning rate, kNN top-1 (or
recall), mean positive / negative cosine, false negatives, synthetic negatives, and the
score distributions early, midway and late. Training draws it at the end of every run.

    python tools/report.py RUN_DIR [--out PATH]

Writes RUN_DIR/report.png (or PATH).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.engine.report import REPORT, write_report  # noqa: E402
from vissl_neg.errors import cli_entry  # noqa: E402


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", help=f"the PNG to write (default: RUN_DIR/{REPORT})")
    args = parser.parse_args(argv)
    out = Path(args.out or Path(args.run_dir) / REPORT)
    panels = write_report(args.run_dir, out)
    empty = [title for title, drawn in panels.items() if not drawn]
    print(f"wrote {out}" + (f" (not logged in this run: {'; '.join(empty)})" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
