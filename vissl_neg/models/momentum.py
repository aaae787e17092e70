"""Momentum (EMA) key encoder update, MoCo (He et al. 2020): θ_k ← m θ_k + (1 − m) θ_q."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """In-place EMA of ``online``'s parameters into ``target``'s, one fused op per tensor list.
    Buffers (BN running statistics) are not averaged: the key encoder keeps its own."""
    params_t: list[torch.Tensor] = list(target.parameters())
    params_o = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(params_t, m)
    torch._foreach_add_(params_t, params_o, alpha=1.0 - m)


def momentum_at(base: float, step: int, total_steps: int, schedule: str) -> float:
    """Fixed ``base``, or BYOL's cosine ramp from ``base`` to 1: 1 − (1 − base)(cos(π t/T) + 1)/2."""
    if schedule == "fixed" or total_steps <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0
