"""vissl_neg: contrastive pretraining where the negatives are the product.

The main building blocks for your own training loop (docs/api.md), imported on first use;
everything else lives in ``vissl_neg.negatives``, ``vissl_neg.losses``, ``vissl_neg.geo`` and
``vissl_neg.export``. Training from a config: ``vissl-neg train --config NAME`` or :func:`train`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access: ``import vissl_neg.errors`` stays cheap)
_EXPORTS = {
    "load_config": "vissl_neg.config",
    "export_backbone": "vissl_neg.export",
    "recall_at_k": "vissl_neg.geo.metrics",
    "gps_neighbours": "vissl_neg.geo.sampling",
    "mined_neighbours": "vissl_neg.geo.sampling",
    "neighbour_batches": "vissl_neg.geo.sampling",
    "debiased_info_nce": "vissl_neg.losses",
    "info_nce": "vissl_neg.losses",
    "GradCache": "vissl_neg.runtime.grad_cache",
    "all_gather_with_grad": "vissl_neg.runtime.distributed",
    **{name: "vissl_neg.negatives" for name in ("MemoryBank", "NegativeQueue", "NegativeSet")},
    **{
        name: "vissl_neg.negatives.functional"
        for name in (
            "ambiguous",
            "batch_negatives",
            "contrastive_loss",
            "false_negatives",
            "feature_transform",
            "filter_hardest",
            "geodesic",
            "mochi",
            "negative_set",
        )
    },
}

if TYPE_CHECKING:
    from vissl_neg.config import load_config
    from vissl_neg.export import export_backbone
    from vissl_neg.geo.metrics import recall_at_k
    from vissl_neg.geo.sampling import gps_neighbours, mined_neighbours, neighbour_batches
    from vissl_neg.losses import debiased_info_nce, info_nce
    from vissl_neg.negatives import MemoryBank, NegativeQueue, NegativeSet
    from vissl_neg.negatives.functional import (
        ambiguous,
        batch_negatives,
        contrastive_loss,
        false_negatives,
        feature_transform,
        filter_hardest,
        geodesic,
        mochi,
        negative_set,
    )
    from vissl_neg.runtime.distributed import all_gather_with_grad
    from vissl_neg.runtime.grad_cache import GradCache


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vissl_neg' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def train(config: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train as ``vissl-neg train`` does: a config file or shipped name, dotted overrides -> the result."""
    from vissl_neg.config import load_config
    from vissl_neg.tasks import task_of

    cfg = load_config(config, overrides)
    return task_of(cfg).trainer(cfg).fit()


__all__ = [
    "__version__",
    "train",
    "GradCache",
    "MemoryBank",
    "NegativeQueue",
    "NegativeSet",
    "all_gather_with_grad",
    "ambiguous",
    "batch_negatives",
    "contrastive_loss",
    "debiased_info_nce",
    "export_backbone",
    "false_negatives",
    "feature_transform",
    "filter_hardest",
    "geodesic",
    "gps_neighbours",
    "info_nce",
    "load_config",
    "mined_neighbours",
    "mochi",
    "negative_set",
    "neighbour_batches",
    "recall_at_k",
]
