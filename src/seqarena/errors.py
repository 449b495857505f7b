"""Errors a user can fix. The CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input from a user: a config, a file, a name. The message says what to change."""


class ConfigError(UserError):
    """A config field that cannot work."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line, for a one-line report of a failure."""
    return (str(error).splitlines() or [""])[0]
