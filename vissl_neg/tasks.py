"""The tasks vissl_neg trains, looked up in one place.

A config's top-level ``task`` key (default ``moco``) names an entry of ``TASKS``; the task
object says what the rest of the package needs to know about it: its config schema and
checks, which keys may change on resume, its trainer (which builds the model, its batches
and its step for the one training loop), how its runs are evaluated, and what its export
releases. Everything else asks :func:`task_of` (or ``TASKS``) instead of testing a name.

A new task is a :class:`Task` subclass here, its line in ``TASKS``, a trainer on
``engine/base.py``'s loop and a config.
"""

from __future__ import annotations

from pathlib import Path

from vissl_neg.config.geo_schema import GEO_RESUMABLE_KEYS, GeoConfig
from vissl_neg.config.schema import RESUMABLE_KEYS, Config


class Task:
    name = ""
    config = Config
    resumable_keys: tuple[str, ...] = ()
    evaluate_with = ""  # the tools that evaluate its runs
    backbone_prefix = ""  # the backbone's keys in its model state dict

    def method(self, cfg) -> str:
        """The model card's method name (a key of ``export.card.METHODS``)."""
        raise NotImplementedError

    def validate(self, cfg) -> None:
        raise NotImplementedError

    def trainer(self, cfg, resume: bool | None = None):
        raise NotImplementedError

    def backbone_input(self, cfg, state: dict) -> tuple[int, int | None]:
        """(input channels, a fixed image size or None) of the released backbone."""
        raise NotImplementedError

    def preprocessing(self, cfg, in_chans: int) -> dict:
        """timm's data config of the evaluation view (input_size, mean, std, crop)."""
        raise NotImplementedError

    def card_results(self, run_dir: Path, cfg, state: dict) -> tuple[list[dict], list[str]]:
        """(evaluation results for the model card, result files skipped as stale)."""
        raise NotImplementedError

    def card_fields(self, cfg, state: dict, results: list[dict]) -> dict:
        """Task-specific fields of model_card.json."""
        return {}


class MocoTask(Task):
    """Self-supervised pretraining of one encoder with a momentum key encoder and a negative
    source (MoCo v2 / v3, SimCLR-style in-batch negatives, every hard-negative strategy)."""

    name = "moco"
    config = Config
    resumable_keys = RESUMABLE_KEYS
    evaluate_with = "tools/knn.py or tools/linear_probe.py"
    backbone_prefix = "encoder_q.backbone."

    def method(self, cfg) -> str:
        if cfg.negatives.source != "batch":
            return "moco_v2"
        return "moco_v3" if cfg.model.predictor_hidden else "moco_in_batch"

    def validate(self, cfg) -> None:
        from vissl_neg.config.load import validate

        validate(cfg)

    def trainer(self, cfg, resume=None):
        from vissl_neg.engine.trainer import Trainer

        return Trainer(cfg, resume)

    def backbone_input(self, cfg, state):
        return state["in_chans"], cfg.augment.size

    def preprocessing(self, cfg, in_chans):
        size = cfg.augment.size
        decoded = 28 if cfg.data.name == "fashion_mnist" else cfg.data.decode_size  # what EvalTransform crops from
        return {"input_size": [in_chans, size, size], "interpolation": "bilinear",
                "crop_pct": round(min(1.0, size / decoded), 4), "crop_mode": "center",
                "mean": list(cfg.augment.mean), "std": list(cfg.augment.std)}

    def card_results(self, run_dir, cfg, state):
        from vissl_neg.export.card import moco_results

        return moco_results(run_dir, cfg, state)

    def card_fields(self, cfg, state, results):
        """kNN / linear-probe top-1 under their own keys (the kNN monitor's is marked as such)."""
        out = {}
        for r in results:
            key = "knn_top1" if r["task"].startswith("kNN") else "linear_probe_top1"
            out[key + ("_monitor" if r["source"] == "last.ckpt" else "")] = r["value"]
        return out


class GeoTask(Task):
    """Cross-view geo-localisation (Sample4Geo): one shared encoder for ground panoramas and
    satellite tiles, trained on hard-negative batches."""

    name = "geo"
    config = GeoConfig
    resumable_keys = GEO_RESUMABLE_KEYS
    evaluate_with = "tools/eval_geo.py"
    backbone_prefix = "backbone."

    def method(self, cfg) -> str:
        return "sample4geo"

    def validate(self, cfg) -> None:
        from vissl_neg.config.load import validate_geo

        validate_geo(cfg)

    def trainer(self, cfg, resume=None):
        from vissl_neg.engine.geo_trainer import GeoTrainer

        return GeoTrainer(cfg, resume)

    def backbone_input(self, cfg, state):
        return 3, None  # two view sizes: no fixed-size model

    def preprocessing(self, cfg, in_chans):
        # both views are resized to their size, no crop; the satellite's is the one config.json can hold
        return {"input_size": [3, cfg.data.sat_size, cfg.data.sat_size], "interpolation": "bilinear",
                "crop_pct": 1.0, "crop_mode": "center", "mean": list(cfg.augment.mean), "std": list(cfg.augment.std)}

    def card_results(self, run_dir, cfg, state):
        from vissl_neg.export.card import geo_results

        return geo_results(run_dir, state)

    def card_fields(self, cfg, state, results):
        return {"logit_scale": float(state["model"]["logit_scale"].exp()),
                "recall": {r["name"]: r["value"] for r in results} or None,
                "input_extra": {"pano_size": list(cfg.data.pano_size)}}


TASKS: dict[str, Task] = {"moco": MocoTask(), "geo": GeoTask()}


def task_of(cfg) -> Task:
    """The task a validated config belongs to."""
    return TASKS[getattr(cfg, "task", "moco")]
