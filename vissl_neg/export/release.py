"""Release a run's backbone in timm's Hugging Face hub layout: ``model.safetensors`` and
``config.json`` (``timm.create_model("local-dir:DIR", pretrained=True)`` or, once uploaded,
``"hf-hub:USER/REPO"`` rebuild the trained network), a ``README.md`` model card, and the same
weights as ``backbone.pth`` for torchvision with the card's data as ``model_card.json``."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import safetensors.torch
import torch
from timm.models._hub import save_config_for_hf

from vissl_neg.engine.run_dir import make_output_dir
from vissl_neg.errors import UserError
from vissl_neg.export.card import render_readme
from vissl_neg.models.encoder import build_backbone, timm_kwargs
from vissl_neg.models.shuffle_bn import count_batch_norms
from vissl_neg.tasks import TASKS, load_run, task_of

# what config.json keeps of timm's own pretrained_cfg for the architecture; the rest describes timm's weights
ARCH_KEYS = ("architecture", "fixed_input_size", "first_conv", "classifier")
# config keys that name files or folders of the training machine: the export keeps them out
PATH_KEYS = ("data.root", "data.classes", "data.neighbours", "model.pretrained_file", "train.out_dir")
KEPT_WORDS = ("", "auto", "none")  # values of those keys that name no path
PLACEHOLDER = "<local path, not published>"
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def public_config(config: dict) -> dict:
    """A copy of a run's config without paths of the training machine: the PATH_KEYS and any
    other string that is an absolute or home path become PLACEHOLDER."""

    def clean(value, key: str):
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, key) for v in value]
        if isinstance(value, str) and (
            (key in PATH_KEYS and value.strip().lower() not in KEPT_WORDS) or _ABSOLUTE.match(value.strip())
        ):
            return PLACEHOLDER
        return value

    return clean(config, "")


def backbone_state_dict(model_state: dict, prefix: str = TASKS["moco"].backbone_prefix) -> dict[str, torch.Tensor]:
    """The backbone from a task's model state dict (the task's ``backbone_prefix``), keys as timm names them."""
    sd = {k[len(prefix) :]: v.detach().clone().contiguous() for k, v in model_state.items() if k.startswith(prefix)}
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
    task = task_of(cfg)
    in_chans, image_size = task.backbone_input(cfg, state)
    num_heads = getattr(cfg.model, "num_heads", 0)
    kwargs = timm_kwargs(cfg.model.backbone, in_chans, image_size, cfg.model.patch_size, num_heads)
    model = build_backbone(
        cfg.model.backbone, in_chans, image_size=image_size, patch_size=cfg.model.patch_size, num_heads=num_heads
    )
    model.load_state_dict(backbone_state_dict(state["model"], task.backbone_prefix))
    return model.eval(), kwargs


def write_config(
    model: torch.nn.Module, model_args: dict, data: dict, path: Path, license: str, extra: dict | None = None
) -> dict:
    """config.json with timm's own writer: architecture, num_classes, num_features, model_args
    and a pretrained_cfg holding ``data`` instead of the preprocessing of timm's weights."""
    src = model.pretrained_cfg
    model.pretrained_cfg = {**{k: src[k] for k in ARCH_KEYS if k in src}, **data, "num_classes": 0, "license": license}
    save_config_for_hf(model, path, model_config=dict(extra or {}), model_args=dict(model_args))
    return json.loads(path.read_text())


def export_backbone(
    model: torch.nn.Module,
    out_dir: str | Path,
    model_args: dict | None = None,
    data: dict | None = None,
    license: str = "apache-2.0",
    extra: dict | None = None,
) -> dict:
    """Write a timm backbone (any ``timm.create_model`` result, e.g. one trained in your own
    loop) as model.safetensors + config.json (timm's hub layout: ``timm.create_model(
    "local-dir:OUT_DIR", pretrained=True)`` rebuilds it) and backbone.pth; ``model_args`` are
    the ``create_model`` arguments besides the name (default ``{"num_classes": 0}``), ``data``
    the preprocessing (input_size, mean, std, ...); returns config.json's content."""
    out_dir = Path(out_dir)
    make_output_dir(out_dir, "export folder")
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(weights, out_dir / "backbone.pth")
    safetensors.torch.save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "model.safetensors").chmod((out_dir / "backbone.pth").stat().st_mode)  # it writes 0600
    return write_config(model, model_args or {"num_classes": 0}, data or {}, out_dir / "config.json", license, extra)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    repo_id: str = "USER/REPO",
    license: str = "apache-2.0",
    allow_small_stem: bool = False,
) -> dict:
    """Write model.safetensors, config.json, README.md, backbone.pth and model_card.json into
    ``out_dir`` (default RUN_DIR/export); returns the card. Evaluation results found in RUN_DIR
    (tools/knn.py, tools/linear_probe.py, tools/eval_geo.py) go into the card unless they are
    of another step than the checkpoint. No path of the training machine goes into the
    export: the card names the data set, its config holds PLACEHOLDER for the paths."""
    run_dir = Path(run_dir)
    cfg, state = load_run(run_dir, task=None)
    task = task_of(cfg)
    small_stem = getattr(cfg.model, "small_stem", False)
    if small_stem and not allow_small_stem:
        raise UserError(
            f"'{run_dir}' was trained with model.small_stem=true (stride-1 stem, no max-pool), which "
            "timm's config.json cannot express: the hub model would compute other features; "
            "export with --allow-small-stem to release it with that caveat in its card"
        )
    model, kwargs = released_backbone(cfg, state)
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    data = task.preprocessing(cfg, kwargs["in_chans"])
    config = export_backbone(
        model, out_dir, kwargs, data, license, {"vissl_neg": {"small_stem": True}} if small_stem else None
    )
    results, skipped = task.card_results(run_dir, cfg, state)
    fields = task.card_fields(cfg, state, results)
    dataset = (cfg.data.title, cfg.data.hub_id)
    card = {
        "backbone": cfg.model.backbone,
        "method": task.method(cfg),
        "model_args": config.get("model_args", kwargs),
        "num_features": config["num_features"],
        "small_stem": small_stem,
        "batch_norm_layers": count_batch_norms(model),
        "input": {**data, **fields.pop("input_extra", {})},
        "dataset": {"name": dataset[0], "hub_id": dataset[1], "data.name": cfg.data.name},
        "load": f"timm.create_model('hf-hub:{repo_id}', pretrained=True)",
        "results": results,
        "skipped": skipped,
        **fields,
        "step": state["step"],
        "epochs": state["epoch"],
        "config": public_config(state["config"]),
        "sha256": {name: sha256(out_dir / name) for name in ("model.safetensors", "backbone.pth")},
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    (out_dir / "README.md").write_text(render_readme(card, cfg, task.name == "geo", repo_id, license))
    return card
