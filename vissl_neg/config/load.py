"""Reading configs: YAML files with ``base:`` includes, dotted CLI overrides, merging, and the
configs shipped with the package. ``vissl_neg.config.coerce`` turns the values read into the
typed sections. Every problem is a one-line :class:`ConfigError`."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from vissl_neg.errors import ConfigError


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


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, section by section."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
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
    return merge(read_yaml(base_path, _seen + (path.resolve(),)), data)
