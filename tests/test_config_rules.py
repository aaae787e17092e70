"""Each config key's rule lives beside it: choices as ``Literal``, bounds as ``vissl_neg.rules``
markers, the rest in its section's ``check()``; data sets own their sections. These tests read
the schema itself, so a rule added to a field is checked without a new test, and they show that
a new cross-view data set needs a module and a registry line, no edit of a central validator."""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pytest

from vissl_neg.config import SCHEMAS, config_from_dict, load_config, to_dict
from vissl_neg.config.coerce import build
from vissl_neg.data import DATASETS, GEO_DATASETS, CVUSAData, GeoDataConfig
from vissl_neg.errors import ConfigError
from vissl_neg.rules import Bound, Interval, PositiveInt

import helpers  # noqa: F401  (pins torch to one CPU thread)

PACKAGE = Path(__file__).resolve().parents[1] / "vissl_neg"


def _sections(cls, prefix: str = ""):
    """(dotted key of the section, its dataclass) for every section of a task's config, each
    registered variant of a ``name``-picked section (data, loss) included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            key = f"{prefix}{f.name}"
            for variant in tp.variants().values() if hasattr(tp, "variants") else [tp]:
                yield key, variant


def _rule_fields():
    """(task, section key, section class, field, base type, rules, choices) of every annotated field."""
    for task, schema in SCHEMAS.items():
        for key, cls in _sections(schema.config):
            hints = typing.get_type_hints(cls, include_extras=True)
            for f in dataclasses.fields(cls):
                tp = hints[f.name]
                if typing.get_origin(tp) is Annotated:
                    base, *rules = typing.get_args(tp)
                    yield task, key, cls, f.name, base, rules, None
                elif typing.get_origin(tp) is Literal:
                    yield task, key, cls, f.name, str, [], typing.get_args(tp)


RULED = list(_rule_fields())


def test_a_field_declared_again_keeps_its_rule():
    """A section that subclasses another and sets a new default for one of its fields keeps the
    field's type (its Literal, its rule markers): the loader reads only the subclass's own
    annotations, so a plain ``int`` there would drop the base's bound."""
    redeclared = []
    for task, schema in SCHEMAS.items():
        for key, cls in _sections(schema.config):
            hints = typing.get_type_hints(cls, include_extras=True)
            for base in cls.__mro__[1:]:
                if not dataclasses.is_dataclass(base):
                    continue
                base_hints = typing.get_type_hints(base, include_extras=True)
                for f in dataclasses.fields(base):
                    if f.name in vars(cls).get("__annotations__", {}):
                        redeclared.append(f"{task}:{key}.{f.name}")
                        assert hints[f.name] == base_hints[f.name], (
                            f"{cls.__name__}.{f.name} is {hints[f.name]}, but {base.__name__} declares it "
                            f"{base_hints[f.name]}"
                        )
    assert "geo:train.epochs" in redeclared  # the test looks where such fields are


@pytest.mark.parametrize("field", ["epochs", "ckpt_every", "log_every"])
def test_geo_train_keys_keep_the_run_bounds(field):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["task=geo", f"train.{field}=0"])
    assert str(info.value) == f"config key 'train.{field}' must be > 0, got 0"


def _overrides(task: str, key: str, cls, field: str, value) -> list[str]:
    name = [f"{key}.name={cls.name}"] if hasattr(cls, "variants") else []
    return (["task=geo"] if task == "geo" else []) + name + [f"{key}.{field}={value}"]


def _outside(rule) -> float:
    """A value that breaks ``rule``."""
    if isinstance(rule, Bound):
        return rule.low if rule.strict else rule.low - 1
    assert isinstance(rule, Interval)
    return rule.high + 1


def test_the_schema_declares_bounds_and_choices():
    keys = {f"{k}.{f}" for _, k, _, f, _, _, _ in RULED}
    assert {"optim.lr", "model.shuffle_bn", "train.amp", "augment.flip_p", "eval.every", "data.crops"} <= keys
    assert len(RULED) > 60


@pytest.mark.parametrize("task,key,cls,field,base,rules,choices", RULED, ids=[f"{r[0]}:{r[1]}.{r[3]}" for r in RULED])
def test_every_declared_rule_is_enforced_by_the_loader(task, key, cls, field, base, rules, choices):
    if choices is not None:
        with pytest.raises(ConfigError) as info:
            load_config(None, _overrides(task, key, cls, field, "not_a_choice"))
        assert str(info.value).startswith(f"config key '{key}.{field}' must be one of {', '.join(choices)}; got")
        return
    for rule in rules:
        bad = _outside(rule)
        bad = int(bad) if base is int else float(bad)
        with pytest.raises(ConfigError) as info:
            load_config(None, _overrides(task, key, cls, field, bad))
        assert str(info.value) == f"config key '{key}.{field}' {rule.problem(bad)}"


@pytest.mark.parametrize("task", sorted(SCHEMAS))
def test_every_default_obeys_its_own_rules(task):
    for key, cls in _sections(SCHEMAS[task].config):
        defaults = to_dict(cls())
        built = build(cls, defaults, key)  # coerces every key through its rules, then check()
        assert built == cls()


def _literal_sets() -> list[frozenset[str]]:
    sets = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
                elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                sets.append(frozenset(e.value for e in elts if isinstance(e, ast.Constant)))
    return sets


def test_each_list_of_allowed_values_is_written_once():
    """A choice is declared once: no tuple, list or set of strings anywhere in the package repeats
    a ``Literal``'s choices or a registry's names (data sets, losses, sources, strategies, tasks)."""
    from vissl_neg.losses import LOSSES
    from vissl_neg.negatives import SOURCES, STRATEGIES

    literals = _literal_sets()
    assert len(literals) == len(set(literals)), "a Literal's choices are written twice"
    registries = [frozenset(r) for r in (DATASETS, GEO_DATASETS, LOSSES, SOURCES, STRATEGIES, SCHEMAS) if len(r) > 1]
    repeats = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        declarations = {
            id(n.slice)
            for n in ast.walk(tree)
            if isinstance(n, ast.Subscript) and getattr(n.value, "id", "") == "Literal"
        }
        for node in ast.walk(tree):
            if id(node) in declarations:
                continue
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1:
                if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    values = frozenset(e.value for e in node.elts)
                    if values in literals or values in registries:
                        repeats.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {sorted(values)}")
    assert not repeats, repeats


def test_the_loader_holds_no_rule_of_a_key():
    """config/load.py and config/coerce.py know no key's name: every rule is in a section."""
    for name in ("load.py", "coerce.py"):
        text = (PACKAGE / "config" / name).read_text()
        for key in ("shuffle_bn", "amp", "batch_size", "pano_size", "cvusa", "fashion_mnist", "flip_p"):
            assert f"'{key}'" not in text and f'"{key}"' not in text, (name, key)


def test_a_check_error_names_the_key_or_passes_through_whole():
    with pytest.raises(ConfigError, match=r"^config key 'train\.device' must be auto, cpu, cuda or cuda:N; got 'gpu'$"):
        load_config(None, ["train.device=gpu"])
    with pytest.raises(ConfigError, match=r"^config key 'augment\.blur_kernel' must be odd, got 4$"):
        load_config(None, ["augment.blur_kernel=4"])
    with pytest.raises(ConfigError, match=r"^set model\.pretrained or model\.pretrained_file, not both$"):
        load_config(None, ["task=geo", "model.pretrained=true", "model.pretrained_file=x.safetensors"])
    with pytest.raises(ConfigError, match=r"^config key 'data\.pano_size' width 770 must be divisible by 4"):
        load_config(None, ["task=geo", "data.pano_size=[140, 770]"])


def test_a_saved_config_of_an_earlier_version_still_loads():
    """Before data sets owned their sections, every config carried the image-folder keys at these
    values and every loss the debiased keys at 0: such saved configs (checkpoints, config.yaml)
    load, and the same keys at another value are refused."""
    saved = to_dict(load_config())
    saved["data"].update({"classes": "", "decode_size": 256, "draft": True, "decode_on": "workers", "crops": "square"})
    saved["loss"].update({"tau_plus": 0.0, "beta": 0.0})
    assert config_from_dict(saved) == load_config()
    saved["data"]["crops"] = "image"
    with pytest.raises(ConfigError, match="config key 'data.crops' belongs to data.name=imagenet"):
        config_from_dict(saved)


def test_data_sets_own_their_keys_and_defaults():
    assert type(load_config().data).__name__ == "FashionMNISTData"
    folder = load_config(None, ["data.name=imagenet100", "data.root=/x"]).data
    assert (folder.name, folder.root, folder.decode_size, folder.whole_image_crops) == ("imagenet100", "/x", 256, False)
    assert load_config(None, ["data.name=imagenet", "data.crops=image"]).data.whole_image_crops
    with pytest.raises(ConfigError, match="config key 'data.name' must be one of fashion_mnist, imagenet"):
        load_config(None, ["data.name=imagenett"])
    with pytest.raises(ConfigError, match="^unknown config key 'data.sat_size'"):  # a key of the other task's data
        load_config(None, ["data.sat_size=64"])
    with pytest.raises(ConfigError, match="config key 'data.name' must be one of cvusa, .*; got 'vigr'"):
        load_config(None, ["task=geo", "data.name=vigr"])


@dataclass
class _TilesData(GeoDataConfig):
    """A stand-in cross-view benchmark: its own section, keys and rule, nothing else."""

    name: str = "tiles"
    root: str = "data/tiles"
    tile: PositiveInt = 256
    split: Literal["north", "south"] = "north"

    def check(self) -> None:
        if self.tile % 32:
            raise ValueError(f"tile must be a multiple of 32, got {self.tile}")


def test_a_new_cross_view_data_set_is_a_section_and_a_registry_line(monkeypatch):
    monkeypatch.setitem(GEO_DATASETS, "tiles", _TilesData)
    cfg = load_config(None, ["task=geo", "data.name=tiles", "data.tile=64", "data.split=south"])
    assert isinstance(cfg.data, _TilesData) and (cfg.data.tile, cfg.data.split) == (64, "south")
    for override, message in (
        ("data.tile=48", "config key 'data.tile' must be a multiple of 32, got 48"),
        ("data.tile=0", "config key 'data.tile' must be > 0, got 0"),
        ("data.split=east", "config key 'data.split' must be one of north, south; got 'east'"),
        ("data.drone_size=8", "config key 'data.drone_size' belongs to data.name=university1652, not data.name=tiles"),
    ):
        with pytest.raises(ConfigError) as info:
            load_config(None, ["task=geo", "data.name=tiles", override])
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(ConfigError, match="config key 'data.tile' belongs to data.name=tiles, not data.name=cvusa"):
        load_config(None, ["task=geo", "data.tile=64"])
    assert isinstance(load_config(None, ["task=geo"]).data, CVUSAData)


def test_a_key_that_may_be_null():
    assert load_config().model.zero_init_last is None
    assert load_config(None, ["model.zero_init_last=false"]).model.zero_init_last is False
    assert load_config(None, ["model.zero_init_last=null"]).model.zero_init_last is None
    with pytest.raises(ConfigError, match="^config key 'model.zero_init_last' must be of type bool, got 'maybe'$"):
        load_config(None, ["model.zero_init_last=maybe"])
