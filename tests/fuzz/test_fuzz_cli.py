"""Fuzz-found bad files through the CLI, in process: exit 2, one `electrolite: error:` line, no traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from electrolite.cli import main

from .conftest import MAX_MESSAGE, VOCAB, alias_bomb, time_limit

# numpy's overflow and invalid-value warnings mean a reader let a value through that it should have refused.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

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
                           "line 2: not valid JSON (nested too deeply)"),
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
