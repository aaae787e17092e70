#!/usr/bin/env python
"""Pretrain with a config and dotted overrides; re-running on an existing run directory resumes.
The config's ``task`` (vissl_neg/tasks.py) picks what is trained: moco (default) or geo
(cross-view retrieval, Sample4Geo).

    python tools/train.py --config configs/fmnist_moco.yaml optim.lr=0.1 data.root=/path
    python tools/train.py --config configs/cvusa_sample4geo.yaml data.root=/data/CVUSA
    python tools/train.py --resume runs/fmnist_moco
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.runtime import distributed as dist  # noqa: E402
from vissl_neg.errors import UserError, cli_entry  # noqa: E402
from vissl_neg.tasks import task_of  # noqa: E402


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: the built-in Fashion-MNIST recipe)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                        help="continue from RUN_DIR/last.ckpt (or train.out_dir's); fails if there is none")
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


if __name__ == "__main__":
    sys.exit(main())
