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


def one_line(exc: Exception) -> str:
    """An error's message as one line. A DataLoader worker's error reaches the main process
    re-raised with the worker's traceback in its message; its last line holds the original."""
    msg = str(exc).strip()
    if "Original Traceback" in msg:
        last = msg.splitlines()[-1]
        msg = last.split(": ", 1)[1] if ": " in last else last
    return msg


def cli_entry(main):
    """Wrap a tool's ``main`` so that a :class:`UserError` prints ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(exc.exit_code)

    return wrapper
