"""The protocol of a MoCo-family loss and its registry entries.

A loss is a dataclass of its config section (``loss: {name: …, …}``, the name registered in
``vissl_neg.losses.LOSSES``) that subclasses :class:`ContrastiveLoss`; the shared keys are
the temperature, ``symmetric`` (both views act as queries, each against the other view's key,
the loss the mean of the two directions: MoCo v3's symmetrised loss, Hoang et al.'s dual view)
and ``scale`` (a factor on the loss: MoCo v3's reference multiplies its summed directions by
2T, i.e. ``scale: 4T`` on this mean). Each subclass adds its own keys and implements:

- ``__call__(pos, sims, suspected=None, cancel="eliminate")``: pos (B,) q·k, sims (B, N)
  q·n over everything the query is contrasted with -> the mean loss of one direction;
  ``suspected`` (B, N) marks false negatives to cancel (a false_negatives strategy);
- ``check()``: ValueError for values outside their domain;
- ``diagnostics(pos, sims)``: device scalars to log, by TensorBoard tag (detached);
- ``first_log_note(pos, sims, values)``: a one-line note for the first log step, or None.

A new loss is one such class (a module of its own for its formula), its line in ``LOSSES``
and a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vissl_neg.losses.debiased import (
    debiased_clamped_from_similarities,
    debiased_from_similarities,
    tau_plus_below_half,
)
from vissl_neg.losses.false_negatives import false_negative_from_similarities
from vissl_neg.losses.info_nce import info_nce_from_similarities


@dataclass
class ContrastiveLoss:
    name: str = "info_nce"
    temperature: float = 0.2
    symmetric: bool = False
    dual_view: bool = False  # the earlier name of ``symmetric``; either switches it on
    scale: float = 1.0

    cancels_false_negatives = True  # takes a false_negatives strategy's marks
    # keys the single loss section of earlier versions had for every loss: a saved config of
    # another loss carries them at these values, which meant "unused"
    retired: ClassVar[dict[str, Any]] = {"tau_plus": 0, "beta": 0}

    @classmethod
    def variants(cls) -> dict[str, type[ContrastiveLoss]]:
        """{loss.name: loss class}: the registered losses."""
        from vissl_neg.losses import LOSSES

        return LOSSES

    @property
    def both_views(self) -> bool:
        return self.symmetric or self.dual_view

    def check(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")

    def __call__(
        self, pos: torch.Tensor, sims: torch.Tensor, suspected: torch.Tensor | None = None, cancel: str = "eliminate"
    ) -> torch.Tensor:
        raise NotImplementedError

    def diagnostics(self, pos: torch.Tensor, sims: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def first_log_note(self, pos: torch.Tensor, sims: torch.Tensor, values: dict[str, float]) -> str | None:
        return None


@dataclass
class InfoNCELoss(ContrastiveLoss):
    """InfoNCE (Oord et al. 2018; MoCo): CE([q·k, q·n_1, …]/T, 0); with suspected false
    negatives, their elimination or attraction (Huynh et al. 2022)."""

    def __call__(self, pos, sims, suspected=None, cancel="eliminate"):
        if suspected is None:
            return info_nce_from_similarities(pos, sims, self.temperature)
        return false_negative_from_similarities(pos, sims, self.temperature, suspected, cancel)


@dataclass
class DebiasedLoss(ContrastiveLoss):
    """Debiased InfoNCE (Chuang et al. 2020) with class prior ``tau_plus``; hardness-weighted
    for ``beta`` > 0 (Robinson et al. 2021). Logs the share of queries whose estimator sits on
    its clamp N·e^{−1/T}, and says at the first log step when that is most of them."""

    name: str = "debiased"
    tau_plus: float = 0.1
    beta: float = 0.0

    cancels_false_negatives = False

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.tau_plus < 1.0:
            raise ValueError(f"tau_plus must be in [0, 1), got {self.tau_plus}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    def __call__(self, pos, sims, suspected=None, cancel="eliminate"):
        if suspected is not None:
            raise ValueError("the debiased loss does not cancel suspected false negatives")
        return debiased_from_similarities(pos, sims, self.temperature, self.tau_plus, self.beta)

    def diagnostics(self, pos, sims):
        return {
            "loss/debiased_clamped_fraction": debiased_clamped_from_similarities(
                pos, sims, self.temperature, self.tau_plus, self.beta
            )
        }

    def first_log_note(self, pos, sims, values):
        fraction = values.get("loss/debiased_clamped_fraction")
        if fraction is None or fraction <= 0.5:
            return None
        below = tau_plus_below_half(pos, sims, self.temperature, self.beta)
        return (
            f"the debiased loss clamps Ng to N·e^(-1/T) for {100 * fraction:.0f}% of the queries at "
            f"loss.tau_plus={self.tau_plus} with {sims.shape[1]} negatives per query (its τ⁺ correction then "
            f"does nothing); on this batch loss.tau_plus below {below:.3g} keeps fewer than half clamped"
        )
