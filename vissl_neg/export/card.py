"""A release's model card: the run's evaluation results, and README.md with the Hugging Face
front matter (library_name, license, tags, datasets, model-index) over the recipe, the
numbers, how to load the weights and the full config."""

from __future__ import annotations

import json

import yaml

METHODS = {
    "moco_v2": "MoCo v2",
    "moco_v3": "MoCo v3",
    "moco_in_batch": "MoCo with in-batch negatives",
    "sample4geo": "Sample4Geo",
}


def tags(cfg, geo: bool) -> list[str]:
    out = ["image-feature-extraction", "timm", "vissl_neg", "self-supervised", "contrastive-learning"]
    if geo:
        return out + ["sample4geo", "cross-view-geo-localization", "hard-negative-mining"]
    in_batch = cfg.negatives.source == "batch"
    out += ["moco", ("moco-v3" if cfg.model.predictor_hidden else "in-batch-negatives") if in_batch else "moco-v2"]
    if cfg.negatives.source == "memory_bank":
        out.append("memory-bank")
    names = [str(s["name"]).replace("_", "-") for s in cfg.negatives.strategies]
    out += ["hard-negatives"] * bool(names) + [n for n in dict.fromkeys(names)]
    if cfg.loss.name == "debiased":
        out.append("debiased-contrastive-loss")
    return out


def front_matter(card: dict, cfg, geo: bool, repo_id: str, license: str) -> dict:
    """The Hugging Face metadata block of README.md."""
    name, hub_id = cfg.data.title, cfg.data.hub_id
    meta = {
        "library_name": "timm",
        "license": license,
        "pipeline_tag": "image-feature-extraction",
        "tags": tags(cfg, geo),
    }
    if hub_id:
        meta["datasets"] = [hub_id]
    if card["results"]:
        meta["model-index"] = [
            {
                "name": repo_id.split("/")[-1],
                "results": [
                    {
                        "task": {"type": "image-feature-extraction", "name": r["task"]},
                        "dataset": {"name": name, "type": hub_id or cfg.data.name, "split": r["split"]},
                        "metrics": [{"type": r["metric"], "name": r["name"], "value": r["value"]}],
                    }
                    for r in card["results"]
                ],
            }
        ]
    return meta


def recipe(cfg, geo: bool, card: dict) -> list[tuple[str, str]]:
    """The key config values, as (what, value) rows."""
    m, o = cfg.model, cfg.optim
    rows = [
        (
            "backbone",
            f"`{m.backbone}` (timm), random init"
            if not getattr(m, "pretrained", False) and not getattr(m, "pretrained_file", "")
            else f"`{m.backbone}` (timm), from pretrained weights",
        )
    ]
    if m.patch_size:
        rows.append(("patch size", str(m.patch_size)))
    if geo:
        d = cfg.data
        rows += [
            (
                "method",
                "Sample4Geo: one shared encoder, symmetric InfoNCE with a learnable logit scale "
                f"(label smoothing {cfg.loss.label_smoothing}), GPS / mined hard-negative batches",
            ),
            ("inputs", f"satellite {d.sat_size}x{d.sat_size}, {d.ground_view} {d.ground_size[0]}x{d.ground_size[1]}"),
            (
                "sampling",
                "one pair per class in a batch, no GPS or mined neighbours"
                if d.sampler == "classes"
                else f"{cfg.sampling.neighbour_select} of the {cfg.sampling.neighbour_range} nearest; "
                f"GPS for {cfg.sampling.gps_epochs} epochs, mined every {cfg.sampling.mine_every}",
            ),
            ("benchmark", f"{d.title}; evaluated during training on its {d.monitor_split} split"),
        ]
    else:
        n, a = cfg.negatives, cfg.augment
        strategies = ", ".join(json.dumps(s) for s in n.strategies) or "none"
        shuffle = m.shuffle_bn if card["batch_norm_layers"] else "off (no BatchNorm)"
        predictor = f", predictor {m.dim}-{m.predictor_hidden}-{m.dim}" if m.predictor_hidden else ""
        size = f" of {n.size}" if n.source != "batch" else " (the other keys of the global batch)"
        rows += [
            (
                "method",
                f"{METHODS[card['method']]}: MLP head {m.head_hidden or 'F'}-{m.dim}{predictor}, "
                f"momentum {m.momentum} ({m.momentum_schedule}), shuffle-BN {shuffle}",
            ),
            ("negatives", f"{n.source}{size}; strategies: {strategies}"),
            (
                "loss",
                f"{cfg.loss.name}, temperature {cfg.loss.temperature}"
                + (", symmetric (both views as queries)" if cfg.loss.both_views else ""),
            ),
            (
                "views",
                f"{a.size}x{a.size}, crop scale {a.crop_scale}, colour jitter p {a.jitter_p}, "
                f"blur p {a.blur_p}, flip p {a.flip_p}",
            ),
        ]
    rows += [
        (
            "optimiser",
            f"{o.name}, lr {o.lr}, weight decay {o.weight_decay}, batch {o.batch_size}, "
            f"{o.warmup_epochs} warm-up epochs, cosine",
        ),
        (
            "training",
            f"{card['step']} steps ({card['epochs']} full epochs of {cfg.train.epochs}), seed {cfg.train.seed}",
        ),
    ]
    return rows


def render_readme(card: dict, cfg, geo: bool, repo_id: str, license: str) -> str:
    """README.md: YAML front matter, then recipe, results, loading, files and the full config."""
    meta = yaml.safe_dump(front_matter(card, cfg, geo, repo_id, license), sort_keys=False, allow_unicode=True)
    dataset = cfg.data.title
    method = METHODS[card["method"]]
    c, h, w = card["input"]["input_size"]
    lines = [
        f"---\n{meta}---",
        f"# {card['backbone']} · {method} · {dataset}",
        "",
        f"A `{card['backbone']}` image encoder trained with {method} on {dataset} by "
        f"vissl_neg ({card['step']} steps). The classifier is removed: the model "
        f"returns pooled {card['num_features']}-d features of {c}x{h}x{w} images.",
        "",
    ]
    if card.get("small_stem"):
        lines += [
            "> **Modified stem.** This run used `model.small_stem=true` (first convolution with stride 1, "
            "no stem max-pool), which timm's config cannot express: after loading, call "
            "`vissl_neg.models.apply_small_stem(model)` or the features differ from the trained ones.",
            "",
        ]
    lines += ["## Results", ""]
    if card["results"]:
        lines += ["| evaluation | split | this model | random init | from |", "|---|---|---|---|---|"]
        for r in card["results"]:
            base = "" if r["random_init"] is None else r["random_init"]
            lines.append(f"| {r['name']} | {r['split']} | {r['value']} | {base} | `{r['source']}` |")
        protocols = dict.fromkeys(r["protocol"] for r in card["results"] if r.get("protocol"))
        lines += [f"\nProtocol: {p}." for p in protocols]
    else:
        lines.append(
            "No evaluation found in the run directory (run tools/knn.py, tools/linear_probe.py or "
            "tools/eval_geo.py before exporting)."
        )
    for item in card["skipped"]:
        lines.append(f"\nLeft out, stale: {item}.")
    lines += ["", "## Recipe", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in recipe(cfg, geo, card)]
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "import timm, torch",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True)  # or "local-dir:PATH/TO/export"',
        "model.eval()",
        "data_cfg = timm.data.resolve_data_config({}, model=model)  # size, mean, std, crop of the training",
        "transform = timm.data.create_transform(**data_cfg)",
        "with torch.no_grad():",
        f"    features = model(transform(image).unsqueeze(0))  # (1, {card['num_features']})",
        "```",
        "",
        f'`config.json` rebuilds the trained architecture: `timm.create_model("{card["backbone"]}", '
        + ", ".join(f"{k}={v!r}" for k, v in card["model_args"].items())
        + ")`.",
        "`backbone.pth` holds the same state dict for plain `torch.load(..., weights_only=True)` "
        "(for ResNets torchvision's `resnet*` loads it with only `fc` missing).",
        "",
    ]
    if geo:
        lines += [
            f"Both views go through the same encoder: satellite tiles at {h}x{w} (the config's input size) "
            f"and {card['input']['ground_view']}s at {card['input']['ground_size'][0]}x{card['input']['ground_size'][1]}; "
            "compare L2-normalised features with a dot product.",
            "",
        ]
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{name}` | `{digest}` |" for name, digest in card["sha256"].items()]
    lines += ["", "## Full config", "", "```yaml", yaml.safe_dump(card["config"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
