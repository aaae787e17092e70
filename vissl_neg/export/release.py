"""Release a run's backbone in timm's Hugging Face hub layout: ``model.safetensors`` and
``config.json`` (``timm.create_model("local-dir:DIR", pretrained=True)`` or, once uploaded,
``"hf-hub:USER/REPO"`` rebuild the trained network), a ``README.md`` model card, and the same
weights as ``backbone.pth`` for torchvision with the card's data as ``model_card.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch
from timm.models._hub import save_config_for_hf

from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine.run_dir import make_output_dir
from vissl_neg.errors import UserError
from vissl_neg.export.card import geo_results, moco_results, render_readme
from vissl_neg.models.encoder import build_backbone, timm_kwargs
from vissl_neg.models.shuffle_bn import count_batch_norms

BACKBONE_PREFIX = "encoder_q.backbone."  # MoCo's query encoder
GEO_BACKBONE_PREFIX = "backbone."  # the shared cross-view encoder
# what config.json keeps of timm's own pretrained_cfg for the architecture; the rest describes timm's weights
ARCH_KEYS = ("architecture", "fixed_input_size", "first_conv", "classifier")


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


def released_backbone(cfg, state: dict) -> tuple[torch.nn.Module, dict]:
    """-> (the trained backbone as plain timm builds it, in eval mode; its timm_kwargs)."""
    geo = getattr(cfg, "task", "moco") == "geo"
    in_chans = 3 if geo else state["in_chans"]
    image_size = None if geo else cfg.augment.size  # geo: two view sizes, no fixed-size models
    kwargs = timm_kwargs(cfg.model.backbone, in_chans, image_size, cfg.model.patch_size)
    model = build_backbone(cfg.model.backbone, in_chans, image_size=image_size, patch_size=cfg.model.patch_size)
    model.load_state_dict(backbone_state_dict(state["model"], GEO_BACKBONE_PREFIX if geo else BACKBONE_PREFIX))
    return model.eval(), kwargs


def preprocessing(cfg, in_chans: int) -> dict:
    """timm's data config of the evaluation view: ``input_size`` (C, H, W), mean, std and the
    centre crop (``crop_pct`` = crop / decoded size; views are resized bilinearly)."""
    if getattr(cfg, "task", "moco") == "geo":  # both views resized to their size, no crop
        return {"input_size": [3, cfg.data.sat_size, cfg.data.sat_size], "interpolation": "bilinear",
                "crop_pct": 1.0, "crop_mode": "center", "mean": list(cfg.augment.mean),
                "std": list(cfg.augment.std)}
    size = cfg.augment.size
    decoded = 28 if cfg.data.name == "fashion_mnist" else cfg.data.decode_size  # what EvalTransform crops from
    return {"input_size": [in_chans, size, size], "interpolation": "bilinear",
            "crop_pct": round(min(1.0, size / decoded), 4), "crop_mode": "center",
            "mean": list(cfg.augment.mean), "std": list(cfg.augment.std)}


def write_config(model: torch.nn.Module, model_args: dict, data: dict, path: Path, license: str,
                 extra: dict | None = None) -> dict:
    """config.json with timm's own writer: architecture, num_classes, num_features, model_args
    and a pretrained_cfg holding ``data`` instead of the preprocessing of timm's weights."""
    src = model.pretrained_cfg
    model.pretrained_cfg = {**{k: src[k] for k in ARCH_KEYS if k in src}, **data, "num_classes": 0,
                            "license": license}
    save_config_for_hf(model, path, model_config=dict(extra or {}), model_args=dict(model_args))
    return json.loads(path.read_text())


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, repo_id: str = "USER/REPO",
               license: str = "apache-2.0", allow_small_stem: bool = False) -> dict:
    """Write model.safetensors, config.json, README.md, backbone.pth and model_card.json into
    ``out_dir`` (default RUN_DIR/export); returns the card. Evaluation results found in RUN_DIR
    (tools/knn.py, tools/linear_probe.py, tools/eval_geo.py) go into the card unless they are
    of another step than the checkpoint."""
    run_dir = Path(run_dir)
    cfg, state = ckpt.load_run(run_dir, task=None)
    geo = getattr(cfg, "task", "moco") == "geo"
    small_stem = not geo and cfg.model.small_stem
    if small_stem and not allow_small_stem:
        raise UserError(f"'{run_dir}' was trained with model.small_stem=true (stride-1 stem, no max-pool), which "
                        "timm's config.json cannot express: the hub model would compute other features; "
                        "export with --allow-small-stem to release it with that caveat in its card")
    model, kwargs = released_backbone(cfg, state)
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    make_output_dir(out_dir, "export folder")
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(weights, out_dir / "backbone.pth")
    safetensors.torch.save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "model.safetensors").chmod((out_dir / "backbone.pth").stat().st_mode)  # it writes 0600
    data = preprocessing(cfg, kwargs["in_chans"])
    config = write_config(model, kwargs, data, out_dir / "config.json", license,
                          {"vissl_neg": {"small_stem": True}} if small_stem else None)
    results, skipped = geo_results(run_dir, state) if geo else moco_results(run_dir, cfg, state)
    card = {
        "backbone": cfg.model.backbone,
        "method": "sample4geo" if geo else "moco_v2",
        "model_args": config.get("model_args", kwargs),
        "num_features": config["num_features"],
        "small_stem": small_stem,
        "batch_norm_layers": count_batch_norms(model),
        "input": {**data, **({"pano_size": list(cfg.data.pano_size)} if geo else {})},
        "load": f"timm.create_model('local-dir:{out_dir}', pretrained=True)",
        "results": results,
        "skipped": skipped,
        **(_geo_extra(state, results) if geo else _moco_extra(results)),
        "step": state["step"],
        "epochs": state["epoch"],
        "config": state["config"],
        "sha256": {name: sha256(out_dir / name) for name in ("model.safetensors", "backbone.pth")},
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    (out_dir / "README.md").write_text(render_readme(card, cfg, geo, repo_id, license))
    return card


def _moco_extra(results: list[dict]) -> dict:
    """kNN / linear-probe top-1 under their own keys (the kNN monitor's is marked as such)."""
    out = {}
    for r in results:
        key = "knn_top1" if r["task"].startswith("kNN") else "linear_probe_top1"
        out[key + ("_monitor" if r["source"] == "last.ckpt" else "")] = r["value"]
    return out


def _geo_extra(state: dict, results: list[dict]) -> dict:
    return {"logit_scale": float(state["model"]["logit_scale"].exp()),
            "recall": {r["name"]: r["value"] for r in results} or None}
