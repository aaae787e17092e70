"""Pretrain with a config and dotted overrides; re-running on an existing run directory resumes.
The config's ``task`` (vissl_neg/tasks.py) picks what is trained: moco (default) or geo
(cross-view retrieval, Sample4Geo). ``--config`` takes a YAML file or the name of a shipped
config (``vissl-neg train --config fmnist_mochi``).

    vissl-neg train --config configs/fmnist_moco.yaml optim.lr=0.1 data.root=/path
    vissl-neg train --config cvusa_sample4geo data.root=/data/CVUSA
    vissl-neg train --resume runs/fmnist_moco
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vissl_neg.config import load_config
from vissl_neg.errors import UserError, cli_entry
from vissl_neg.runtime import distributed as dist
from vissl_neg.tasks import task_of


@cli_entry
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", help="YAML config or a shipped config's name (default: the built-in Fashion-MNIST recipe)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR",
        help="continue from RUN_DIR/last.ckpt (or train.out_dir's); fails if there is none",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.1")
    args = parser.parse_args(argv)
    config_path = args.config
    overrides = list(args.overrides)
    if isinstance(args.resume, str):
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"cannot resume: '{run_dir}' holds no config.yaml (is it a run directory?)")
        config_path = config_path or run_dir / "config.yaml"
        overrides.append(f"train.out_dir={run_dir}")
    cfg = load_config(config_path, overrides)
    result = task_of(cfg).trainer(cfg, resume=True if args.resume else None).fit()
    if dist.is_main():
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 130 if result.get("stopped") else 0
