"""Errors for bad input: what the user gave (a config value, a file) cannot be used.

Their message is the whole story on one line (the config key or the file, the problem, what to do), so
an entry point prints that line and exits with status 1 instead of a traceback. Raise one of these, or a
class that mixes in :class:`UserError`, for bad input; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Mixin for errors caused by the user's input; the message alone tells what to change."""


class ConfigError(UserError, ValueError):
    """A config value, or the file a config key names, cannot be used; the message names the key."""


class MissingFileError(UserError, FileNotFoundError):
    """A file a config key names does not exist; the message names the key and the path."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """``Class: first line of the message``, cut at ``limit`` characters: a library's reason, quoted
    inside one of ours."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}"[:limit] if lines else type(err).__name__
