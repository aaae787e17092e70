"""The ``vissl-neg`` command: one subcommand per tool.

    vissl-neg train [--config NAME_OR_FILE] [--resume [RUN_DIR]] [key=value ...]
    vissl-neg knn | linear-probe | export | report | eval-geo RUN_DIR [...]
    vissl-neg configs          # the shipped configs' names

``vissl-neg COMMAND --help`` describes each; tools/*.py run the same code.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from vissl_neg.errors import UserError, cli_entry

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("vissl_neg.cli.train", "main", "pretrain with a config and dotted overrides (resumes a run)"),
    "knn": ("vissl_neg.cli.evaluate", "knn_main", "weighted kNN top-1 of a run's frozen backbone"),
    "linear-probe": ("vissl_neg.cli.evaluate", "linear_probe_main", "linear-probe top-1 of a run's frozen backbone"),
    "export": ("vissl_neg.cli.export", "main", "the backbone in timm's hub layout with a model card"),
    "report": ("vissl_neg.cli.report", "main", "redraw a run's report.png from its TensorBoard logs"),
    "eval-geo": ("vissl_neg.cli.evaluate", "eval_geo_main", "cross-view recall of a geo run"),
    "configs": ("vissl_neg.cli.main", "list_configs", "list the shipped configs (names for --config)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return (
        "usage: vissl-neg COMMAND [ARGS]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n"
        + "vissl-neg COMMAND --help describes a command's arguments."
    )


def list_configs(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Print the shipped configs' names, one a line."""
    from vissl_neg.config import shipped_configs

    if argv:
        raise UserError(f"{prog or 'configs'} takes no arguments, got {' '.join(argv)}")
    for name, path in shipped_configs().items():
        print(f"{name}\t{path}")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"vissl-neg {version('vissl_neg')}")
        except PackageNotFoundError:
            print("vissl-neg (not installed: run from a checkout)")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (one of {', '.join(COMMANDS)})"
        raise UserError(f"unknown command '{command}'{hint}")
    module, function, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), function)(argv[1:], prog=f"vissl-neg {command}")


if __name__ == "__main__":
    sys.exit(main())
