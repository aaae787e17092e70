"""Configuration: typed schema with each key's rules beside it, YAML + dotted CLI overrides."""

from vissl_neg.config.load import find_config, parse_overrides, read_yaml, shipped_configs
from vissl_neg.config.save import flatten, save_config, to_dict
from vissl_neg.config.schema import RESUMABLE_KEYS, Config
from vissl_neg.config.strategies import build_strategies
from vissl_neg.config.task_schema import (
    SCHEMAS,
    TaskSchema,
    config_from_dict,
    load_config,
    resumable_keys,
    schema_of,
    task_name,
)

__all__ = [
    "SCHEMAS",
    "TaskSchema",
    "build_strategies",
    "Config",
    "RESUMABLE_KEYS",
    "config_from_dict",
    "find_config",
    "flatten",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "resumable_keys",
    "save_config",
    "schema_of",
    "shipped_configs",
    "task_name",
    "to_dict",
]
