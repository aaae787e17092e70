"""Citations that cannot go stale. docs/fidelity.md and docs/methods.md cite our code by symbol
(``vissl_neg/negatives/mochi.py::mix_hard_negatives``: a module path and a qualified name), never
by line; each such citation must import and name something that exists. A line cited in a
reference repository is written ``alias:path:lines`` with the alias defined in the same document
as ``` `alias:` owner/repo @ commit ```, so every reference line names a commit. Every
repository path named in docs/*.md, README.md and the configs' comments exists."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITING = [REPO / "docs" / "fidelity.md", REPO / "docs" / "methods.md"]

SYMBOL = re.compile(r"\b(vissl_neg/[\w/]+\.py)::([A-Za-z_][\w.]*\w)")
# docs/methods.md's code lists: "`vissl_neg/x.py`: `f(a, b)`, `Cls`, `Cls.method`"
CODE_LINE = re.compile(r"`(vissl_neg/[\w/]+\.py)`: ((?:`[^`]+`(?:, )?)+)")
ALIAS = re.compile(r"`([a-z][\w-]*):` (?:is )?([\w.-]+/[\w.-]+) @ ([0-9a-f]{7,40})\b")
LINE = re.compile(
    r"(?:(?<![\w/.-])([a-z][\w-]*):)?((?<![\w/.-])[\w.-]*(?:/[\w.-]+)*\.(?:py|sh|md|ipynb|txt|json|cfg)):\d"
)
ROOTS = ("vissl_neg", "configs", "tools", "benchmarks", "tests", "docs", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, ROOTS)) + r")/[\w./*{},<>-]*[\w*}>/])")
NOT_IN_REPO = {"vissl_neg/configs"}  # where a wheel installs configs/ (setup.py)


def resolve(path: str, name: str) -> str | None:
    """None if module ``path`` imports and has the (dotted) attribute ``name``, else why not."""
    module_name = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        return f"{path}: does not import ({exc})"
    for part in name.split("."):
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        if not hasattr(obj, part) and part not in fields:
            return f"{path}::{name}: no '{part}'"
        obj = getattr(obj, part, None)
    return None


def symbol_problems(text: str) -> list[str]:
    cited = SYMBOL.findall(text)
    for path, listed in CODE_LINE.findall(text):
        cited += [(path, name) for name in re.findall(r"`([\w.]+)", listed)]
    return [p for p in (resolve(path, name) for path, name in sorted(set(cited))) if p]


def aliases(text: str) -> tuple[dict[str, str], list[str]]:
    """alias -> 'owner/repo @ commit' as the document defines them, and the conflicting definitions."""
    found: dict[str, str] = {}
    problems = []
    for alias, repo, commit in ALIAS.findall(text):
        target = f"{repo} @ {commit}"
        if found.setdefault(alias, target) != target:
            problems.append(f"`{alias}:` is defined as both {found[alias]} and {target}")
    return found, problems


def line_citation_problems(text: str) -> list[str]:
    """Every file:line names a reference repository's alias (hence a commit); none is our code."""
    defined, problems = aliases(text)
    for match in LINE.finditer(text):
        alias, path = match.groups()
        cited = match.group(0)[:-1] + "..."
        if path.startswith("vissl_neg/") or (alias is None and (REPO / "vissl_neg" / path).exists()):
            problems.append(f"{cited}: our code is cited by symbol (path::name), not by line")
        elif alias is None:
            problems.append(f"{cited}: a reference line needs its repository's alias (`alias:` repo @ commit)")
        elif alias not in defined:
            problems.append(f"{cited}: alias '{alias}:' is not defined as `{alias}:` owner/repo @ commit")
    return problems


def expand(pattern: str) -> list[str]:
    """Brace alternatives, as a shell expands them: configs/{a,b}.yaml -> configs/a.yaml, configs/b.yaml."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def path_problems(text: str, where: str) -> list[str]:
    """Paths under the repository's top folders named in ``text`` that do not exist; ``*`` and a
    ``<placeholder>`` match any name, ``{a,b}`` each alternative (also broken over lines)."""
    text = re.sub(r"\{[^{}]*\}", lambda m: re.sub(r"\s+", "", m.group(0)), text)
    missing = []
    for named in sorted(set(PATH.findall(text)) - NOT_IN_REPO):
        for path in expand(re.sub(r"<[\w-]+>", "*", named.rstrip(".,"))):
            if not (list(REPO.glob(path.rstrip("/"))) if "*" in path else (REPO / path).exists()):
                missing.append(f"{where}: {named}")
    return missing


def config_comments(path: Path) -> str:
    return "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)


@pytest.mark.parametrize("doc", CITING, ids=[p.name for p in CITING])
def test_every_citation_of_our_code_resolves(doc):
    assert symbol_problems(doc.read_text()) == []


def test_the_fidelity_table_cites_our_code_by_symbol():
    assert len(SYMBOL.findall((REPO / "docs" / "fidelity.md").read_text())) >= 60


@pytest.mark.parametrize("doc", CITING, ids=[p.name for p in CITING])
def test_every_reference_line_names_a_commit_and_none_of_ours_is_cited_by_line(doc):
    assert line_citation_problems(doc.read_text()) == []


def test_every_repository_path_named_in_the_docs_and_configs_exists():
    missing = []
    for doc in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        missing += path_problems(doc.read_text(), doc.name)
    for config in sorted((REPO / "configs").glob("*.yaml")):
        comments = config_comments(config)
        missing += path_problems(comments, config.name)
        bare = re.findall(r"(?<![\w/.-])([\w-]+\.yaml)\b", comments)  # another config, named by file
        missing += [f"{config.name}: {name}" for name in bare if not (REPO / "configs" / name).is_file()]
    assert missing == []


# ---------------------------------------------------------------- the checks can fail
def test_a_renamed_function_breaks_its_citation(monkeypatch):
    """What happens when a cited function is renamed: its citation no longer resolves."""
    import vissl_neg.negatives.mochi as mochi

    text = (REPO / "docs" / "fidelity.md").read_text()
    assert "vissl_neg/negatives/mochi.py::mix_hard_negatives" in text and symbol_problems(text) == []
    monkeypatch.setattr(mochi, "mix_hard_negatives_renamed", mochi.mix_hard_negatives, raising=False)
    monkeypatch.delattr(mochi, "mix_hard_negatives")
    assert symbol_problems(text) == ["vissl_neg/negatives/mochi.py::mix_hard_negatives: no 'mix_hard_negatives'"]
    assert symbol_problems("`vissl_neg/negatives/nochi.py::Mochi`")[0].startswith("vissl_neg/negatives/nochi.py: does")
    assert symbol_problems("`vissl_neg/engine/trainer.py`: `Trainer.train_stepp`") == [
        "vissl_neg/engine/trainer.py::Trainer.train_stepp: no 'train_stepp'"
    ]


def test_lines_without_a_commit_are_found():
    text = "\n".join(
        [
            "`ft:` DTennant/CL-Visualizing-Feature-Transformation @ c53d1be",
            "| a | ft:memory/mem_moco.py:157 | ok |",
            "| b | memory/mem_moco.py:199 | no alias |",
            "| c | fnc:objective.py:240-246 | undefined alias |",
            "| d | vissl_neg/engine/trainer.py:98 | ours by line |",
            "| e | engine/trainer.py:98 | ours by line, short |",
            "`ft:` DTennant/other @ 0123456",
        ]
    )
    problems = line_citation_problems(text)
    assert [p.split(":")[0] for p in problems] == [
        "`ft",
        "memory/mem_moco.py",
        "fnc",
        "vissl_neg/engine/trainer.py",
        "engine/trainer.py",
    ], problems


def test_missing_paths_are_found():
    text = "`configs/{imagenet_mocov2,nope}.yaml`, docs/fidelity_mocov3.md, tools/*.py, tools/nothing_*.py"
    assert path_problems(text, "x") == [
        "x: configs/{imagenet_mocov2,nope}.yaml",
        "x: docs/fidelity_mocov3.md",
        "x: tools/nothing_*.py",
    ]
