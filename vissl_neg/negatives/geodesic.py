"""Geodesic (slerp) mixup on the hypersphere (Oh et al., NeurIPS 2023).

    slerp(a, b, λ) = sin(λθ)/sin θ · a + sin((1−λ)θ)/sin θ · b,   θ = arccos(a·b)

computed in the equivalent form cos φ · a + sin φ · u with φ = (1−λ)θ and u the unit
direction of b orthogonal to a, which stays on the sphere for every θ. *Ours*: where
sin θ < ε and a·b > 0 (θ → 0) it falls back to normalise(λa + (1−λ)b); for nearly
opposite vectors (any great circle is a geodesic) u is a fixed direction orthogonal to a.

As a strategy: MoCHi's sampling of hard negatives with slerp instead of linear mixing
and λ ~ Beta(α, α) (query weight 0.5 · Beta(α, α) for the s' query mixes, *ours*).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vissl_neg.negatives.mochi import MixCoefficients, Mochi, flat_coefficients
from vissl_neg.negatives.negative_set import Mixes, full_precision, row_combination

EPS = 1e-6


def _orthogonal(a: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to each unit row of a (..., D)."""
    axis = torch.zeros_like(a).scatter(-1, a.abs().argmin(dim=-1, keepdim=True), 1.0)  # one_hot reads back its max
    return F.normalize(axis - (a * axis).sum(-1, keepdim=True) * a, dim=-1)


def slerp(a: torch.Tensor, b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Unit vectors on the great circle from b (lam=0) to a (lam=1). a, b (..., D) unit;
    lam a float or a tensor broadcastable to a's leading dims, e.g. (B,) for (B, D)."""
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device)
    if lam.dim() and lam.dim() < a.dim():
        lam = lam.unsqueeze(-1)
    elif not lam.dim():
        lam = lam.reshape([1] * a.dim())
    dot = (a * b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    perp = b - dot * a
    perp = perp - (perp * a).sum(-1, keepdim=True) * a  # second Gram-Schmidt pass: exact in float32
    sin = perp.norm(dim=-1, keepdim=True)
    theta = torch.atan2(sin, dot)
    opposite = (sin < EPS) & (dot < 0)
    u = torch.where(opposite, _orthogonal(a), perp / sin.clamp_min(EPS))
    phi = (1.0 - lam) * theta
    out = torch.cos(phi) * a + torch.sin(phi) * u
    close = (sin < EPS) & (dot >= 0)
    out = torch.where(close, lam * a + (1.0 - lam) * b, out)
    return F.normalize(out, dim=-1)


def slerp_coefficients(lam: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """slerp(a, b, λ) = c_a · a + c_b · b for unit a, b at angle θ: c_a = sin(λθ)/sin θ,
    c_b = sin((1−λ)θ)/sin θ; the normalised linear mix where sin θ < ε and θ < π/2; for
    nearly opposite a, b (no unique geodesic) the nearer end point (*ours*)."""
    sin = torch.sin(theta)
    safe = sin.clamp_min(EPS)
    c_a, c_b = torch.sin(lam * theta) / safe, torch.sin((1 - lam) * theta) / safe
    close = (sin < EPS) & (theta < 1.5)
    n = (lam**2 + (1 - lam) ** 2 + 2 * lam * (1 - lam) * torch.cos(theta)).clamp_min(EPS).sqrt()
    c_a, c_b = torch.where(close, lam / n, c_a), torch.where(close, (1 - lam) / n, c_b)
    opposite = (sin < EPS) & (theta >= 1.5)
    near_a = (lam >= 0.5).to(lam.dtype)
    return torch.where(opposite, near_a, c_a), torch.where(opposite, 1 - near_a, c_b)


def geodesic_mixes(
    q: torch.Tensor, source: torch.Tensor, c: MixCoefficients, query_dots: torch.Tensor | None = None
) -> Mixes:
    """Synthetic negatives slerp(h_i, h_j, w) and slerp(q, h_jq, wq) of ``c`` (rows of
    ``source`` (M, D)) as :class:`Mixes`; rows that are not unit are slerped as their
    directions. ``query_dots`` (B, s') = q·source[c.jq] when already known."""
    with torch.no_grad():
        anchor = full_precision(q.detach())
        norms = full_precision(source).norm(dim=1).clamp_min(EPS)
        ri, rj = norms[c.i], norms[c.j]
        w = c.w.to(anchor.dtype)
        chord = row_combination(source, c.i, c.j, 1 / ri, -1 / rj, norm=True)
        theta = 2 * torch.asin((chord / 2).clamp(0, 1))  # exact for nearly equal rows, unlike acos
        ca, cb = slerp_coefficients(w, theta)
        if query_dots is None:
            query_dots = torch.einsum("bd,bsd->bs", anchor, full_precision(source[c.jq]))
        rq, rh = anchor.norm(dim=1, keepdim=True).clamp_min(EPS), norms[c.jq]
        cos = (query_dots.detach().to(anchor.dtype) / (rq * rh)).clamp(-1, 1)
        wq = c.wq.to(anchor.dtype)
        qa, qb = slerp_coefficients(wq, torch.acos(cos))
        return Mixes(
            a_rows=torch.cat([c.i, torch.full_like(c.jq, -1)], dim=1),
            b_rows=torch.cat([c.j, c.jq], dim=1),
            a_coef=torch.cat([ca / ri, qa / rq], dim=1),
            b_coef=torch.cat([cb / rj, qb / rh], dim=1),
            anchor=anchor,
        )


def geodesic_mix(q: torch.Tensor, negatives: torch.Tensor, c: MixCoefficients) -> torch.Tensor:
    """q (B, D); negatives (K, D) or (B, K, D); ``c`` with rows of ``negatives`` ->
    (B, s + s', D) synthetic negatives slerp(h_i, h_j, w) and slerp(q, h_jq, wq), detached."""
    source, flat = flat_coefficients(negatives, c)
    return geodesic_mixes(q, source, flat).vectors(source)


@dataclass
class Geodesic(Mochi):
    """Config ``{name: geodesic, n_hard: 1024, s: 1024, s_prime: 0, alpha: 1.0}``: MoCHi's
    sampling with slerp mixes and Beta(alpha, alpha) weights."""

    s_prime: int = 0
    alpha: float = 1.0

    make_mixes = staticmethod(geodesic_mixes)

    @property
    def beta_alpha(self) -> float:
        return self.alpha

    def check(self) -> None:
        super().check()
        if self.alpha <= 0:
            raise ValueError("needs alpha > 0")
