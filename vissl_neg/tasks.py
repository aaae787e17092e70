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

from vissl_neg.config import SCHEMAS, TaskSchema, config_from_dict, task_name
from vissl_neg.errors import UserError
from vissl_neg.eval.results import geo_results, moco_results
from vissl_neg.runtime import checkpoint as ckpt


class Task:
    """A task's schema (config class, value checks, resumable keys) is the config layer's
    ``SCHEMAS[name]``; the rest of what a task is lives here."""

    name = ""
    evaluate_with = ""  # the tools that evaluate its runs
    backbone_prefix = ""  # the backbone's keys in its model state dict

    @property
    def schema(self) -> TaskSchema:
        return SCHEMAS[self.name]

    def method(self, cfg) -> str:
        """The model card's method name (a key of ``export.card.METHODS``)."""
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
    evaluate_with = "tools/knn.py or tools/linear_probe.py"
    backbone_prefix = "encoder_q.backbone."

    def method(self, cfg) -> str:
        if cfg.negatives.source != "batch":
            return "moco_v2"
        return "moco_v3" if cfg.model.predictor_hidden else "moco_in_batch"

    def trainer(self, cfg, resume=None):
        from vissl_neg.engine.trainer import Trainer

        return Trainer(cfg, resume)

    def backbone_input(self, cfg, state):
        return state["in_chans"], cfg.augment.size

    def preprocessing(self, cfg, in_chans):
        size = cfg.augment.size
        decoded = getattr(cfg.data, "decode_size", 28)  # what EvalTransform crops from: image folders decode
        # to data.decode_size; Fashion-MNIST's images are 28x28
        return {
            "input_size": [in_chans, size, size],
            "interpolation": "bilinear",
            "crop_pct": round(min(1.0, size / decoded), 4),
            "crop_mode": "center",
            "mean": list(cfg.augment.mean),
            "std": list(cfg.augment.std),
        }

    def card_results(self, run_dir, cfg, state):
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
    evaluate_with = "tools/eval_geo.py"
    backbone_prefix = "backbone."

    def method(self, cfg) -> str:
        return "sample4geo"

    def trainer(self, cfg, resume=None):
        from vissl_neg.engine.geo_trainer import GeoTrainer

        return GeoTrainer(cfg, resume)

    def backbone_input(self, cfg, state):
        return 3, None  # two view sizes: no fixed-size model

    def preprocessing(self, cfg, in_chans):
        # both views are resized to their size, no crop; the satellite's is the one config.json can hold
        return {
            "input_size": [3, cfg.data.sat_size, cfg.data.sat_size],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(cfg.augment.mean),
            "std": list(cfg.augment.std),
        }

    def card_results(self, run_dir, cfg, state):
        return geo_results(run_dir, cfg, state)

    def card_fields(self, cfg, state, results):
        d = cfg.data
        return {
            "logit_scale": float(state["model"]["logit_scale"].exp()),
            "recall": {r["name"]: r["value"] for r in results} or None,
            "benchmark": {"name": d.title, "protocol": results[0]["protocol"] if results else None},
            "input_extra": {"ground_size": list(d.ground_size), "ground_view": d.ground_view},
        }


TASKS: dict[str, Task] = {"moco": MocoTask(), "geo": GeoTask()}


def task_of(cfg) -> Task:
    """The task a validated config belongs to."""
    return TASKS[task_name(cfg)]


def load_run(run_dir: str | Path, task: str | None = "moco"):
    """-> (validated config, checkpoint state) of a run directory's ``last.ckpt``; a run of
    another ``task`` (moco | geo; None = any) is a one-line error."""
    path = Path(run_dir) / ckpt.CHECKPOINT
    if not path.is_file():
        raise UserError(f"'{run_dir}' holds no checkpoint ({ckpt.CHECKPOINT}); is it a run directory?")
    state = ckpt.load(path)
    cfg = config_from_dict(state["config"])
    found = task_of(cfg)
    if task is not None and found.name != task:
        raise UserError(f"'{run_dir}' is a {found.name} run, not a {task} run; evaluate it with {found.evaluate_with}")
    return cfg, state
