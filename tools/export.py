#!/usr/bin/env python
"""Export a run's backbone for timm / torchvision, with a model card.

    python tools/export.py RUN_DIR [--out DIR]

Writes DIR/backbone.pth (a plain state dict: timm.create_model(name, num_classes=0,
in_chans=C).load_state_dict(sd, strict=True)) and DIR/model_card.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.errors import cli_entry  # noqa: E402
from vissl_neg.export import export_run  # noqa: E402


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/export)")
    args = parser.parse_args(argv)
    card = export_run(args.run_dir, args.out)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    print(json.dumps({k: card[k] for k in ("backbone", "step", "sha256")} | {"weights": str(out / "backbone.pth")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
