"""Shared by the benchmark scripts: write results and splice them into the README."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str | Path, text: str, data) -> None:
    """``text`` to ``out`` (markdown) and ``data`` beside it as JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))


def splice_readme(readme: str | Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    readme = Path(readme)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    head, rest = body.split(start, 1)
    readme.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])
