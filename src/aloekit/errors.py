"""User-facing errors.

Anything a user can fix (bad input, missing file, unknown name) raises `UserError`; the CLI prints its
message as one line and exits 2. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input; the message says what is wrong and what to do."""

    exit_code = 2

