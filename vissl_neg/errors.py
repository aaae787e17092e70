"""User-facing errors: one line on stderr and exit code 2 (3 for a diverged run), never a traceback."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Bad input from the user (config, paths, data). The message is a single line."""

    exit_code = 2


class ConfigError(UserError):
    """An unknown key, a wrong type or an invalid value in the configuration."""


class DataError(UserError):
    """A missing, unreadable or malformed dataset."""


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = 3


def cli_entry(main):
    """Wrap a tool's ``main`` so that a :class:`UserError` prints ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)

    return wrapper
