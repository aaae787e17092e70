"""The package's layers point one way. Every module of vissl_neg is parsed (imports inside
functions included) and each import of another vissl_neg module must reach the importer's own
layer or one below it; the packages' import graph has no cycle.

The order, bottom to top, is written here and only here (docs/architecture.md draws it):
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vissl_neg"

# bottom -> top; a top-level module or subpackage of vissl_neg per name
LAYERS: list[tuple[str, ...]] = [
    ("errors", "rules", "runtime"),  # errors; config value rules; process group, device, checkpoint files
    ("augment", "data", "losses"),  # components that need no other component
    ("negatives",),  # sources and strategies (score with the losses)
    ("models",),  # encoders, heads, MoCo (holds its negative source)
    ("config",),  # schema composed from the components' sections, YAML, overrides, checks
    ("eval", "geo"),  # kNN / linear probe; cross-view sampling, recall, m²-mix
    ("engine",),  # the training loop and the trainers
    ("tasks",),  # what each task is: schema, trainer, evaluation, release hooks
    ("export",),  # timm hub layout and model card
    ("cli",),  # evaluating a run directory, as the tools do
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    """'vissl_neg.negatives.mochi' -> 'negatives'; the package root itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "vissl_neg" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> list[tuple[str, int]]:
    """(imported vissl_neg module, line) for every import statement in the file, at any depth,
    in line order; ``module`` is the file's dotted name (default: from its place in the package)."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return sorted((t, line) for t, line in found if t == "vissl_neg" or t.startswith("vissl_neg."))


def package_graph() -> tuple[dict[str, set[str]], list[str]]:
    """({layer part: parts it imports}, upward imports 'file:line part -> part')."""
    graph: dict[str, set[str]] = {}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _part(_module_name(path))
        if src is None:  # vissl_neg/__init__.py: the public facade may re-export any layer
            continue
        for target, line in imports_of(path):
            dst = _part(target)
            if dst is None:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the package root")
                continue
            if dst == src:
                continue
            graph.setdefault(src, set()).add(dst)
            if RANK[dst] > RANK[src]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} {src} -> {dst}")
    return graph, upward


def test_every_part_of_the_package_has_a_layer():
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    }
    assert parts == set(RANK), f"give these a layer in LAYERS: {sorted(parts ^ set(RANK))}"


def test_no_import_reaches_a_higher_layer():
    _, upward = package_graph()
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_packages_import_no_cycle():
    graph, _ = package_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_config_imports_nothing_above_it():
    above = {name for name, rank in RANK.items() if rank > RANK["config"]}
    bad = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {t}"
        for p in sorted((PACKAGE / "config").rglob("*.py"))
        for t, line in imports_of(p)
        if _part(t) in above
    ]
    assert not bad, bad


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The parser itself: a deferred import, a relative one and a plain one are all found."""
    fake = tmp_path / "probe.py"
    fake.write_text(
        "import os\n\ndef f():\n    from vissl_neg.engine import trainer\n\n"
        "from ..tasks import TASKS\nimport vissl_neg.export.card\nfrom . import schema\n"
    )
    assert imports_of(fake, "vissl_neg.config.probe") == [
        ("vissl_neg.config", 8),
        ("vissl_neg.engine", 4),
        ("vissl_neg.export.card", 7),
        ("vissl_neg.tasks", 6),
    ]


def test_the_docs_draw_the_same_layers():
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    drawing = text.split("<!-- layers:start -->")[1].split("<!-- layers:end -->")[0]
    rows = [re.split(r"\s{2,}", line.strip())[0] for line in drawing.splitlines() if re.match(r"^ [a-z]", line)]
    drawn = [tuple(name.strip() for name in row.split("|")) for row in reversed(rows)]
    assert drawn == LAYERS, drawn
