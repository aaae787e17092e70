"""Symmetric InfoNCE over a batch of matching pairs (CLIP-style; Sample4Geo, Deuser et al.
ICCV 2023): logits = e^s · a bᵀ with s a learnable log-scale (init log(1/0.07)),

    loss = ½ [ CE(logits, I) + CE(logitsᵀ, I) ]

with optional label smoothing; row i of ``a`` matches row i of ``b``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """a, b (B, D) L2-normalised; ``logit_scale`` the log of the inverse temperature -> mean loss."""
    scale = torch.as_tensor(logit_scale, dtype=a.dtype, device=a.device).exp()
    logits = scale * a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.t(), target, label_smoothing=label_smoothing)
    )
