"""Exceptions that carry a one-line message meant for the user."""


class UsageError(Exception):
    """A mistake in the command line, a config file or the input layout.

    Entry points print the message on one line and exit with status 2.
    """


class ConfigError(UsageError):
    """A configuration value is missing, unknown or out of range."""
