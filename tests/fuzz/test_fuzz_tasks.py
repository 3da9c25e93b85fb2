"""Fuzzing the task readers: GLUE and text-classification tables, CoNLL and tagging JSON lines, SQuAD.

The property and the strategies are in conftest.py (see test_fuzz_files.py).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from electrolite.errors import UserError
from electrolite.tasks import CONLL2003_TAGS, get_task

from .conftest import (
    AWKWARD_JSON,
    CELL_ODDS,
    JSON_SCALAR,
    JSON_VALUE,
    ODD_TEXT,
    TEXT,
    WORD,
    check_message,
    damage,
    fuzz,
    join_lines,
    mostly,
    mutate,
    reads_or_fails_cleanly,
)

# numpy's overflow and invalid-value warnings mean a reader let a value through that it should have refused.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

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


