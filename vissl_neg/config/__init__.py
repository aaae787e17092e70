"""Configuration: typed schema, YAML + dotted CLI overrides, validation."""

from vissl_neg.config.load import (
    build_strategies,
    config_from_dict,
    flatten,
    load_config,
    parse_overrides,
    read_yaml,
    resumable_keys,
    save_config,
    to_dict,
)
from vissl_neg.config.schema import RESUMABLE_KEYS, Config

__all__ = [
    "build_strategies",
    "Config",
    "RESUMABLE_KEYS",
    "config_from_dict",
    "flatten",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "resumable_keys",
    "save_config",
    "to_dict",
]
