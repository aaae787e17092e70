"""Beta(α, α) draws on the device for the mixing samplers."""

from __future__ import annotations

import torch


def sample_beta(
    alpha: float, shape: tuple[int, ...], device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Beta(α, α) of ``shape``. α = 1 is U(0, 1), drawn directly (and from ``generator``):
    the gamma sampler behind other α costs ~60 ns a draw on a CPU. Other α use the global
    generator (torch's gamma sampler takes none)."""
    if alpha == 1.0:
        return torch.rand(shape, device=device, generator=generator)
    a = torch.full(shape, float(alpha), device=device)
    return torch.distributions.Beta(a, a, validate_args=False).sample()  # validation reads values: a host sync
