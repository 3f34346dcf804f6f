"""User-facing errors: the CLI prints these as one line (a traceback only with -v)."""


class PersonagenError(Exception):
    """A problem the user can fix (bad input, bad configuration, missing data)."""


class ConfigError(PersonagenError):
    """The configuration is invalid; the message names the key and the allowed values."""
