"""YAML + dotted CLI overrides -> a validated :class:`Config`.

Every problem is raised as a one-line :class:`ConfigError` naming the key, e.g.
``unknown config key 'optim.lrr' (did you mean 'optim.lr'?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vissl_neg.config.geo_schema import AUGMENT_PROBABILITIES, GEO_RESUMABLE_KEYS, GeoConfig
from vissl_neg.config.schema import RESUMABLE_KEYS, Config
from vissl_neg.errors import ConfigError

if TYPE_CHECKING:
    from vissl_neg.negatives.strategy import Strategy


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans: YAML 1.1 also reads on/off/yes/no as booleans,
    which would turn ``train.amp: off`` into False."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)
    prefix = leaf[0] + "." if len(leaf) == 2 else ""
    close = difflib.get_close_matches(leaf[-1], valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(sorted(valid))})"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        if hasattr(tp, "variant"):  # a registry section (the loss): its name picks its class and keys
            return _build_variant(tp, value, key)
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '1e-3' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be of type {_type_name(tp)}, got {value!r}")


def _build(cls: Any, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise _unknown_key(full, names)
        kwargs[key] = _coerce(full, value, hints[key])
    return cls(**kwargs)


def _build_variant(base: Any, values: dict, key: str):
    """A section whose ``name`` selects a registered dataclass with keys of its own."""
    from vissl_neg.losses import LOSSES

    name = values.get("name", base.name)
    _choice(f"{key}.name", str(name), tuple(LOSSES))
    cls = base.variant(name)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        owners = [n for n, other in LOSSES.items() if k in {f.name for f in dataclasses.fields(other)}]
        if k not in names and owners:
            raise ConfigError(
                f"config key '{key}.{k}' belongs to {key}.name={' or '.join(owners)}, not {key}.name={name}"
            )
    built = _build(cls, values, key)
    try:
        built.check()
    except ValueError as exc:  # "<field> must be ...": name the field's key
        field, _, rest = str(exc).partition(" ")
        if field in names:
            raise ConfigError(f"config key '{key}.{field}' {rest}") from None
        raise ConfigError(f"config key '{key}' ({name}): {exc}") from None
    return built


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["optim.lr=0.1", "data.root=/x"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' must look like key=value, e.g. optim.lr=0.1")
        key, raw = item.split("=", 1)
        try:
            value = _yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def shipped_configs() -> dict[str, Path]:
    """{name: file} of the configs shipped with the package: ``vissl_neg/configs`` in an
    installed wheel, the checkout's ``configs/`` folder otherwise (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "configs", package.parent / "configs"):
        files = sorted(folder.glob("*.yaml"))
        if files:
            return {f.stem: f for f in files}
    return {}


def find_config(path: str | Path) -> Path:
    """A config file on disk, else a shipped config named by ``path``: ``NAME``, ``NAME.yaml``
    or ``configs/NAME.yaml`` (the checkout's path, from any folder)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent.name in ("", "configs") and path.suffix in ("", ".yaml"):
        shipped = shipped_configs()
        name = path.stem if path.suffix else path.name
        if name in shipped:
            return shipped[name]
        close = difflib.get_close_matches(name, list(shipped), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (vissl-neg configs lists them)"
        raise ConfigError(f"config file '{path}' does not exist and no shipped config is named '{name}'{hint}")
    raise ConfigError(f"config file '{path}' does not exist")


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a dict. A top-level ``base: other.yaml`` (relative to the file)
    is read first and the file's own keys are merged over it."""
    path = find_config(path)
    try:
        data = _yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"'base' in '{path}' must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen:
        raise ConfigError(f"config file '{path}' includes itself through 'base: {base}'")
    return _merge(read_yaml(base_path, _seen + (path.resolve(),)), data)


def config_from_dict(values: dict) -> Config | GeoConfig:
    """The validated config of the task the top-level ``task`` key names (default moco)."""
    name = values.get("task", "moco")
    _choice("task", str(name), tuple(SCHEMAS))
    values = _without_flat_loss_leftovers(values)
    schema = SCHEMAS[name]
    fields = {f.name for f in dataclasses.fields(schema.config)}
    cfg = _build(schema.config, {k: v for k, v in values.items() if k != "task" or k in fields})
    schema.validate(cfg)
    return cfg


def _without_flat_loss_leftovers(values: dict) -> dict:
    """Configs written before losses had their own keys carry ``loss.tau_plus: 0`` and
    ``loss.beta: 0`` whatever the loss: those zeros meant 'unused' and are dropped."""
    loss = values.get("loss")
    if not isinstance(loss, dict) or loss.get("name", "info_nce") == "debiased":
        return values
    kept = {k: v for k, v in loss.items() if not (k in ("tau_plus", "beta") and v == 0)}
    return {**values, "loss": kept}


def resumable_keys(cfg) -> tuple[str, ...]:
    """Keys that may change between a run and its resumption (they do not alter the result)."""
    return schema_of(cfg).resumable_keys


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config | GeoConfig:
    """Defaults <- YAML file <- dotted overrides, validated."""
    values = read_yaml(path) if path else {}
    values = _merge(values, parse_overrides(overrides or []))
    return config_from_dict(values)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got '{value}'{hint}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config key '{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_ranges(cfg, positive=(), non_negative=(), probabilities=()) -> None:
    """Dotted keys whose values must be > 0, >= 0, or in [0, 1]."""
    for key in positive:
        _positive(key, _get(cfg, key))
    for key in non_negative:
        _positive(key, _get(cfg, key), allow_zero=True)
    for key in probabilities:
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise ConfigError(f"config key '{key}' must be a probability in [0, 1], got {_get(cfg, key)}")


def _check_run(cfg) -> None:
    """The keys every task has: device, precision, loop lengths, loader, optimiser basics."""
    _choice("train.amp", cfg.train.amp, ("auto", "bf16", "fp16", "off"))
    if not (cfg.train.device in ("auto", "cpu", "cuda") or cfg.train.device.startswith("cuda:")):
        raise ConfigError(f"config key 'train.device' must be auto, cpu, cuda or cuda:N; got '{cfg.train.device}'")
    _check_ranges(
        cfg,
        positive=(
            "data.prefetch_factor",
            "optim.batch_size",
            "optim.lr",
            "train.epochs",
            "train.ckpt_every",
            "train.log_every",
            "train.hist_every",
        ),
        non_negative=(
            "data.num_workers",
            "optim.weight_decay",
            "optim.warmup_epochs",
            "optim.min_lr",
            "train.max_steps",
        ),
    )


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
        _choice(f"{key}.name", str(spec["name"]), tuple(STRATEGIES))
        strategy = _build(STRATEGIES[spec["name"]], {k: v for k, v in spec.items() if k != "name"}, key)
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


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    from vissl_neg.data import DATASETS
    from vissl_neg.negatives import FalseNegatives

    _choice("data.name", cfg.data.name, tuple(DATASETS))
    _choice("model.momentum_schedule", cfg.model.momentum_schedule, ("fixed", "cosine"))
    _choice("model.shuffle_bn", cfg.model.shuffle_bn, ("auto", "ddp", "split", "none"))
    _choice("model.split_bn_impl", cfg.model.split_bn_impl, ("auto", "fused", "per_group"))
    _choice("model.pos_embed", cfg.model.pos_embed, ("learn", "sincos"))
    _choice("model.vit_init", cfg.model.vit_init, ("timm", "mocov3"))
    if cfg.model.head_layers < 2:
        raise ConfigError(f"config key 'model.head_layers' must be >= 2, got {cfg.model.head_layers}")
    if cfg.model.sync_bn and cfg.model.shuffle_bn in ("ddp", "split"):
        raise ConfigError(
            f"model.sync_bn=true shares BN statistics over the ranks, which model.shuffle_bn="
            f"{cfg.model.shuffle_bn} keeps apart; use model.shuffle_bn=none (or auto)"
        )
    _choice("data.decode_on", cfg.data.decode_on, ("workers", "device"))
    if cfg.data.decode_on == "device" and cfg.data.name == "fashion_mnist":
        raise ConfigError("data.decode_on=device applies to JPEG image folders, not fashion_mnist")
    _choice("data.crops", cfg.data.crops, ("square", "image"))  # image folders only, like decode_size
    from vissl_neg.negatives import SOURCES

    _choice("negatives.source", cfg.negatives.source, tuple(SOURCES))
    _choice("negatives.bank_dtype", cfg.negatives.bank_dtype, ("float32", "bfloat16", "float16"))
    available = SOURCES[cfg.negatives.source].available(cfg.negatives, cfg.optim.batch_size)
    strategies = build_strategies(cfg.negatives.strategies, available if available > 0 else None, cfg.loss.temperature)
    if not cfg.loss.cancels_false_negatives and any(isinstance(s, FalseNegatives) for s in strategies):
        raise ConfigError(
            f"loss.name={cfg.loss.name} with a false_negatives strategy is not supported: the "
            "false-negative loss replaces the loss (use loss.name=info_nce)"
        )
    if not 0.0 <= cfg.negatives.bank_momentum < 1.0:
        raise ConfigError(f"config key 'negatives.bank_momentum' must be in [0, 1), got {cfg.negatives.bank_momentum}")
    _choice("optim.name", cfg.optim.name, ("sgd", "adamw"))
    _choice("optim.lr_scaling", cfg.optim.lr_scaling, ("none", "linear"))
    _choice("eval.linear_protocol", cfg.eval.linear_protocol, ("lbfgs", "sgd"))
    _choice("eval.linear_schedule", cfg.eval.linear_schedule, ("steps", "cosine"))
    _choice("eval.linear_lr_scaling", cfg.eval.linear_lr_scaling, ("none", "linear"))
    _check_run(cfg)
    _check_ranges(
        cfg,
        positive=(
            "negatives.size",
            "negatives.diag_top",
            "data.decode_size",
            "model.dim",
            "model.bn_splits",
            "optim.base_batch",
            "augment.size",
            "eval.knn_k",
            "eval.knn_temperature",
            "eval.chunk_size",
            "eval.batch_size",
            "eval.linear_lr",
            "eval.linear_epochs",
            "eval.linear_batch_size",
        ),
        non_negative=("data.subset", "model.head_hidden", "model.patch_size", "model.num_heads"),
    )
    if not 0.0 <= cfg.model.momentum < 1.0:
        raise ConfigError(f"config key 'model.momentum' must be in [0, 1), got {cfg.model.momentum}")
    _check_augment(cfg.augment, "augment")
    if cfg.augment.view2:
        cfg.augment.view2 = _view2_values(cfg.augment)
        _check_augment(dataclasses.replace(cfg.augment, view2={}, **cfg.augment.view2), "augment.view2")
    if len(cfg.augment.mean) != len(cfg.augment.std) or any(s <= 0 for s in cfg.augment.std):
        raise ConfigError("config keys 'augment.mean' and 'augment.std' must have one entry per channel, std > 0")
    if cfg.model.shuffle_bn in ("auto", "split") and cfg.optim.batch_size % cfg.model.bn_splits:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} must be divisible by model.bn_splits={cfg.model.bn_splits} "
            "for split shuffle-BN"
        )


# keys both views share: the output size and the normalisation
SHARED_VIEW_KEYS = ("size", "mean", "std", "view2")


def _view2_values(a) -> dict:
    """``augment.view2`` checked against the section's keys and types -> the coerced values."""
    hints = typing.get_type_hints(type(a))
    names = [f.name for f in dataclasses.fields(a) if f.name not in SHARED_VIEW_KEYS]
    out = {}
    for key, value in a.view2.items():
        if key in SHARED_VIEW_KEYS:
            raise ConfigError(f"config key 'augment.view2.{key}': both views share augment.{key}")
        if key not in names:
            raise _unknown_key(f"augment.view2.{key}", names)
        out[key] = _coerce(f"augment.view2.{key}", value, hints[key])
    return out


def _check_augment(a, prefix: str) -> None:
    """Range checks of one view's augmentation keys, named under ``prefix``."""
    for key in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "erase_p", "solarize_p"):
        if not 0.0 <= getattr(a, key) <= 1.0:
            raise ConfigError(f"config key '{prefix}.{key}' must be a probability in [0, 1], got {getattr(a, key)}")
    for key in ("crop_scale", "crop_ratio", "blur_sigma"):
        lo_hi = getattr(a, key)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"config key '{prefix}.{key}' must be [low, high] with 0 < low <= high, got {lo_hi}")
    if a.crop_scale[1] > 1.0:
        raise ConfigError(f"config key '{prefix}.crop_scale' must not exceed 1.0, got {a.crop_scale}")
    if a.blur_kernel % 2 == 0:
        raise ConfigError(f"config key '{prefix}.blur_kernel' must be odd, got {a.blur_kernel}")


def validate_geo(cfg: GeoConfig) -> None:
    """Value checks of a cross-view config that types alone cannot express."""
    _choice("data.name", cfg.data.name, ("cvusa",))
    _choice("optim.name", cfg.optim.name, ("adamw",))
    _check_run(cfg)
    if len(cfg.data.pano_size) != 2 or min(cfg.data.pano_size) <= 0:
        raise ConfigError(f"config key 'data.pano_size' must be [height, width] > 0, got {cfg.data.pano_size}")
    if cfg.data.pano_size[1] % 4:
        raise ConfigError(
            f"config key 'data.pano_size' width {cfg.data.pano_size[1]} must be divisible by 4 "
            "(rotations roll the panorama by quarter turns)"
        )
    if cfg.model.pretrained and cfg.model.pretrained_file:
        raise ConfigError("set model.pretrained or model.pretrained_file, not both")
    _check_ranges(
        cfg,
        positive=(
            "data.sat_size",
            "model.init_temperature",
            "sampling.neighbour_select",
            "sampling.neighbour_range",
            "sampling.chunk_size",
            "eval.batch_size",
            "mixup.alpha",
            "mixup.weight",
        ),
        non_negative=(
            "model.patch_size",
            "optim.clip_grad",
            "sampling.gps_epochs",
            "sampling.mine_every",
            "eval.chunk_size",
            "mixup.temperature",
            "mixup.start_epoch",
        ),
        probabilities=tuple(f"augment.{k}" for k in (*AUGMENT_PROBABILITIES, "hue")),
    )
    if cfg.eval.every < -1:
        raise ConfigError(f"config key 'eval.every' must be >= -1 (-1 = never), got {cfg.eval.every}")
    if cfg.sampling.neighbour_select > cfg.sampling.neighbour_range:
        raise ConfigError(
            f"sampling.neighbour_select={cfg.sampling.neighbour_select} must not exceed "
            f"sampling.neighbour_range={cfg.sampling.neighbour_range}"
        )
    for key in ("loss.label_smoothing", "mixup.label_smoothing"):
        if not 0.0 <= _get(cfg, key) < 1.0:
            raise ConfigError(f"config key '{key}' must be in [0, 1), got {_get(cfg, key)}")
    if cfg.mixup.enabled and cfg.mixup.start_epoch >= cfg.train.epochs:
        raise ConfigError(
            f"config key 'mixup.start_epoch' ({cfg.mixup.start_epoch}) must be below train.epochs "
            f"({cfg.train.epochs}), or mixup never starts"
        )
    a = cfg.augment
    for one_of in (("blur_p", "sharpen_p"), ("grid_dropout_p", "coarse_dropout_p")):
        if sum(getattr(a, k) for k in one_of) > 1.0:
            raise ConfigError(
                f"config keys 'augment.{one_of[0]}' + 'augment.{one_of[1]}' are one of two, so their sum "
                f"must be at most 1, got {sum(getattr(a, k) for k in one_of)}"
            )
    q = a.jpeg_quality
    if len(q) != 2 or not 1 <= q[0] <= q[1] <= 100:
        raise ConfigError(
            f"config key 'augment.jpeg_quality' must be [low, high] with 1 <= low <= high <= 100, got {q}"
        )
    if cfg.augment.hue > 0.5:
        raise ConfigError(f"config key 'augment.hue' must be at most 0.5 (half the colour circle), got {a.hue}")
    if len(a.mean) != 3 or len(a.std) != 3 or any(s <= 0 for s in a.std):
        raise ConfigError("config keys 'augment.mean' and 'augment.std' must have 3 entries (RGB), std > 0")


@dataclass(frozen=True)
class TaskSchema:
    """What the config layer knows of a task: the dataclass its YAML is built into, the value
    checks types cannot express, and the keys that may change on resume. ``vissl_neg.tasks``
    reads its task's entry; a new task adds one line to ``SCHEMAS``."""

    config: type
    validate: Callable[[Any], None]
    resumable_keys: tuple[str, ...]


SCHEMAS: dict[str, TaskSchema] = {
    "moco": TaskSchema(Config, validate, RESUMABLE_KEYS),
    "geo": TaskSchema(GeoConfig, validate_geo, GEO_RESUMABLE_KEYS),
}


def task_name(cfg) -> str:
    """The ``task`` a validated config belongs to (a key of ``SCHEMAS``)."""
    return getattr(cfg, "task", "moco")


def schema_of(cfg) -> TaskSchema:
    return SCHEMAS[task_name(cfg)]
