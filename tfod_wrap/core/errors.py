"""The one base class of errors the user can fix; the command line prints their message, no traceback."""


class UserError(Exception):
    """Bad input, a bad config or an impossible request; the message names the file and the problem."""
