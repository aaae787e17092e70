"""What the config layer knows of a task: the dataclass a config's top-level ``task`` key
selects and the keys that may change on resume. A config is validated by building it: every
section checks its keys as it is read, and the task's dataclass checks the rules that span
sections (``Config.check``, ``GeoConfig.check``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vissl_neg.config.coerce import build, choose
from vissl_neg.config.geo_schema import GEO_RESUMABLE_KEYS, GeoConfig
from vissl_neg.config.load import merge, parse_overrides, read_yaml
from vissl_neg.config.schema import RESUMABLE_KEYS, Config


@dataclass(frozen=True)
class TaskSchema:
    """A task's config dataclass and the keys that may change on resume. ``vissl_neg.tasks``
    reads its task's entry; a new task adds one line to ``SCHEMAS``."""

    config: type
    resumable_keys: tuple[str, ...]


SCHEMAS: dict[str, TaskSchema] = {
    "moco": TaskSchema(Config, RESUMABLE_KEYS),
    "geo": TaskSchema(GeoConfig, GEO_RESUMABLE_KEYS),
}


def config_from_dict(values: dict) -> Config | GeoConfig:
    """The validated config of the task the top-level ``task`` key names (default moco)."""
    name = values.get("task", "moco")
    choose("task", str(name), SCHEMAS)
    schema = SCHEMAS[name]
    fields = {f.name for f in dataclasses.fields(schema.config)}
    return build(schema.config, {k: v for k, v in values.items() if k != "task" or k in fields})


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config | GeoConfig:
    """Defaults <- YAML file <- dotted overrides, validated."""
    values = read_yaml(path) if path else {}
    values = merge(values, parse_overrides(overrides or []))
    return config_from_dict(values)


def task_name(cfg) -> str:
    """The ``task`` a validated config belongs to (a key of ``SCHEMAS``)."""
    return getattr(cfg, "task", "moco")


def schema_of(cfg) -> TaskSchema:
    return SCHEMAS[task_name(cfg)]


def resumable_keys(cfg) -> tuple[str, ...]:
    """Keys that may change between a run and its resumption (they do not alter the result)."""
    return schema_of(cfg).resumable_keys
