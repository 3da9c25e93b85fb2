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

import gzip
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from electrolite.config import resolve_pretrain_config
from electrolite.configio import load_yaml
from electrolite.data.corpus import _ids_tokenizer
from electrolite.data.textfiles import read_sentence_blocks
from electrolite.data.tokenizer import _text_batches
from electrolite.errors import UserError
from electrolite.inference import read_inputs
from electrolite.interop.load import load_encoder

from .conftest import (
    AWKWARD_JSON,
    CALL_SECONDS,
    CELL_ODDS,
    JSON_SCALAR,
    JSON_VALUE,
    ODD_TEXT,
    TEXT,
    alias_bomb,
    check_message,
    fuzz,
    join_lines,
    mostly,
    mutate,
    reads_or_fails_cleanly,
    time_limit,
)

# numpy's overflow and invalid-value warnings mean a reader let a value through that it should have refused.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

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


