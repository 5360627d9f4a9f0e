"""User-facing errors.

A `UserError` is a mistake in the config or the data that the user can fix. Entry points catch it and print
one line (what is wrong and how to fix it) instead of a traceback, and exit with status 2 before training.
"""


class UserError(Exception):
    """A config or data problem the user must fix; its message is the one line that is printed."""


class ConfigError(UserError):
    """An impossible or unknown configuration value."""


class DataError(UserError):
    """Missing, empty or malformed data."""


class ModelError(UserError):
    """An unsupported or missing model."""
