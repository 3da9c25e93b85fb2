"""Shared pieces of the reader fuzz tests: the property, the time guard, fixtures and strategies.

See test_fuzz_files.py for what is fuzzed and why; each test module holds one family of readers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from electrolite.data.tokenizer import load_tokenizer
from electrolite.errors import UserError

VOCAB = Path(__file__).parent.parent / "integration" / "data" / "gutenberg-wordpiece-2000.txt"
CALL_SECONDS = 10  # one reader call on a few kB; a hang is anything past this
MAX_MESSAGE = 2000  # characters: a message quotes values cut short, never a whole field


# ELECTROLITE_FUZZ_SCALE=20 runs twenty times the examples (a longer hunt than the suite's ~30 s).
SCALE = float(os.environ.get("ELECTROLITE_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    """Hypothesis settings: `examples` per test (times SCALE), no example database written to the repository."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=timedelta(seconds=5), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


class ReaderHang(BaseException):
    """Raised by the alarm: a BaseException, so that no reader's `except Exception` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise ReaderHang(f"the reader did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_message(message: str, names: tuple[str, ...]) -> None:
    assert message.strip(), "empty UserError message"
    assert message.splitlines() == [message], f"UserError message is not one line: {message!r}"
    assert len(message) <= MAX_MESSAGE, f"UserError message of {len(message)} characters: {message[:300]!r}..."
    if names:
        assert any(name in message for name in names), f"UserError message names none of {names}: {message!r}"


def reads_or_fails_cleanly(read, *names: object):
    """read()'s result, or None when it raised a well-formed UserError naming one of `names`.

    Anything else propagates and fails the test: another exception type, or ReaderHang.
    """
    try:
        with time_limit(CALL_SECONDS):
            return read()
    except UserError as e:
        check_message(str(e), tuple(map(str, names)))
        return None


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(VOCAB))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder per module; each example overwrites its files (hypothesis and function fixtures don't mix)."""
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------
# Pieces the structured strategies are built from
# ---------------------------------------------------------------------------------------------

WORD = st.sampled_from(["the", "cat", "sat", "Mr.", "Dr.", "U.S.", "end.", "What?", '"Yes!"', "naïve", "Köln",
                        "日本語", "😀", "-", "--", "x" * 150, "(a)", "'s", "O", "B-PER", "I-ORG"])
TEXT = st.lists(WORD, max_size=8).map(" ".join)
ODD_TEXT = st.one_of(TEXT, st.text(max_size=12), st.sampled_from(
    ["", " ", "\t", "a\rb", "a\x0cb", "a\u2028b", "a\x85b", "a\x00b", "\ufeffbom", "\\ud800", '"', '""', "'",
     "\ud800", "x\udc00y"]))  # lone surrogates: JSON escapes them, UTF-8 cannot hold them (written with surrogatepass)
# Bytes that break decoding: invalid starts, a cut-off sequence, an encoded surrogate, an overlong
# '/', a code point past U+10FFFF, and valid-but-awkward ones (BOM, NUL, CR, NEL, LS).
BAD_BYTES = st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                             b"\xef\xbb\xbf", b"\x00", b"\r", b"\xc2\x85", b"\xe2\x80\xa8", b"\x1f\x8b"])
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                        st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["text", "label", "data", "x", ""]), inner, max_size=3),
                          max_leaves=6)
# JSON text that is not a value, or a value that is hard to decode.
AWKWARD_JSON = st.one_of(
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # deep enough to overflow the decoder's recursion
    st.integers(1, 3000).map(lambda n: '{"text": ' + "[" * n),
    st.sampled_from(['{"text": "a \\ud800 b"}', '{"text": "\\udc00"}', '{"text": "\\ud83d\\ude00 ok"}',
                     '{"text": "cut', "{", "}", "[", "NaN", "-Infinity", "1e999", '"\\u0000"', "",
                     '{"text": "a", "text": 5}', '{"text": null}', "\ufeff{}"]),
)


CELL_ODDS = 15  # one cell, word, tag or question in this many is damaged


def mostly(good, bad, odds: int = 5):
    """`good`, except one draw in `odds` from `bad`: most files stay well-formed enough to reach
    the checks behind the first decode, and the damage lands at one place at a time."""
    return st.integers(0, odds - 1).flatmap(lambda i: bad if i == 0 else good)


def damage(data: bytes, draw) -> bytes:
    """0-2 bad byte sequences inserted at random places."""
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(BAD_BYTES) + data[at:]
    return data


def join_lines(lines: list[bytes], draw) -> bytes:
    sep = draw(mostly(st.just(b"\n"), st.sampled_from([b"\r\n", b"\r"]), 6))
    data = sep.join(lines) + draw(st.sampled_from([b"", b"\n", b"\n\n"]))
    if draw(st.integers(0, 3)) == 0:
        data = damage(data, draw)
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data


def mutate(doc, draw, times: int = 2):
    """Applies up to `times` random edits to a JSON-like tree: delete a key or item, replace a value
    with another of any type, or wrap it in a list. Returns the new tree (the root may be replaced)."""
    for _ in range(draw(st.integers(0, times))):
        slots: list = [(None, None)]

        def walk(node):
            if isinstance(node, dict):
                for k in list(node):
                    slots.append((node, k))
                    walk(node[k])
            elif isinstance(node, list):
                for i in range(len(node)):
                    slots.append((node, i))
                    walk(node[i])

        walk(doc)
        parent, key = slots[draw(st.integers(0, len(slots) - 1))]
        op = draw(st.sampled_from(["delete", "replace", "wrap"]))
        old = doc if parent is None else parent[key]
        new = draw(JSON_VALUE) if op == "replace" else [old]
        if parent is None:
            doc = new if op != "delete" else {}
        elif op == "delete":
            del parent[key]
        else:
            parent[key] = new
    return doc

def alias_bomb(levels: int = 8) -> str:
    """A YAML flow list of 9**levels leaves that share storage: cheap to load, a repr or str() never ends."""
    return "[&l0 [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)) + "]"
