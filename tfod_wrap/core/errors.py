"""The one base class of errors the user can fix; the command line prints their message, no traceback."""


class UserError(Exception):
    """Bad input, a bad config or an impossible request; the message names the file and the problem."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or a SIGTERM taken as one) after a command had kept part of its work; the message says what it kept
    and how to go on. A plain KeyboardInterrupt means the command kept nothing."""
