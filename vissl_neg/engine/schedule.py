"""Learning-rate schedule: linear warm-up then cosine decay, as a pure function of the step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """lr at ``step`` (0-based): base·(step+1)/warmup during warm-up, then
    min + (base − min)·(1 + cos(π·t))/2 with t the fraction of the remaining steps done."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
