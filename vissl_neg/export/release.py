"""Release a run's backbone as a plain state dict for timm / torchvision, with a model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine.run_dir import make_output_dir
from vissl_neg.errors import UserError

BACKBONE_PREFIX = "encoder_q.backbone."  # MoCo's query encoder
GEO_BACKBONE_PREFIX = "backbone."  # the shared cross-view encoder


def backbone_state_dict(model_state: dict, prefix: str = BACKBONE_PREFIX) -> dict[str, torch.Tensor]:
    """The backbone from a MoCo (or, with GEO_BACKBONE_PREFIX, a cross-view) state dict, keys as timm names them."""
    sd = {k[len(prefix):]: v.detach().clone().contiguous() for k, v in model_state.items() if k.startswith(prefix)}
    if not sd:
        raise UserError(f"the checkpoint holds no '{prefix.rstrip('.')}' weights")
    return sd


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Write ``backbone.pth`` and ``model_card.json`` into ``out_dir`` (default RUN_DIR/export);
    returns the card. Evaluation results found in RUN_DIR (tools/linear_probe.py, tools/knn.py,
    tools/eval_geo.py) go into the card."""
    run_dir = Path(run_dir)
    cfg, state = ckpt.load_run(run_dir, task=None)
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    make_output_dir(out_dir, "export folder")
    weights = out_dir / "backbone.pth"
    geo = getattr(cfg, "task", "moco") == "geo"
    torch.save(backbone_state_dict(state["model"], GEO_BACKBONE_PREFIX if geo else BACKBONE_PREFIX), weights)
    card = {
        "backbone": cfg.model.backbone,
        **(_geo_card(run_dir, cfg, state) if geo else _moco_card(run_dir, cfg, state)),
        "step": state["step"],
        "epochs": state["epoch"],
        "config": state["config"],
        "sha256": sha256(weights),
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    return card


def _read_result(run_dir: Path, name: str) -> dict | None:
    path = run_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _moco_card(run_dir: Path, cfg, state: dict) -> dict:
    """A MoCo run's query-encoder backbone: how to load it, the recipe, kNN / linear-probe top-1."""
    metrics = state.get("metrics", [])
    probes = {name: r for name in ("linear_probe", "knn") if (r := _read_result(run_dir, name)) is not None}
    return {
        "timm_kwargs": {"num_classes": 0, "in_chans": state["in_chans"]},
        "small_stem": cfg.model.small_stem,
        "load": (
            f"timm.create_model('{cfg.model.backbone}', num_classes=0, in_chans={state['in_chans']})"
            ".load_state_dict(torch.load('backbone.pth'), strict=True)"
            + ("; then vissl_neg.models.apply_small_stem(model)" if cfg.model.small_stem else "")
        ),
        "method": "moco_v2",
        "negatives": {"source": cfg.negatives.source, "size": cfg.negatives.size,
                      "strategies": cfg.negatives.strategies},
        "loss": {"name": cfg.loss.name, "temperature": cfg.loss.temperature, "dual_view": cfg.loss.dual_view},
        "data": {"name": cfg.data.name, "image_size": cfg.augment.size, "mean": cfg.augment.mean, "std": cfg.augment.std},
        "knn_top1_monitor": metrics[-1]["knn_top1"] if metrics else None,
        **{f"{name}_top1": r["top1"] for name, r in probes.items()},
    }


def _geo_card(run_dir: Path, cfg, state: dict) -> dict:
    """A cross-view run's shared encoder (Sample4Geo): how to load it, its inputs, its recall."""
    return {
        "timm_kwargs": {"num_classes": 0, "in_chans": 3},
        "load": (f"timm.create_model('{cfg.model.backbone}', num_classes=0)"
                 ".load_state_dict(torch.load('backbone.pth'), strict=True)"),
        "method": "sample4geo",
        "data": {"name": cfg.data.name, "sat_size": cfg.data.sat_size, "pano_size": cfg.data.pano_size,
                 "mean": cfg.augment.mean, "std": cfg.augment.std},
        "logit_scale": float(state["model"]["logit_scale"].exp()),
        "recall_monitor": state["metrics"][-1] if state["metrics"] else None,
        "recall": _read_result(run_dir, "eval_geo"),
    }
