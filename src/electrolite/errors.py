"""The one exception type for mistakes a user can make (bad input, bad config, missing files).

The CLI prints ``electrolite: error: <message>`` for it and exits with status 2, without a
traceback. Anything else that escapes is a bug of ours and may traceback.
"""

from __future__ import annotations

import json
import reprlib

# Values quoted in messages are cut short: a 1 MB field or a YAML alias bomb (9**9 elements that
# share storage) must not become a 1 MB message or a repr that never ends.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4


class UserError(Exception):
    """A mistake in the user's input: its message is one line naming the file, line or field.

    ``every_rank``: under torchrun every process raises this same error (a decision rank 0 made and
    shared), so only rank 0 prints it.
    """

    def __init__(self, message: str, every_rank: bool = False):
        super().__init__(message)
        self.every_rank = every_rank


def shown(value: object) -> str:
    """A value of the user's input as it goes into a one-line message.

    Printable text appears as it is (column names, labels, keys: ``model.hiden_size``); empty text,
    text with a line break, another unprintable character or space at either end, and anything
    else, as a repr cut to ~80 characters.
    """
    if isinstance(value, str) and value and value.isprintable() and value.strip() == value and len(value) <= 200:
        return value
    return _SHORT.repr(value)


def shown_repr(value: object) -> str:
    """``repr(value)`` for a message, cut to ~80 characters (never a line break: reprs escape them)."""
    return _SHORT.repr(value)


def parse_json(text: str, where: str, document: bool = False) -> object:
    """``json.loads`` of the user's input, every failure one line naming ``where`` ("FILE line N" for a
    JSON-lines record, "FILE" with ``document=True`` for a whole file, whose line is then named too)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno} column {e.colno}" if document else f"column {e.colno}"
        raise UserError(f"{where}: not valid JSON ({at}: {e.msg})") from None
    except RecursionError:
        raise UserError(f"{where}: not valid JSON (nested too deeply)") from None
