#!/usr/bin/env python
"""Paper-scale memory per GPU, computed: queue, memory bank, weights / optimizer state, and
the activations autograd keeps for ResNet-50 at batch 256 in the config's precision
(``train.amp``: off = fp32, as the MoCo v2 reference; bf16 / fp16 autocast; auto = bf16).

Activations are measured, not guessed: one forward of the query encoder (backbone + MoCo
head) on a small batch runs under ``saved_tensors_hooks``, which sees every tensor
autograd stores for the backward pass; bytes per image are scaled to the batch (under
autocast, tensors autograd saves in fp32, e.g. BN statistics, stay fp32).

    python benchmarks/memory_estimate.py [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.models import build_encoder  # noqa: E402

GB = 1024**3


AUTOCAST = {"off": None, "auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}


def saved_activation_bytes(model: torch.nn.Module, batch: int, size: int, dtype: torch.dtype | None) -> int:
    """Bytes autograd saves for backward in one forward of ``batch`` images (under autocast to ``dtype``)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()  # shared storages counted once
        return t

    x = torch.randn(batch, 3, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(x)
    return sum(seen.values())


def estimate_rows(config: str, bank_items: int = 1_281_167, probe_batch: int = 4, overrides=()):
    """-> (config, [(item, what, bytes)]) for ``config`` (with dotted ``overrides``)."""
    cfg = load_config(config, list(overrides))  # the model part only; no data is read
    batch, size, dim = cfg.optim.batch_size, cfg.augment.size, cfg.model.dim
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model, 3, size).train()
    params = sum(p.numel() for p in encoder.parameters())
    dtype = AUTOCAST[cfg.train.amp]
    per_image = saved_activation_bytes(encoder, probe_batch, size, dtype) / probe_batch
    rows = [
        ("queue", f"{cfg.negatives.size} x {dim} fp32 keys (+ labels)", cfg.negatives.size * (dim * 4 + 8)),
        ("memory bank, fp32", f"{bank_items:,} x {dim} (+ labels)", bank_items * (dim * 4 + 8)),
        ("memory bank, bf16", f"{bank_items:,} x {dim} (+ labels)", bank_items * (dim * 2 + 8)),
        ("query encoder weights + grads + SGD momentum", f"{params / 1e6:.1f} M parameters, fp32, x3", params * 4 * 3),
        ("key encoder (EMA) weights", "fp32", params * 4),
        (
            "activations kept for backward",
            f"{per_image / 2**20:.1f} MiB/image x {batch} images, {precision(cfg)}",
            per_image * batch,
        ),
    ]
    return cfg, rows


def precision(cfg) -> str:
    dtype = AUTOCAST[cfg.train.amp]
    return (
        "fp32"
        if dtype is None
        else f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"
    )


def total_with_queue(rows) -> int:
    return sum(b for name, _, b in rows if not name.startswith("memory bank"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/imagenet_mocov2.yaml")
    parser.add_argument("--bank-items", type=int, default=1_281_167, help="ImageNet-1k training images")
    parser.add_argument("--probe-batch", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/memory_estimate.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    cfg, rows = estimate_rows(args.config, args.bank_items, args.probe_batch)
    batch, size, dim = cfg.optim.batch_size, cfg.augment.size, cfg.model.dim
    queue_total = total_with_queue(rows)
    lines = [
        f"{cfg.model.backbone} at {size}x{size}, batch {batch} per GPU, D {dim}, {precision(cfg)} "
        f"(train.amp={cfg.train.amp}, {args.config}); "
        f"activations measured with saved_tensors_hooks on {args.probe_batch} images, torch {torch.__version__}",
        "",
        "| item | what | GiB |",
        "|---|---|---|",
        *[f"| {name} | {what} | {b / GB:.2f} |" for name, what, b in rows],
        f"| **total with the queue** | everything above but the bank | **{queue_total / GB:.2f}** |",
        f"| **total with a bf16 bank instead** | | **{(queue_total - rows[0][2] + rows[2][2]) / GB:.2f}** |",
        "",
        "Not counted: the key encoder's forward (no autograd, freed layer by layer), the (B, K) logits "
        f"({batch} x {cfg.negatives.size} fp32 = {batch * cfg.negatives.size * 4 / GB:.3f} GiB), "
        "cuDNN workspaces and the allocator's slack."
        + (" Measured under CPU autocast, whose op lists are close to CUDA's." if AUTOCAST[cfg.train.amp] else ""),
    ]
    publish(lines, {name: b for name, _, b in rows}, args.out, args.readme, "memory_estimate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
