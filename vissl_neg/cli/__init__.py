"""The command line: ``vissl-neg`` (main.py) and its subcommands, which tools/*.py wrap; evaluating a run directory."""
