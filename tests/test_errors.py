"""errors.py: the one-line messages for JSON a user gave us."""

from __future__ import annotations

import pytest

from electrolite.errors import UserError, parse_json


@pytest.mark.parametrize("text, document, message", [
    ('{"text": "a"', False, 'f.jsonl line 7: not valid JSON (column 13: Expecting \',\' delimiter)'),
    ('{"a": 1,\n "b": ]}', True, "f.jsonl line 7: not valid JSON (line 2 column 7: Expecting value)"),
    ("[" * 100_000 + "]" * 100_000, False, "f.jsonl line 7: not valid JSON (nested too deeply)"),
])
def test_parse_json_failures_are_one_line(text, document, message):
    with pytest.raises(UserError) as e:
        parse_json(text, "f.jsonl line 7", document=document)
    assert str(e.value) == message


def test_parse_json_returns_the_value():
    assert parse_json('{"text": "a", "n": [1, 2]}', "x") == {"text": "a", "n": [1, 2]}
