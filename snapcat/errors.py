"""The one error base of snapcat, and the command line's kind of it.

Library code raises a :class:`SnapcatError` subclass (often also a ``ValueError``) whose message
alone explains the problem; the command line catches :class:`SnapcatError` once and prints the
message without a traceback. :class:`UserError` is the kind the command modules raise themselves
(a bad argument, an unreachable service). Library code raises them without importing the command
line (which would pull in every subcommand's parser).
"""


class SnapcatError(Exception):
    """A problem the message alone explains: the command line prints it without a traceback."""


class UserError(SnapcatError):
    """A problem with what the user asked for, raised by the command modules."""


def human_bytes(n: float) -> str:
    """A size for an error message: "12.3 MB" from a megabyte up, else "85 KB"."""
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"
