"""Draw a run's TensorBoard logs as one picture: loss and learning rate, kNN top-1 (or
recall), mean positive / negative cosine, false negatives, synthetic negatives, and the
score distributions early, midway and late. Training draws it at the end of every run.

    vissl-neg report RUN_DIR [--out PATH]

Writes RUN_DIR/report.png (or PATH).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vissl_neg.engine.report import REPORT, write_report
from vissl_neg.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", help=f"the PNG to write (default: RUN_DIR/{REPORT})")
    args = parser.parse_args(argv)
    out = Path(args.out or Path(args.run_dir) / REPORT)
    panels = write_report(args.run_dir, out)
    empty = [title for title, drawn in panels.items() if not drawn]
    print(f"wrote {out}" + (f" (not logged in this run: {'; '.join(empty)})" if empty else ""))
    return 0
