"""Configuration: typed schema, YAML + dotted CLI overrides, validation."""

from vissl_neg.config.load import (
    SCHEMAS,
    TaskSchema,
    build_strategies,
    config_from_dict,
    find_config,
    flatten,
    load_config,
    parse_overrides,
    read_yaml,
    resumable_keys,
    save_config,
    schema_of,
    shipped_configs,
    task_name,
    to_dict,
)
from vissl_neg.config.schema import RESUMABLE_KEYS, Config

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
