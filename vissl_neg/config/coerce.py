"""Values read from YAML and overrides -> the typed config sections.

Each value is checked against its field's annotation: the type, a ``Literal`` choice, the bounds
of ``vissl_neg.rules`` carried in ``Annotated``; then each built section's ``check()``. The rules
themselves live beside their keys, in the sections. Every problem is raised as a one-line
:class:`ConfigError` naming the key, e.g. ``unknown config key 'optim.lrr' (did you mean 'optim.lr'?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from vissl_neg.errors import ConfigError
from vissl_neg.rules import choice_problem


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)
    prefix = leaf[0] + "." if len(leaf) == 2 else ""
    close = difflib.get_close_matches(leaf[-1], valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(sorted(valid))})"
    return ConfigError(f"unknown config key '{key}'{hint}")


def choose(key: str, value: str, choices: Iterable[str]) -> None:
    """A one-line error unless ``value`` is one of ``choices`` (a registry's names)."""
    problem = choice_problem(value, choices)
    if problem:
        raise ConfigError(f"config key '{key}' {problem}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is Annotated:  # a type with its rules (vissl_neg.rules)
        base, *rules = typing.get_args(tp)
        value = _coerce(key, value, base)
        for rule in rules:
            problem = rule.problem(value)
            if problem:
                raise ConfigError(f"config key '{key}' {problem}")
        return value
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):  # X | None
        (inner,) = [t for t in typing.get_args(tp) if t is not type(None)]
        return None if value is None else _coerce(key, value, inner)
    if origin is Literal:
        value = _coerce(key, value, str)
        choose(key, value, typing.get_args(tp))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        if hasattr(tp, "variants"):  # a registry section (loss, data): its name picks its class and keys
            return _build_variant(tp, value, key)
        return build(tp, value, key)
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


def build(cls: Any, values: dict, prefix: str = "", check: bool = True):
    """``values`` coerced into the dataclass ``cls``; with ``check``, its ``check()`` runs after
    (errors named under ``prefix``, the section's dotted key)."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise _unknown_key(full, names)
        kwargs[key] = _coerce(full, value, hints[key])
    built = cls(**kwargs)
    for f in dataclasses.fields(cls):
        if "shared" in f.metadata and getattr(built, f.name):
            _read_overrides(built, f, prefix, hints, names, check)
    if check:
        _checked(built, prefix)
    return built


def _read_overrides(section: Any, f: dataclasses.Field, prefix: str, hints: dict, names: list[str], check: bool):
    """A field holding other values of its own section's keys (``augment.view2``): each value
    is coerced as that key, and the section with them over it is checked too."""
    key = f"{prefix}.{f.name}"
    own = [n for n in names if n not in f.metadata["shared"]]
    values = {}
    for k, v in getattr(section, f.name).items():
        if k in f.metadata["shared"]:
            raise ConfigError(f"config key '{key}.{k}': both views share {prefix}.{k}")
        if k not in own:
            raise _unknown_key(f"{key}.{k}", own)
        values[k] = _coerce(f"{key}.{k}", v, hints[k])
    setattr(section, f.name, values)
    if check:
        _checked(dataclasses.replace(section, **{f.name: {}}, **values), key)


def _checked(section: Any, key: str, name: str | None = None) -> None:
    """Run a section's ``check()``: a ValueError "<field> must …" names the field's key."""
    if not hasattr(section, "check"):
        return
    try:
        section.check()
    except ValueError as exc:
        field, _, rest = str(exc).partition(" ")
        if field in {f.name for f in dataclasses.fields(section)}:
            raise ConfigError(f"config key '{key + '.' if key else ''}{field}' {rest}") from None
        raise ConfigError(f"config key '{key}'{f' ({name})' if name else ''}: {exc}") from None


def _build_variant(base: Any, values: dict, key: str):
    """A section whose ``name`` selects a registered dataclass with keys of its own."""
    registry = base.variants()
    name = values.get("name", base.name)
    choose(f"{key}.name", str(name), registry)
    cls = registry[name]
    names = {f.name for f in dataclasses.fields(cls)}
    retired = getattr(base, "retired", {})
    values = {k: v for k, v in values.items() if k in names or k not in retired or v != retired[k]}
    for k in values:
        owners = [n for n, other in registry.items() if k in {f.name for f in dataclasses.fields(other)}]
        if k not in names and owners:
            raise ConfigError(
                f"config key '{key}.{k}' belongs to {key}.name={' or '.join(owners)}, not {key}.name={name}"
            )
    built = build(cls, values, key, check=False)
    _checked(built, key, name)
    return built
