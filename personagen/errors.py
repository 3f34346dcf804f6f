"""User-facing errors: the CLI prints these as one line (a traceback only with -v)."""


class PersonagenError(Exception):
    """A problem the user can fix (bad input, bad configuration, missing data)."""

    exit_code = 2
    """The command's exit status when it ends with this error."""


class ConfigError(PersonagenError):
    """The configuration is invalid; the message names the key and the allowed values."""


class RunFailed(PersonagenError):
    """The run went through but every row of a stage failed (each one recorded in the bank's
    failures): the command failed, though nothing it was given was wrong (exit status 1)."""

    exit_code = 1
