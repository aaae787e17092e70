"""The commands' side of the package: evaluating a run directory, as tools/*.py do."""
