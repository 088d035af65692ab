"""The errors the command line turns into exit codes (the bottom layer: imports nothing)."""


class UsageError(Exception):
    """A problem with what the user asked for, reported in one line with exit code 2."""


class RunError(Exception):
    """The run cannot go on (e.g. the output folder cannot be written): one line, exit code 1."""
