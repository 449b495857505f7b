"""Errors a user can fix. The CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input from a user: a config, a file, a name. The message says what to change."""


class ConfigError(UserError):
    """A config field that cannot work."""
