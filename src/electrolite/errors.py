"""The one exception type for mistakes a user can make (bad input, bad config, missing files).

The CLI prints ``electrolite: error: <message>`` for it and exits with status 2, without a
traceback. Anything else that escapes is a bug of ours and may traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: its message is one line naming the file, line or field."""
