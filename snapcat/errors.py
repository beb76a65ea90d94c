"""Errors whose message alone explains the problem, shared by the library and the command line.

The command line prints them without a traceback; library code raises them without importing the
command line (which would pull in every subcommand's parser).
"""


class UserError(Exception):
    """A problem the message alone explains: printed without a traceback."""
