"""Evaluate a run directory, as tools/knn.py, tools/linear_probe.py and tools/eval_geo.py do:
a MoCo run's backbone by kNN or linear probe, a cross-view run's encoder by recall (or, for
either, the random-init baseline of its config); each writes its JSON beside the checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.augment import EvalTransform
from vissl_neg.augment.cross_view import EvalPairTransform
from vissl_neg.data import build_dataset
from vissl_neg.errors import UserError, cli_entry
from vissl_neg.eval.evaluate import evaluate_backbone, recalibrate_bn
from vissl_neg.export.release import backbone_state_dict
from vissl_neg.geo.retrieval import evaluate_retrievals
from vissl_neg.models import backbone_from_config
from vissl_neg.models.cross_view import build_cross_view_model
from vissl_neg.runtime import checkpoint as ckpt
from vissl_neg.runtime.device import resolve_amp
from vissl_neg.tasks import load_run


def evaluate_run(run_dir: str | Path, kind: str, random_init: bool = False, device: str = "cpu") -> dict:
    """Evaluate RUN_DIR's trained backbone (or, with ``random_init``, the same architecture
    freshly initialised with the run's seed, BN statistics re-estimated); writes RUN_DIR/<kind>[_random_init].json."""
    cfg, state = load_run(run_dir)
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(cfg.model, state["in_chans"], cfg.augment.size)
    if random_init:
        train_set = build_dataset(cfg.data, "train")
        dev = torch.device(device)
        recalibrate_bn(
            backbone.to(dev), train_set, EvalTransform(cfg.augment, state["in_chans"]).to(dev), dev, seed=cfg.train.seed
        )
    else:
        backbone.load_state_dict(backbone_state_dict(state["model"]))
    if kind == "linear_probe" and cfg.eval.linear_protocol == "sgd":
        from vissl_neg.eval.linear_sgd import linear_sgd

        probe_dir = Path(run_dir) / ("linear_sgd_random_init" if random_init else "linear_sgd")
        probe_dir.mkdir(exist_ok=True)
        result = linear_sgd(cfg, backbone, torch.device(device), probe_dir)
    else:
        result = evaluate_backbone(cfg, backbone, kind, torch.device(device))
    result.update({"run_dir": str(run_dir), "random_init": random_init, "step": state["step"]})
    name = f"{kind}_random_init.json" if random_init else f"{kind}.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=2))
    return result


KNN_DOC = """Weighted kNN top-1 (cosine) of a run's frozen backbone on the test split.

    vissl-neg knn RUN_DIR [--random-init]

Prints the result and writes RUN_DIR/knn.json (or knn_random_init.json).
"""

LINEAR_PROBE_DOC = """Linear-probe top-1 of a run's frozen backbone: standardised features, logistic regression.

    vissl-neg linear-probe RUN_DIR [--random-init]

Prints the result and writes RUN_DIR/linear_probe.json (or linear_probe_random_init.json).
"""

EVAL_GEO_DOC = """A geo run's retrieval numbers on its benchmark (CVUSA, CVACT, VIGOR, University-1652), by
the benchmark's protocol: R@1, R@5, R@10, R@1%, and VIGOR's hit rate or University-1652's mAP.

    vissl-neg eval-geo RUN_DIR [--random-init] [--root /data/CVACT] [--split test]

--split: the benchmark's split (default: the one the run monitored, e.g. CVACT's val).

Prints the result and writes RUN_DIR/eval_geo.json (or eval_geo_random_init.json).
"""


def cli(kind: str, doc: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """The shared command line of ``vissl-neg knn`` and ``vissl-neg linear-probe`` (and tools/knn.py, ...)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture, untrained")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_run(args.run_dir, kind, args.random_init, args.device)))
    return 0


@cli_entry
def knn_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return cli("knn", KNN_DOC, argv, prog)


@cli_entry
def linear_probe_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return cli("linear_probe", LINEAR_PROBE_DOC, argv, prog)


@cli_entry
def eval_geo_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The command line of ``vissl-neg eval-geo`` (and tools/eval_geo.py)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description=EVAL_GEO_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture, untrained")
    parser.add_argument("--root", help="the data set's root, if it moved since training (default: the run's data.root)")
    parser.add_argument("--split", help="the split to evaluate (default: the split the run monitored)")
    parser.add_argument("--best", action="store_true", help="the weights eval.keep_best kept (RUN_DIR/best.ckpt)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_geo_run(args.run_dir, args.random_init, args.device, args.root, args.split, args.best)))
    return 0


def evaluate_geo_run(
    run_dir: str | Path,
    random_init: bool = False,
    device: str = "cpu",
    root: str | None = None,
    split: str | None = None,
    best: bool = False,
) -> dict:
    """The benchmark's evaluation of RUN_DIR's encoder (or, with ``random_init``, the same
    architecture untrained, BN statistics re-estimated on the training pairs; with ``best``,
    the weights ``eval.keep_best`` kept) on ``split`` (default: the split the run monitored);
    writes RUN_DIR/eval_geo[_random_init|_best].json."""
    cfg, state = load_run(run_dir, "geo")
    d = cfg.data
    split = split or d.monitor_split
    if split not in d.splits:
        raise UserError(f"{d.title} has no split '{split}' to evaluate (splits: {', '.join(d.splits)})")
    dev = torch.device(device)
    torch.manual_seed(cfg.train.seed)
    model = build_cross_view_model(cfg.model, d.sat_size, d.ground_size).to(dev)
    transform = EvalPairTransform(cfg.augment.mean, cfg.augment.std).to(dev)
    if random_init:
        train_set = d.build("train", root)
        recalibrate_bn(
            model,
            train_set,
            transform,
            dev,
            batches=8,
            batch_size=min(32, len(train_set)),
            seed=cfg.train.seed,
            views=(0, 1),
        )
    else:
        if best:
            path = Path(run_dir) / ckpt.BEST
            if not path.is_file():
                raise UserError(
                    f"'{path}' does not exist: the run kept no best weights (eval.keep_best: true keeps them)"
                )
            state = ckpt.load(path)
        model.load_state_dict(state["model"])
    t0 = time.perf_counter()
    retrievals = d.retrievals(split, root)
    values = evaluate_retrievals(
        model,
        retrievals,
        transform,
        dev,
        cfg.eval.batch_size,
        d.num_workers,
        cfg.eval.chunk_size or None,
        resolve_amp(cfg.train.amp, dev),
    )
    queries = sum(r.num_queries for r in retrievals)
    result = {
        **{k: round(v, 2) for k, v in values.items()},
        "queries": queries,
        "split": split,
        "benchmark": d.title,
        "protocol": d.protocol(split),
        "seconds": round(time.perf_counter() - t0, 1),
        "run_dir": str(run_dir),
        "random_init": random_init,
        "weights": "random init" if random_init else (ckpt.BEST if best else ckpt.CHECKPOINT),
        "step": state["step"],
    }
    name = "eval_geo_random_init.json" if random_init else ("eval_geo_best.json" if best else "eval_geo.json")
    (Path(run_dir) / name).write_text(json.dumps(result, indent=2))
    return result
