"""Export a run's backbone in timm's Hugging Face hub layout, with a model card.

    vissl-neg export RUN_DIR [--out DIR] [--repo-id USER/REPO] [--license apache-2.0]

Writes DIR (default RUN_DIR/export): model.safetensors + config.json
(timm.create_model("local-dir:DIR", pretrained=True) rebuilds the trained backbone, classifier
removed), README.md (the model card: Hugging Face front matter, recipe, results, full config),
backbone.pth (the same state dict for torchvision) and model_card.json. Upload DIR as a model
repository and timm.create_model("hf-hub:USER/REPO", pretrained=True) loads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vissl_neg.errors import cli_entry
from vissl_neg.export import export_run


@cli_entry
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/export)")
    parser.add_argument("--repo-id", default="USER/REPO", help="the Hugging Face repository the card names")
    parser.add_argument("--license", default="apache-2.0", help="the card's license (a Hugging Face license id)")
    parser.add_argument(
        "--allow-small-stem",
        action="store_true",
        help="release a model.small_stem run anyway (its card says to re-apply the stem change)",
    )
    args = parser.parse_args(argv)
    card = export_run(args.run_dir, args.out, args.repo_id, args.license, args.allow_small_stem)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    for item in card["skipped"]:
        print(f"note: left out of the card, stale: {item}", file=sys.stderr)
    if card["small_stem"]:
        print(
            "note: model.small_stem=true: timm rebuilds the plain stem; the card says to apply "
            "vissl_neg.models.apply_small_stem after loading",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "backbone": card["backbone"],
                "step": card["step"],
                "out": str(out),
                "load": f"timm.create_model('local-dir:{out}', pretrained=True)",
                "sha256": card["sha256"],
            }
        )
    )
    return 0
