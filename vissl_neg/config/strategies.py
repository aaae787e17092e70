"""``negatives.strategies`` -> checked strategy objects: each entry's own rules (its ``check()``)
and the rules of the chain (what each strategy may take from the negatives the one before left)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vissl_neg.config.coerce import build, choose
from vissl_neg.errors import ConfigError

if TYPE_CHECKING:
    from vissl_neg.negatives.strategy import Strategy


def build_strategies(specs: list[dict], negatives: int | None = None, temperature: float | None = None) -> list:
    """``negatives.strategies`` -> strategy objects, each checked; errors name the entry.
    With ``negatives`` (the count each query starts with) a count a strategy takes from
    them (filter/ambiguous keep, n_hard, top) must not exceed what the query has there.
    ``temperature`` (the loss's) fills the ``temperature: 0`` of a strategy that works on logits."""
    from vissl_neg.negatives import STRATEGIES

    built: list[Strategy] = []
    available, narrowed_by = negatives, ""
    for i, spec in enumerate(specs):
        key = f"negatives.strategies[{i}]"
        if "name" not in spec:
            raise ConfigError(f"config key '{key}' needs a name, one of {', '.join(STRATEGIES)}")
        choose(f"{key}.name", str(spec["name"]), STRATEGIES)
        strategy = build(STRATEGIES[spec["name"]], {k: v for k, v in spec.items() if k != "name"}, key, check=False)
        if getattr(strategy, "uses_loss_temperature", False) and strategy.temperature == 0 and temperature:
            strategy.temperature = temperature
        try:
            strategy.check()
        except ValueError as exc:
            raise ConfigError(f"config key '{key}' ({spec['name']}): {exc}") from None
        if strategy.start_epoch < 0:
            raise ConfigError(f"config key '{key}.start_epoch' must be >= 0, got {strategy.start_epoch}")
        mixer = next((b for b in built if b.mixes), None)
        if mixer is not None and strategy.changes_source:
            raise ConfigError(
                f"config key '{key}': {spec['name']} changes the negatives that "
                f"{type(mixer).__name__.lower()} mixes from; list it before the mixing strategy"
            )
        if spec["name"] == "false_negatives" and any(type(b) is type(strategy) for b in built):
            raise ConfigError(f"config key '{key}': only one false_negatives entry may mark the negatives")
        if available is not None:
            for param, value in strategy.limits().items():
                if value > available:
                    raise ConfigError(
                        f"{key}.{param}={value} is larger than the {available} negatives each query has{narrowed_by}"
                    )
            kept = strategy.kept(available)
            if kept is not None:
                available, narrowed_by = kept, f" after {key} ({spec['name']})"
        built.append(strategy)
    return built
