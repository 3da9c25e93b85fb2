"""Fuzzing every reader of a user's files: it parses, or it fails with our one-line error.

Each reader gets (a) arbitrary bytes and (b) records built from valid-looking pieces and then
damaged (ragged rows, missing keys, wrong types, bad UTF-8, corrupted gzip, offsets that miss,
deep nesting, YAML tags and alias bombs), so that the fuzzing reaches the checks past the first
decode. The property: the reader returns, and what it returns tokenizes; or it raises
``UserError`` whose message is one non-empty line (no line break of any kind, bounded length)
naming the file. Any other exception fails the test, and so does a call that runs past
``CALL_SECONDS`` (a SIGALRM guard, next to hypothesis' deadline).

The pre-training ``--config`` is the one reader whose schema errors name the config key rather
than the file (``unknown config key: model.hiden_size``): the same checks cover the command
line's dotted flags, and tests/integration/test_e2e_bad_input.py pins that wording.

The last tests run one bad file per reader family through the CLI, in process: exit 2 and
exactly one stderr line ``electrolite: error: ...``, no traceback.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from electrolite.cli import main
from electrolite.config import resolve_pretrain_config
from electrolite.corpus import _ids_tokenizer
from electrolite.configio import load_yaml
from electrolite.errors import UserError
from electrolite.inference import read_inputs
from electrolite.tasks import CONLL2003_TAGS, get_task
from electrolite.tasks.model import load_encoder
from electrolite.textfiles import read_sentence_blocks
from electrolite.tokenizer import _text_batches, load_tokenizer

# numpy's overflow and invalid-value warnings mean a reader let a value through that it should have refused.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

VOCAB = Path(__file__).parent / "integration" / "data" / "gutenberg-wordpiece-2000.txt"
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


# ---------------------------------------------------------------------------------------------
# Text corpora (.txt, .txt.gz, .jsonl): what `prepare` and `tokenizer train` read
# ---------------------------------------------------------------------------------------------

TEXT_SUFFIXES = [".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".TXT"]


@st.composite
def corpus_payload(draw, suffix: str) -> bytes:
    if suffix.lower().removesuffix(".gz").endswith(".jsonl"):
        line = st.one_of(TEXT.map(lambda t: json.dumps({"text": t}, ensure_ascii=draw(st.booleans()))),
                         JSON_VALUE.map(json.dumps), AWKWARD_JSON, st.just(""))
    else:
        line = st.one_of(TEXT, ODD_TEXT, st.just(""))
    data = join_lines([s.encode("utf-8", "surrogatepass") for s in draw(st.lists(line, max_size=8))], draw)
    # Now and then push the rest past the first 1 MiB read, so that a character or a bad byte
    # straddles the chunk boundary.
    pad = draw(mostly(st.just(0), st.sampled_from([(1 << 20) - 1, (1 << 20) - 2]), 20))
    if pad:
        data = b"x" * pad + data
    return data


@st.composite
def gzip_file(draw, payload: bytes) -> bytes:
    """`payload` gzipped, then maybe cut, flipped, extended or given a second member."""
    data = gzip.compress(payload, mtime=0)
    how = draw(st.sampled_from(["whole", "cut", "flip", "garbage", "members", "header"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "cut":
        data = data[:at]
    elif how == "flip":
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
    elif how == "garbage":
        data += draw(st.binary(min_size=1, max_size=40))
    elif how == "members":
        data += gzip.compress(draw(st.binary(max_size=40)), mtime=0)
    elif how == "header":  # flags byte: FEXTRA/FNAME/FCOMMENT/FHCRC with nothing behind them
        data = data[:3] + bytes([draw(st.integers(0, 255))]) + data[4:]
    return data


def read_corpus(path: Path, errors: str, tok) -> None:
    """`tokenizer train`'s reader, then `prepare`'s (documents → sentences), then the tokenizer."""
    for batch in _text_batches([str(path)], errors):
        assert all(isinstance(doc, str) and doc for doc in batch)
    for sentences, counts in read_sentence_blocks([str(path)], errors, block_sentences=64):
        assert sum(counts) == len(sentences)
        tok.encode_batch(sentences)


@fuzz(240)
@given(suffix=st.sampled_from(TEXT_SUFFIXES), data=st.binary(max_size=3000),
       errors=st.sampled_from(["strict", "replace"]))
def test_text_corpus_random_bytes(work, tok, suffix, data, errors):
    path = work / f"corpus{suffix}"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: read_corpus(path, errors, tok), path)


@fuzz(200)
@given(suffix=st.sampled_from(TEXT_SUFFIXES), errors=st.sampled_from(["strict", "replace"]), data=st.data())
def test_text_corpus_structured(work, tok, suffix, errors, data):
    payload = data.draw(corpus_payload(suffix))
    if suffix.lower().endswith(".gz"):
        payload = data.draw(gzip_file(payload))
    path = work / f"corpus{suffix}"
    path.write_bytes(payload)
    reads_or_fails_cleanly(lambda: read_corpus(path, errors, tok), path)


# ---------------------------------------------------------------------------------------------
# Classification: GLUE tsv files and the generic text-classification task (csv, tsv, jsonl)
# ---------------------------------------------------------------------------------------------

GLUE = ["cola", "sst2", "mrpc", "stsb", "mnli", "qnli", "rte"]
LABEL = st.sampled_from(["0", "1", "2", "entailment", "neutral", "contradiction", "not_entailment", "3.5", "-1",
                         "nan", "inf", "1e999", "", " ", "pos", "neg", "true", "label", "0\x0c1", "x\u2028y"])
CELL = st.one_of(TEXT, LABEL, ODD_TEXT, st.sampled_from(["a\tb", "a\nb", 'say "hi"', "a,b", "\"a\",b"]),
                 st.integers(131_000, 140_000).map(lambda n: "w" * n))  # past csv's default field limit


def load_task(task, train: Path, tok, dev: Path | None = None):
    """`finetune`'s data step: read the training and evaluation files (dev: the training file
    again unless given), check the evaluation labels against training's, encode both."""
    data = task.load(train=train, dev=dev or train)
    task.encode(data.train, tok, data.labels, training=True)
    for examples in data.evals.values():
        task.encode(examples, tok, data.labels)
    return data


def write_pair(work: Path, name: str, strategy, data) -> tuple[Path, Path]:
    """A training file and an evaluation file: a copy of it (every label known) or another draw."""
    train, dev = work / f"train{name}", work / f"dev{name}"
    content = data.draw(strategy)
    train.write_bytes(content)
    dev.write_bytes(content if data.draw(st.booleans()) else data.draw(strategy))
    return train, dev


def table_bytes(rows: list[list[str]], suffix: str, draw) -> bytes:
    if suffix == ".csv" and draw(st.booleans()):
        buf = io.StringIO()
        csv.writer(buf, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))).writerows(rows)
        data = buf.getvalue().encode("utf-8", "surrogatepass")
        return damage(data, draw) if draw(st.booleans()) else data
    sep = "," if suffix == ".csv" else "\t"
    return join_lines([sep.join(r).encode("utf-8", "surrogatepass") for r in rows], draw)


@st.composite
def glue_file(draw, task_name: str) -> bytes:
    layout = get_task(task_name).layout
    if layout.header:
        names = [*layout.text, layout.label,
                 *draw(st.lists(st.one_of(st.sampled_from(["index", "label1", "genre"]), ODD_TEXT), max_size=2))]
        names = draw(st.permutations(names))
        if draw(st.integers(0, 5)) == 0:  # a column missing
            names = names[1:]
        width = len(names)
    else:
        names, width = None, 4
    labels = get_task(task_name).labels or ("0", "1.5", "5.0", "-0.25")  # STS-B: scores
    if names is None:  # CoLA: columns by position
        label_at = int(layout.label)
    else:
        label_at = names.index(layout.label) if layout.label in names else -1
    good_label = st.sampled_from(labels)
    rows = [names] if names is not None else []
    for _ in range(draw(mostly(st.integers(1, 5), st.just(0), 10))):
        if draw(st.integers(0, 9)):  # mostly well-formed
            rows.append([draw(mostly(good_label if i == label_at else TEXT, CELL, CELL_ODDS)) for i in range(width)])
        else:
            rows.append([draw(CELL) for _ in range(draw(st.integers(0, width + 2)))])
    return table_bytes(rows, ".tsv", draw)


@fuzz(160)
@given(name=st.sampled_from(GLUE), data=st.binary(max_size=2000))
def test_glue_random_bytes(work, tok, name, data):
    path = work / "train.tsv"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: load_task(get_task(name), path, tok), path)


@fuzz(300)
@given(name=st.sampled_from(GLUE), data=st.data())
def test_glue_structured(work, tok, name, data):
    train, dev = write_pair(work, ".tsv", glue_file(name), data)
    reads_or_fails_cleanly(lambda: load_task(get_task(name), train, tok, dev), train, dev)


@st.composite
def table_file(draw, suffix: str, regression: bool) -> bytes:
    names = draw(st.permutations(["text", "text_b", "label", *draw(st.lists(ODD_TEXT, max_size=2))]))
    if draw(st.integers(0, 5)) == 0:
        names = names[1:]
    good = {"label": st.sampled_from(["0.5", "3", "-1.25", "1e3"] if regression else ["pos", "neg", "neutral"])}
    if suffix == ".jsonl":
        lines = []
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.integers(0, 9))
            if kind == 0:
                lines.append(draw(AWKWARD_JSON))
            elif kind == 1:
                lines.append(json.dumps(draw(JSON_VALUE)))
            else:
                any_type = st.one_of(CELL, JSON_SCALAR)
                record = {n: draw(any_type if kind == 2 else mostly(good.get(n, TEXT), CELL, CELL_ODDS))
                          for n in names}
                lines.append(json.dumps(mutate(record, draw, 1) if kind == 3 else record,
                                        ensure_ascii=draw(st.booleans())))
        return join_lines([line.encode("utf-8", "surrogatepass") for line in lines], draw)
    rows = [names]
    for _ in range(draw(mostly(st.integers(1, 5), st.just(0), 10))):
        if draw(st.integers(0, 9)):  # mostly well-formed
            rows.append([draw(mostly(good.get(n, TEXT), CELL, CELL_ODDS)) for n in names])
        else:
            rows.append([draw(CELL) for _ in range(draw(st.integers(0, len(names) + 2)))])
    return table_bytes(rows, suffix, draw)


def text_classification(columns: tuple[str, ...], regression: bool):
    return get_task("text-classification").with_options(columns, "label", regression)


@fuzz(120)
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), data=st.binary(max_size=2000),
       regression=st.booleans())
def test_text_classification_random_bytes(work, tok, suffix, data, regression):
    path = work / f"train{suffix}"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: load_task(text_classification(("text",), regression), path, tok), path)


@fuzz(400)
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), columns=st.sampled_from([("text",), ("text", "text_b")]),
       regression=st.booleans(), data=st.data())
def test_text_classification_structured(work, tok, suffix, columns, regression, data):
    train, dev = write_pair(work, suffix, table_file(suffix, regression), data)
    task = text_classification(columns, regression)
    reads_or_fails_cleanly(lambda: load_task(task, train, tok, dev), train, dev)


# ---------------------------------------------------------------------------------------------
# Token classification: CoNLL column files (conll2003, token-classification) and JSON lines
# ---------------------------------------------------------------------------------------------

TAG = mostly(st.sampled_from(CONLL2003_TAGS), st.sampled_from(
    ["B-", "X-PER", "b-per", "B-PER\x0cX", "I-ORG\u2028", "S-LOC", "E-LOC", "O ", "-", "B-😀", "0", "", "B-X\ud800"]),
    odds=CELL_ODDS)


@st.composite
def conll_file(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 15))
        if kind == 0:
            lines.append("-DOCSTART- -X- -X- O")
        elif kind <= 2:
            lines.append(draw(st.sampled_from(["", "", " ", "\t"])))
        elif kind == 3:
            lines.append(draw(ODD_TEXT))
        else:
            sep = draw(st.sampled_from([" ", "\t", "  ", " \t"]))
            word = draw(mostly(WORD, ODD_TEXT, CELL_ODDS))
            extra = draw(st.lists(st.sampled_from(["NNP", "I-NP", "X"]), max_size=2))
            lines.append(sep.join([word, *extra, draw(TAG)]))
    return join_lines([line.encode("utf-8", "surrogatepass") for line in lines], draw)


@st.composite
def tagging_jsonl(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.one_of(AWKWARD_JSON, JSON_VALUE.map(json.dumps))))
            continue
        words = draw(st.lists(mostly(WORD, ODD_TEXT, CELL_ODDS), max_size=5))
        tags = draw(st.lists(TAG, min_size=len(words), max_size=len(words))) if draw(st.integers(0, 4)) else \
            draw(st.lists(st.one_of(TAG, JSON_SCALAR), max_size=6))
        record = {"tokens": words, draw(mostly(st.sampled_from(["tags", "ner_tags"]), st.just("labels"))): tags}
        lines.append(json.dumps(mutate(record, draw, 1) if draw(st.integers(0, 3)) == 0 else record,
                                ensure_ascii=draw(st.booleans())))
    return join_lines([line.encode("utf-8", "surrogatepass") for line in lines], draw)


@fuzz(160)
@given(name=st.sampled_from(["conll2003", "token-classification"]),
       suffix=st.sampled_from([".txt", ".conll", ".jsonl"]), data=st.binary(max_size=2000))
def test_conll_random_bytes(work, tok, name, suffix, data):
    path = work / f"train{suffix}"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: load_task(get_task(name), path, tok), path)


@fuzz(400)
@given(name=st.sampled_from(["conll2003", "token-classification"]), jsonl=st.booleans(), data=st.data())
def test_conll_structured(work, tok, name, jsonl, data):
    train, dev = write_pair(work, ".jsonl" if jsonl else ".txt", tagging_jsonl() if jsonl else conll_file(), data)
    reads_or_fails_cleanly(lambda: load_task(get_task(name), train, tok, dev), train, dev)


def test_conll_tag_list_with_a_form_feed_is_one_line(work):
    """The message lists the tags seen in training; one of them held a form feed (a line break to splitlines)."""
    train, dev = work / "ff-train.txt", work / "ff-dev.txt"
    train.write_text("Bonn\tB-LOC\x0cX\n", encoding="utf-8")  # tab-separated: the tag keeps its form feed
    dev.write_text("Paris\tB-PER\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        get_task("token-classification").load(train=train, dev=dev)
    check_message(str(e.value), (str(dev),))
    assert "'B-LOC\\x0cX'" in str(e.value)


# ---------------------------------------------------------------------------------------------
# SQuAD json (v1.1 and v2.0)
# ---------------------------------------------------------------------------------------------


@st.composite
def squad_doc(draw) -> dict:
    fresh = iter(range(10 ** 6))
    ids = mostly(st.builds(lambda: f"q{next(fresh)}"),
                 st.one_of(st.sampled_from(["q1", "a\nb"]), st.integers(0, 3), st.booleans(), st.none()), CELL_ODDS)
    articles = []
    for _ in range(draw(st.integers(0, 3))):
        paragraphs = []
        for _ in range(draw(st.integers(0, 2))):
            context = draw(mostly(TEXT, ODD_TEXT, CELL_ODDS))
            qas = []
            for _ in range(draw(st.integers(0, 3))):
                answers = []
                for _ in range(draw(mostly(st.integers(1, 2), st.just(0)))):
                    start = draw(st.integers(0, len(context)))
                    end = draw(st.integers(start, len(context)))
                    shift = draw(mostly(st.just(0), st.sampled_from([1, -1, -1000, 10 ** 20]), CELL_ODDS))  # misses
                    answers.append({"text": context[start:end], "answer_start": start + shift})
                qa = {"id": draw(ids), "question": draw(mostly(TEXT, ODD_TEXT, CELL_ODDS)), "answers": answers}
                if draw(st.booleans()):
                    qa["is_impossible"] = draw(mostly(st.booleans(), JSON_SCALAR))
                qas.append(qa)
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": draw(ODD_TEXT), "paragraphs": paragraphs})
    doc = {"version": draw(st.sampled_from(["1.1", "v2.0"])), "data": articles}
    return mutate(doc, draw, 2) if draw(st.integers(0, 2)) == 0 else doc


@fuzz(160)
@given(version=st.sampled_from([1, 2]), data=st.one_of(st.binary(max_size=2000),
                                                       JSON_VALUE.map(lambda v: json.dumps(v).encode())))
def test_squad_random_bytes_and_wrong_shapes(work, tok, version, data):
    path = work / "train.json"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: load_task(get_task(f"squad{version}"), path, tok), path)


@fuzz(400)
@given(version=st.sampled_from([1, 2]), doc=squad_doc(), ascii_only=st.booleans(), deep=st.integers(0, 9))
def test_squad_structured(work, tok, version, doc, ascii_only, deep):
    text = json.dumps(doc, ensure_ascii=ascii_only)
    if deep == 0:  # a lone surrogate escape, or nesting past the decoder's recursion limit
        text = text.replace('"question": "', '"question": "\\ud800', 1) if '"question": "' in text else \
            '{"data": ' + "[" * 3000 + "]" * 3000 + "}"
    path = work / "train.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    reads_or_fails_cleanly(lambda: load_task(get_task(f"squad{version}"), path, tok), path)


# ---------------------------------------------------------------------------------------------
# YAML configs: `pretrain --config` and the config.yaml of the run `finetune --model` names
# ---------------------------------------------------------------------------------------------

CONFIG_FIELD = r"^(unknown config keys?: |config |unknown size |model\.|objective\.|train\.)"
YAML_SCALAR = st.one_of(JSON_SCALAR, st.sampled_from([
    "tiny", "electra-small", "2001-13-01", "2001-12-14t21:59:43.10-05:00", "9" * 5000, "0x1F", "0o17", "1_000",
    ".inf", "-.NaN", "~", "yes", "off", "1e400", "64", "'64'", "!!int x", "!!float y", "!!binary AAA=",
    "!!timestamp 2001-13-01", "!!python/object/apply:os.system ['echo fuzz']", "!!python/name:os.system",
    "!!set {a, b}", "!!omap [a: 1]", "*undefined", "&a 1", "|\n  block\n", "[1, 2", "{a: 1", "\"\\x\"",
    "!!str", "!<tag:yaml.org,2002:int> 5", "@", "`", "%", "\t1"]))
KNOWN_KEYS = {"": ["size", "corpus", "out", "model", "objective", "train"],
              "model": ["hidden_size", "num_hidden_layers", "num_attention_heads", "embedding_size",
                        "num_hidden_groups", "vocab_size", "hidden_act", "hidden_dropout_prob"],
              "objective": ["name", "masking", "mask_prob", "sop", "generator_size", "max_ngram"],
              "train": ["steps", "batch_size", "learning_rate", "seed", "budget", "precision", "compile"]}


GOOD_VALUES = {  # values a real config has, so that most keys pass and the damage is one at a time
    "size": ["tiny", "electra-small", "bert-small"], "corpus": ["corpus"], "out": ["run"],
    "hidden_size": ["64", "128"], "num_hidden_layers": ["2"], "num_attention_heads": ["2", "0"],
    "embedding_size": ["32", "0"], "num_hidden_groups": ["1", "0"], "vocab_size": ["2000"], "hidden_act": ["gelu"],
    "hidden_dropout_prob": ["0.1"], "name": ["electra", "mlm"], "masking": ["token", "whole_word", "ngram"],
    "mask_prob": ["0.15"], "sop": ["true"], "generator_size": ["0.25"], "max_ngram": ["3"], "steps": ["10"],
    "batch_size": ["8"], "learning_rate": ["1e-4", "5.0e-4"], "seed": ["0"], "budget": ["2h", "90s"],
    "precision": ["fp32", "auto"], "compile": ["off"]}


def alias_bomb(levels: int = 8) -> str:
    """A YAML flow list of 9**levels leaves that share storage: cheap to load, a repr or str() never ends."""
    return "[&l0 [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)) + "]"


def yaml_value(key: str):
    return mostly(st.sampled_from(GOOD_VALUES.get(key, ["1"])), YAML_SCALAR, odds=4)


@st.composite
def config_text(draw) -> str:
    """A YAML config written line by line from known and unknown keys and awkward values."""
    lines = []
    if draw(st.integers(0, 4)) == 0:
        lines.append(draw(st.sampled_from(["%YAML 1.1\n---", "---", "a: &a [x, x, x, x, x, x, x, x, x]",
                                           "--- !!python/object:electrolite.config.PretrainConfig"])))
    for _ in range(draw(st.integers(0, 5))):
        key = draw(mostly(st.sampled_from(KNOWN_KEYS[""]), st.sampled_from(
            ["trian", "1", "null", "~", "? [1, 2]", "\"a\\nb\"", "<<", "2001-01-01", "model.hidden_size", "yes"])))
        if key in ("model", "objective", "train") and draw(st.integers(0, 4)):
            lines.append(f"{key}:")
            indent = draw(mostly(st.sampled_from(["  ", "    "]), st.sampled_from(["\t", " "])))
            for _ in range(draw(st.integers(0, 4))):
                sub = draw(mostly(st.sampled_from(KNOWN_KEYS[key]), st.sampled_from(["hiden_size", "1", "~"])))
                lines.append(f"{indent}{sub}: {draw(yaml_value(sub))}")
        else:
            lines.append(f"{key}: {draw(yaml_value(key))}")
    if draw(st.integers(0, 6)) == 0:  # an alias bomb where a value (or a key) goes
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(["size: {}", "train: {{steps: {}}}", "model: {{hidden_size: {}}}",
                                               "objective: {}", "out: {}", "{}: 1"])).format(alias_bomb()))
    if draw(st.integers(0, 8)) == 0:
        lines.append("train: " + "[" * draw(st.integers(300, 800)))  # PyYAML's recursion runs out near 500
    return "\n".join(lines) + "\n"


def check_pretrain_config(path: Path) -> None:
    """Errors of the YAML itself name the file; schema errors name the key (see the module docstring)."""
    data = reads_or_fails_cleanly(lambda: load_yaml(path), path)
    if data is None:
        return
    try:
        with time_limit(CALL_SECONDS):
            resolve_pretrain_config(data, {})
    except UserError as e:
        check_message(str(e), ())
        assert re.match(CONFIG_FIELD, str(e)), f"names neither the file nor a config key: {str(e)!r}"


def read_finetune_model_config(model_dir: Path):
    """`finetune --model DIR`'s reading of DIR/config.yaml (no weights: it must stop before loading them)."""
    return load_encoder(str(model_dir))


@fuzz(160)
@given(data=st.binary(max_size=2000))
def test_config_random_bytes(work, data):
    path = work / "config.yaml"
    path.write_bytes(data)
    check_pretrain_config(path)
    reads_or_fails_cleanly(lambda: read_finetune_model_config(work), work)


@fuzz(250)
@given(text=config_text(), finetune_section=st.booleans())
def test_config_structured(work, text, finetune_section):
    path = work / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_pretrain_config(path)
    if finetune_section:  # a task dir's config.yaml: finetune/encoder/task_model sections
        path.write_text(text.replace("model:", "encoder:", 1).replace("train:", "task_model:", 1)
                        + "finetune: {}\n", encoding="utf-8", errors="surrogatepass")
    reads_or_fails_cleanly(lambda: read_finetune_model_config(work), work)


@fuzz(120)
@given(value=JSON_VALUE, where=st.sampled_from(["", "model", "objective", "train", "encoder", "task_model"]),
       key=st.one_of(st.sampled_from(sum(KNOWN_KEYS.values(), [])), st.text(max_size=6), st.integers()))
def test_config_wrong_types(work, value, where, key):
    """Valid YAML, any value at any key: the types are checked, not trusted."""
    doc = {key: value} if not where else {where: {key: value}}
    if where in ("encoder", "task_model"):
        doc["finetune"] = {}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    check_pretrain_config(path)
    reads_or_fails_cleanly(lambda: read_finetune_model_config(work), work)


def test_config_refuses_python_tags(work, tmp_path):
    """safe_load: a tag that would run code is an error, and the code does not run."""
    marker = tmp_path / "pwned"
    for text in (f"size: !!python/object/apply:os.system ['touch {marker}']\n",
                 f"!!python/object/apply:subprocess.call [[touch, {marker}]]\n",
                 "train: !!python/name:os.system\n",
                 "--- !!python/object:electrolite.config.PretrainConfig {size: tiny}\n"):
        path = work / "tagged.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(UserError) as e:
            load_yaml(path)
        check_message(str(e.value), (str(path),))
        assert "could not determine a constructor" in str(e.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Tokenizer files: `prepare --tokenizer` (tokenizer.json or vocab.txt)
# ---------------------------------------------------------------------------------------------


def read_tokenizer(path: Path, tok):
    """What `prepare --tokenizer PATH` does with it: load, find the special tokens, encode."""
    tokenizer, _ = _ids_tokenizer(str(path))
    tokenizer.encode_batch(["The cat sat.", "naïve 日本語 😀"])
    return tokenizer


@fuzz(120)
@given(name=st.sampled_from(["tokenizer.json", "vocab.txt"]), data=st.binary(max_size=2000))
def test_tokenizer_file_random_bytes(work, tok, name, data):
    path = work / "tok" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: read_tokenizer(path, tok), path)


@fuzz(120)
@given(data=st.data())
def test_tokenizer_file_structured(work, tok, data):
    doc = json.loads(tok.to_str())
    doc["model"]["vocab"] = dict(list(doc["model"]["vocab"].items())[:40])  # small: the mutations reach it
    path = work / "tok" / "tokenizer.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(mutate(doc, data.draw, 3)), encoding="utf-8")
    reads_or_fails_cleanly(lambda: read_tokenizer(path, tok), path)


# ---------------------------------------------------------------------------------------------
# `predict --input FILE`: texts or JSON lines with the task's fields
# ---------------------------------------------------------------------------------------------


def read_predict_input(path: Path, fields: tuple[str, ...]) -> list[dict]:
    with open(path, encoding="utf-8") as lines:  # as `predict --input` opens it
        return list(read_inputs(lines, fields, str(path)))


@st.composite
def predict_input(draw, fields: tuple[str, ...]) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            lines.append(draw(st.one_of(AWKWARD_JSON, JSON_VALUE.map(json.dumps))))
        elif kind == 1:
            lines.append(draw(ODD_TEXT))
        else:
            record = {f: draw(mostly(TEXT, JSON_SCALAR, CELL_ODDS)) for f in fields}
            lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
    return join_lines([line.encode("utf-8", "surrogatepass") for line in lines], draw)


@fuzz(120)
@given(fields=st.sampled_from([("text",), ("sentence1", "sentence2"), ("question", "context")]),
       raw=st.booleans(), data=st.data())
def test_predict_input(work, tok, fields, raw, data):
    path = work / "input.jsonl"
    path.write_bytes(data.draw(st.binary(max_size=2000) if raw else predict_input(fields)))

    def read():
        for record in read_predict_input(path, fields):
            tok.encode_batch([record[f] for f in fields])

    reads_or_fails_cleanly(read, path)


# ---------------------------------------------------------------------------------------------
# End to end: one bad file per reader family through the CLI (in process)
# ---------------------------------------------------------------------------------------------


def cli_error(capsys, *argv: object) -> str:
    """Runs `electrolite ARGV`; asserts exit 2 and exactly one stderr line `electrolite: error: ...`
    with no traceback, and returns the message."""
    capsys.readouterr()
    with time_limit(120):
        rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}, stderr:\n{err}"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith("electrolite: error: "), lines[0]
    return lines[0].removeprefix("electrolite: error: ")


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def flipped_gzip(data: bytes) -> bytes:
    whole = bytearray(gzip.compress(data, mtime=0))
    whole[len(whole) // 2] ^= 0xFF  # inside the deflate stream
    return bytes(whole)


BOOKS = b"The cat sat on the mat. It was happy.\n\nA second document follows here.\n"
TEXT_CASES = {  # name: (file name, bytes, the command's words, what the message says)
    "prepare-deep-jsonl": ("deep.jsonl", b'{"text": "fine"}\n' + deep_json().encode() + b"\n", "prepare",
                           "line 2: invalid JSON (nested too deeply)"),
    "tokenizer-surrogate-jsonl": ("surrogate.jsonl", b'{"text": "bad \\ud800 escape"}\n', "tokenizer",
                                  'line 1: "text" holds a lone surrogate escape'),
    "prepare-flipped-gzip": ("flipped.txt.gz", flipped_gzip(BOOKS * 50), "prepare", ": cannot read ("),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_cli_text_corpus(capsys, tmp_path, case):
    name, data, command, says = TEXT_CASES[case]
    bad = tmp_path / name
    bad.write_bytes(data)
    out = tmp_path / "out"
    if command == "prepare":
        argv = ["prepare", bad, "--tokenizer", VOCAB, "--seq-len", 64, "--out", out, "--no-progress"]
    else:
        argv = ["tokenizer", "train", bad, "--vocab-size", 100, "--out", out]
    message = cli_error(capsys, *argv)
    assert message.startswith(str(bad)) and says in message, message
    assert not out.exists()


def _without_unk(doc: dict) -> str:
    del doc["model"]["vocab"]["[UNK]"]
    return "WordPiece error: Missing [UNK] token from the vocabulary"


def _template_gap(doc: dict) -> str:
    del doc["post_processor"]["special_tokens"]["[SEP]"]
    return "the post-processor's template uses '[SEP]' but does not define it"


@pytest.mark.parametrize("damage_it", [_without_unk, _template_gap], ids=["no-unk", "template-gap"])
def test_cli_prepare_with_a_broken_tokenizer_json(capsys, tmp_path, tok, damage_it):
    """Both used to load. The first failed with a bare Exception once prepare met a character outside the
    vocabulary; the second passed prepare (no special tokens there) and panicked in Rust, with a backtrace,
    wherever text is encoded with special tokens (fine-tuning, predict)."""
    doc = json.loads(tok.to_str())
    says = damage_it(doc)
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(doc), encoding="utf-8")
    books = tmp_path / "books.txt"
    books.write_bytes(BOOKS * 20 + "A smile 😀 at the end.\n".encode())
    out = tmp_path / "corpus"
    message = cli_error(capsys, "prepare", books, "--tokenizer", bad, "--seq-len", 64, "--out", out, "--no-progress")
    assert message == f"{bad}: not a valid tokenizer.json ({says})"
    assert not out.exists()


def finetune_argv(tmp_path: Path, task: str, *files: object) -> list[object]:
    return ["finetune", "--model", tmp_path / "no-model", "--task", task, *files, "--out", tmp_path / "task",
            "--no-progress"]


def test_cli_glue_header_with_a_carriage_return(capsys, tmp_path):
    """A header cell holding a lone CR listed the columns over two lines."""
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_bytes(b"sentence\rx\tlabel\na fine film\t1\n")
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\na fine film\t1\n")
    message = cli_error(capsys, *finetune_argv(tmp_path, "sst2", "--data", folder))
    assert message == f"{folder / 'train.tsv'}: no column 'sentence' (columns: 'sentence\\rx', label)"
    assert not (tmp_path / "task").exists()


CLASSIFICATION_CASES = {  # name: (file name, text, task options, what the message says)
    "deep-jsonl": ("train.jsonl", '{"text": "ok", "label": "a"}\n' + deep_json() + "\n", [],
                   "line 2: not valid JSON (nested too deeply)"),
    "surrogate-jsonl": ("train.jsonl", '{"text": "ok \\udc00", "label": "a"}\n', [],
                        "line 1: field 'text' holds a lone surrogate escape"),
    "huge-label-tsv": ("train.tsv", "text\tlabel\n" + "a film\t" + "9" * 200_000 + "x\n", ["--regression"],
                       "line 2: label '99999999"),  # the message quotes ~80 characters of it
    "float32-overflow": ("train.csv", "text,label\na film,1e39\n", ["--regression"],
                         "line 2: label '1e39' is not a finite number"),
}


@pytest.mark.parametrize("case", list(CLASSIFICATION_CASES))
def test_cli_text_classification(capsys, tmp_path, case):
    name, text, options, says = CLASSIFICATION_CASES[case]
    bad = tmp_path / name
    bad.write_text(text, encoding="utf-8")
    message = cli_error(capsys, *finetune_argv(tmp_path, "text-classification", "--train", bad, "--dev", bad,
                                               "--text-columns", "text", "--label-column", "label", *options))
    assert message.startswith(str(bad)) and says in message, message
    assert len(message) < MAX_MESSAGE
    assert not (tmp_path / "task").exists()


TAGGING_CASES = {  # name: (train text, dev text, the task, what the message says, the file it names)
    "form-feed-tag": ("Bonn\tB-LOC\x0cX\n", "Paris\tB-PER\n", "token-classification",
                      "line 1: tag 'B-PER' does not occur in the training data (tags: O, 'B-LOC\\x0cX')", "dev"),
    "deep-jsonl": (deep_json() + "\n", '{"tokens": ["a"], "tags": ["O"]}\n', "token-classification",
                   "line 1: not valid JSON (nested too deeply)", "train"),
    "surrogate-jsonl": ('{"tokens": ["a\\ud800"], "tags": ["O"]}\n', '{"tokens": ["a"], "tags": ["O"]}\n',
                        "token-classification",
                        "line 1: a token or tag holds a lone surrogate escape (not Unicode text)", "train"),
}


@pytest.mark.parametrize("case", list(TAGGING_CASES))
def test_cli_token_classification(capsys, tmp_path, case):
    train_text, dev_text, task, says, names = TAGGING_CASES[case]
    suffix = ".jsonl" if train_text.startswith(("[", "{")) else ".txt"
    train, dev = tmp_path / f"train{suffix}", tmp_path / f"dev{suffix}"
    train.write_text(train_text, encoding="utf-8")
    dev.write_text(dev_text, encoding="utf-8")
    message = cli_error(capsys, *finetune_argv(tmp_path, task, "--train", train, "--dev", dev))
    assert message == f"{train if names == 'train' else dev} {says}"
    assert not (tmp_path / "task").exists()


SQUAD_CASES = {  # name: (json text, what the message says)
    "deep": ('{"data": ' + deep_json() + "}", ": not valid JSON (nested too deeply)"),
    "id-with-a-newline": (json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "a\nb", "question": "q?", "answers": [{"text": "b", "answer_start": 1}]},
        {"id": "a\nb", "question": "q?", "answers": [{"text": "b", "answer_start": 1}]}]}]}]}),
        ": question 'a\\nb': the id occurs twice"),
    "surrogate-context": ('{"data": [{"paragraphs": [{"context": "\\ud800 abc", "qas": [{"id": "q", "question": '
                          '"q?", "answers": [{"text": "abc", "answer_start": 2}]}]}]}]}',
                          ": article 0 paragraph 0: 'context' holds a lone surrogate escape"),
}


@pytest.mark.parametrize("case", list(SQUAD_CASES))
def test_cli_squad(capsys, tmp_path, case):
    text, says = SQUAD_CASES[case]
    bad = tmp_path / "train-v2.0.json"
    bad.write_text(text, encoding="utf-8")
    message = cli_error(capsys, *finetune_argv(tmp_path, "squad2", "--train", bad, "--dev", bad))
    assert message.startswith(str(bad)) and says in message, message
    assert not (tmp_path / "task").exists()


ALIAS_BOMB = alias_bomb(8)
BOMB_SHOWN = "[['x', 'x', 'x', 'x', ...], " + ", ".join(["[[...], [...], [...], [...], ...]"] * 3) + ", ...]"
CONFIG_CASES = {  # name: (YAML text, the message, with {path} for the file; "..." ends a prefix)
    "bad-date": ("size: tiny\ntrain:\n  budget: 2001-13-01\n", "{path}: invalid YAML value (month must be in 1..12)"),
    "5000-digit-int": ("train:\n  steps: " + "9" * 5000 + "\n",  # Python's own words follow
                       "{path}: invalid YAML value (Exceeds the limit (4300 digits) for integer string conversion..."),
    "deep": ("model: " + "[" * 5000 + "]" * 5000 + "\n", "{path}: invalid YAML (nested too deeply)"),
    "number-keys": ("1: a\nfoo: b\nnull: c\n", "unknown config keys: 1, None, foo"),
    "newline-key": ('"a\\nb": 1\n', "unknown config key: 'a\\nb'"),
    "alias-bomb": (f"train: {{steps: {ALIAS_BOMB}}}\n",
                   "config train.steps must be int, got " + BOMB_SHOWN),
    "alias-bomb-size": (f"size: {ALIAS_BOMB}\n", "config size must be str, got " + BOMB_SHOWN),
    "python-tag": ("size: !!python/object/apply:os.system ['echo pwned']\n", "{path} line 1: invalid YAML (could "
                   "not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system')"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_cli_pretrain_config(capsys, tmp_path, case):
    text, expected = CONFIG_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    message = cli_error(capsys, "pretrain", "--config", config, "--corpus", tmp_path / "corpus", "--out", run)
    expected = expected.format(path=config)
    assert message.startswith(expected[:-3]) if expected.endswith("...") else message == expected, message
    assert not run.exists()


def test_cli_finetune_model_config(capsys, tmp_path):
    """`finetune --model DIR` whose config.yaml is a task dir's in name only."""
    data = tmp_path / "train.csv"
    data.write_text("text,label\na fine film,pos\na dull film,neg\n", encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text("finetune: {}\ntask_model: [1, 2]\n", encoding="utf-8")
    argv = finetune_argv(tmp_path, "text-classification", "--train", data, "--dev", data, "--text-columns", "text",
                         "--label-column", "label")
    argv[argv.index(tmp_path / "no-model")] = model
    message = cli_error(capsys, *argv)
    assert message == (f"{model / 'config.yaml'}: not the config of a fine-tuned task dir "
                       "(no encoder and task_model mappings)")
    assert not (tmp_path / "task").exists()
