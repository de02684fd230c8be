"""GPT-2 and LLaMA in one file, plus the weight I/O every other script uses."""


class UserError(Exception):
    """A bad input the user can fix: scripts print it as one line and exit non-zero."""
