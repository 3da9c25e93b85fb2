"""Sequence classification and regression: GLUE tsv readers, a generic CSV/TSV/JSONL reader, encoding.

GLUE files are read in their original layout (what GLUE's download script writes): a header
row naming the columns (CoLA has none), tab-separated fields, no quoting, UTF-8 with an optional
BOM (MRPC has one). Every row must have as many fields as the header. Columns are found by
their header names, so the extra columns of MNLI's dev files (label1..label5) do not matter.

What the three task families share (``Features``, ``read_text``) is in ``features.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from tokenizers import Tokenizer

from electrolite.data.textfiles import lone_surrogate
from electrolite.errors import UserError, parse_json, shown, shown_repr
from electrolite.tasks.family import Family, Raw, Run, record_defaults
from electrolite.tasks.features import Features, file_lines, prepared_tokenizer, read_text

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def discover_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels, sorted: numerically when all are numbers ("2" before "10"), else as text."""
    distinct = set(labels)

    def number(s: str) -> float | None:
        try:
            value = float(s)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    if distinct and all(number(s) is not None for s in distinct):
        return tuple(sorted(distinct, key=lambda s: (number(s), s)))
    return tuple(sorted(distinct))


# --------------------------------------------------------------------------------------------
# Examples and readers


@dataclass
class Example:
    """One sentence or sentence pair.

    Attributes:
        text_a: the first (or only) text.
        text_b: the second text of a pair, else None.
        label: the label name (classification), the target (regression), or None (unlabelled).
        line: the line (or record) of the file it came from, 1-based.
        source: the file it came from.
    """

    text_a: str
    text_b: str | None = None
    label: str | float | None = None
    line: int = 0
    source: str = ""

    @property
    def guid(self) -> str:
        return f"{os.path.basename(self.source)}:{self.line}"


def _parse_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{where}: label {shown_repr(value)} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{where}: label {shown_repr(value)} is not a number") from None
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:  # regression targets are float32
        raise UserError(f"{where}: label {shown_repr(value)} is not a finite number")
    return number


def check_labels(examples: Iterable[Example], labels: Sequence[str], seen_in: str = "") -> None:
    """Raises UserError at the first example whose label is not in ``labels``.

    Args:
        examples: labelled examples.
        labels: the allowed label names.
        seen_in: where the labels came from, for the message (e.g. "the training data").
    """
    allowed = set(labels)
    for ex in examples:
        if ex.label not in allowed:
            origin = f"does not occur in {seen_in}" if seen_in else "is not a label of this task"
            raise UserError(f"{ex.source} line {ex.line}: label {shown_repr(ex.label)} {origin} "
                            f"(labels: {', '.join(map(shown, labels))})")


def _tsv_rows(path: str, header: bool) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header fields or None, [(line number, fields)]); every row as wide as the first line."""
    lines = file_lines(path)
    if not lines or (header and len(lines) == 1):
        raise UserError(f"{path}: empty file (no examples)" if not lines else f"{path}: no examples after the header")
    names = lines[0].split("\t") if header else None
    width = len(names) if names else len(lines[0].split("\t"))
    rows = []
    for number, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        fields = line.split("\t")
        if len(fields) != width:
            raise UserError(f"{path} line {number}: expected {width} columns, got {len(fields)}")
        rows.append((number, fields))
    return names, rows


def _column(names: list[str], name: str, path: str) -> int:
    stripped = [n.strip() for n in names]
    if name not in stripped:
        raise UserError(f"{path}: no column {name!r} (columns: {', '.join(map(shown, stripped))})")
    return stripped.index(name)


@dataclass(frozen=True)
class GlueLayout:
    """Where a GLUE task's texts and label are in its tsv files."""

    folder: str
    """The task's folder in the GLUE download (``--data`` may name it or its parent)."""
    text: tuple[str, ...]
    """Header names of the text columns (CoLA: column indices, it has no header)."""
    label: str
    """Header name (or index) of the label column."""
    evals: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)
    """(split name, file name) of the evaluation files; the first selects the best checkpoint."""
    header: bool = True


def read_glue_tsv(path: str, layout: GlueLayout, labels: Sequence[str] | None) -> list[Example]:
    """Reads one GLUE train/dev tsv file.

    Args:
        path: the file.
        layout: where the columns are.
        labels: the task's label names, or None for regression (STS-B).

    Raises:
        UserError: a missing or empty file, ragged rows, a missing column, a label not of the task.
    """
    names, rows = _tsv_rows(path, layout.header)
    if names is None:
        text_idx = [int(c) for c in layout.text]
        label_idx = int(layout.label)
        width = len(rows[0][1])
        if max(text_idx + [label_idx]) >= width:
            raise UserError(f"{path} line 1: expected at least {max(text_idx + [label_idx]) + 1} columns, got {width}")
    else:
        text_idx = [_column(names, c, path) for c in layout.text]
        label_idx = _column(names, layout.label, path)
    examples = []
    for number, fields in rows:
        where = f"{path} line {number}"
        raw = fields[label_idx].strip()
        label = _parse_float(raw, where) if labels is None else raw
        texts = [fields[i] for i in text_idx]
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, number, path))
    if labels is not None:
        check_labels(examples, labels)
    return examples


def _table_records(path: str) -> tuple[list[str] | None, Sequence[tuple[int, list[str] | dict[str, Any]]]]:
    """(column names or None for JSONL, [(line, record)]) of a .csv, .tsv or .jsonl file.

    A record is the row's fields (CSV, TSV) or the line's JSON object (JSONL).
    """
    lower = path.lower()
    if lower.endswith(".tsv"):
        return _tsv_rows(path, header=True)
    if lower.endswith((".jsonl", ".json")):
        records = []
        for number, line in enumerate(file_lines(path), start=1):
            if not line.strip():
                raise UserError(f"{path} line {number}: blank line")
            record = parse_json(line, f"{path} line {number}")
            if not isinstance(record, dict):
                raise UserError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
        if not records:
            raise UserError(f"{path}: empty file (no examples)")
        return None, records
    if lower.endswith(".csv"):
        reader = csv.reader(io.StringIO(read_text(path).rstrip("\n")))
        rows, names, start = [], None, 1
        try:
            for fields in reader:
                if not fields:
                    raise UserError(f"{path} line {start}: blank line")
                if names is None:
                    names = fields
                elif len(fields) != len(names):
                    raise UserError(f"{path} line {start}: expected {len(names)} columns, got {len(fields)}")
                else:
                    rows.append((start, fields))
                start = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path} line {reader.line_num}: {e}") from None
        if names is None:
            raise UserError(f"{path}: empty file (no examples)")
        if not rows:
            raise UserError(f"{path}: no examples after the header")
        return names, rows
    raise UserError(f"{path}: unknown file type (expected .csv, .tsv or .jsonl)")


def _brief_json(value: object) -> str:
    """A JSON value as the file wrote it, cut to 80 characters for a one-line message."""
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-17:]}"


def read_table(path: str, text_columns: Sequence[str], label_column: str | None,
               regression: bool = False) -> list[Example]:
    """Reads a CSV (with header), TSV (with header, no quoting) or JSONL file of examples.

    Args:
        path: the file; its type is taken from its extension.
        text_columns: one or two column (JSONL: field) names holding the texts.
        label_column: the label's column, or None for unlabelled input.
        regression: the label is a number (else it is kept as a string, JSONL numbers included).

    Raises:
        UserError: a missing or empty file, a missing column, ragged rows, a non-text field,
            a non-numeric label for regression; naming the file and line.
    """
    if not 1 <= len(text_columns) <= 2:
        raise UserError(f"text columns: expected one or two names, got {len(text_columns)}")
    names, records = _table_records(path)
    wanted = [*text_columns, *([label_column] if label_column else [])]
    if names is not None:
        idx = {name: _column(names, name, path) for name in wanted}
    examples = []
    for number, record in records:
        where = f"{path} line {number}"
        if names is None:
            for name in wanted:
                if name not in record:
                    raise UserError(f"{where}: no field {name!r}")
            obj = cast("dict[str, Any]", record)  # JSONL: _table_records checked it is an object
            values = {name: obj[name] for name in wanted}
        else:
            row = cast("list[str]", record)  # CSV, TSV: the row's fields
            values = {name: row[idx[name]] for name in wanted}
        texts = []
        for name in text_columns:
            if not isinstance(values[name], str):
                raise UserError(f"{where}: field {name!r} is not a string ({_brief_json(values[name])})")
            if lone_surrogate(values[name]):  # only JSON escapes make one
                raise UserError(f"{where}: field {name!r} holds a lone surrogate escape (not Unicode text)")
            texts.append(values[name])
        label: str | float | None = None
        if label_column:
            raw = values[label_column]
            if regression:
                label = _parse_float(raw, where)
            elif raw is None or isinstance(raw, (dict, list)):
                raise UserError(f"{where}: label {_brief_json(raw)} is not a string or number")
            else:
                label = (str(raw).lower() if isinstance(raw, bool) else str(raw)).strip()
                if not label:
                    raise UserError(f"{where}: empty label")
                if lone_surrogate(label):
                    raise UserError(f"{where}: label holds a lone surrogate escape (not Unicode text)")
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, number, path))
    return examples


# --------------------------------------------------------------------------------------------
# Encoding


def encode_classification(examples: Sequence[Example], tokenizer: Tokenizer, max_length: int = 128,
                          label_map: Mapping[str, int] | None = None) -> Features:
    """Tokenizes single sentences or pairs, ``[CLS] A [SEP] (B [SEP])``, pairs truncated longest-first.

    Args:
        examples: the examples (all with labels, or none).
        tokenizer: the model's tokenizer (not modified).
        max_length: the longest sequence, specials included.
        label_map: label name → class id; None for regression (float labels).

    Returns:
        ``Features`` with (N,) int64 ``labels`` (float32 for regression), or None when unlabelled.

    Raises:
        UserError: a label missing from ``label_map``, naming its file and line.
    """
    tok = prepared_tokenizer(tokenizer, max_length)
    singles = [i for i, ex in enumerate(examples) if ex.text_b is None]
    pairs = [i for i, ex in enumerate(examples) if ex.text_b is not None]
    encodings: list = [None] * len(examples)
    for i, enc in zip(singles, tok.encode_batch([examples[i].text_a for i in singles])):
        encodings[i] = enc
    for i, enc in zip(pairs, tok.encode_batch([(examples[i].text_a, examples[i].text_b) for i in pairs])):
        encodings[i] = enc
    input_ids = [np.array(e.ids, dtype=np.int64) for e in encodings]
    type_ids = [np.array(e.type_ids, dtype=np.int64) for e in encodings]
    labels: np.ndarray | None = None
    if examples and all(ex.label is not None for ex in examples):
        if label_map is None:
            labels = np.array([float(cast("str | float", ex.label)) for ex in examples], dtype=np.float32)
        else:
            for ex in examples:
                if ex.label not in label_map:
                    raise UserError(f"{ex.source} line {ex.line}: label {shown_repr(ex.label)} is not one of the "
                                    f"model's labels ({', '.join(map(shown, label_map))})")
            labels = np.array([label_map[cast(str, ex.label)] for ex in examples], dtype=np.int64)  # all checked above
    return Features(input_ids, type_ids, labels)


# --- the families ---------------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(np.asarray(logits)), -1).numpy()


def _input_examples(task, records: list[dict[str, str]], labels: Sequence[str]) -> list[Example]:
    fields = task.text_fields
    return [Example(r[fields[0]], r[fields[1]] if len(fields) > 1 else None, labels[0] if labels else 0.0, i, "input")
            for i, r in enumerate(records)]


class Classification(Family):
    """One label per text or text pair: the [CLS] position's logits, one per label."""

    name = "classification"

    def score(self, task, raw: Raw, examples: list, features, labels: Sequence[str]):
        logits = np.stack(raw["logits"])
        gold = np.array([labels.index(str(ex.label)) for ex in examples])
        pred = logits.argmax(-1)
        probs = _softmax(logits)
        rows = [{"line": ex.line, "label": labels[p], "probability": round(float(pr[p]), 4)}
                for ex, p, pr in zip(examples, pred, probs)]
        return task.metrics(gold, pred), rows

    def predict(self, task, records, tokenizer, labels, run: Run):
        raw = run(task.encode(_input_examples(task, records, labels), tokenizer, labels or None))
        for logits in raw["logits"]:
            probs = _softmax(logits)
            best = int(probs.argmax())
            yield {"label": labels[best], "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, probs)}}

    def hf_fields(self, labels):
        return {"id2label": {i: str(lab) for i, lab in enumerate(labels)},
                "label2id": {str(lab): i for i, lab in enumerate(labels)},
                "problem_type": "single_label_classification"}

    def hf_regression(self, config, num_labels):
        return config.get("problem_type") == "regression" or num_labels == 1

    def hf_record(self, labels, max_positions):
        return record_defaults(self, "text-classification", ["text"], labels, min(512, max_positions))


class Regression(Family):
    """One number per text or text pair (STS-B): the [CLS] position's single output."""

    name = "regression"
    hf_labelled = False

    def score(self, task, raw: Raw, examples: list, features, labels: Sequence[str]):
        logits = np.stack(raw["logits"])
        gold = np.array([float(ex.label) for ex in examples])
        rows = [{"line": ex.line, "score": round(float(v), 4)} for ex, v in zip(examples, logits)]
        return task.metrics(gold, logits), rows

    def predict(self, task, records, tokenizer, labels, run: Run):
        raw = run(task.encode(_input_examples(task, records, labels), tokenizer, labels or None))
        for logits in raw["logits"]:
            yield {"score": round(float(logits), 6)}

    def hf_fields(self, labels):
        return {"num_labels": 1, "problem_type": "regression"}

    def hf_record(self, labels, max_positions):
        return record_defaults(self, "text-classification", ["text"], [], min(512, max_positions))


CLASSIFICATION = Classification()
REGRESSION = Regression()
