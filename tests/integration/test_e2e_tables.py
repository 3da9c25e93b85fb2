"""Fine-tuning on the user's own files end to end: CSV/JSON-lines tables, sentence pairs, tab-separated
token columns, labels the training data never saw, and bad input (one line, nothing overwritten).

Models and data come from conftest.py: the tiny pre-trained ELECTRA, tables built from book text.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from .conftest import QUICK, assert_no_task_dir, cli, cli_ok, jsonl, out_rows, snapshot, user_error, write_csv

# --- generic tasks: tables and column files ----------------------------------------------------


def test_text_classification_jsonl_and_sentence_pairs(electra, keyword, tmp_path):
    # JSONL with integer labels, which become the label names "0" and "1"
    for name, part in (("train", keyword["train_rows"][:100]), ("dev", keyword["dev_rows"][:50])):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"body": t, "y": int(y == "yes")}) + "\n" for t, y in part), encoding="utf-8")
    out = tmp_path / "jsonl"
    cli_ok("finetune", "--model", electra, "--task", "text-classification", "--train", tmp_path / "train.jsonl",
           "--dev", tmp_path / "dev.jsonl", "--text-columns", "body", "--label-column", "y", "--out", out,
           "--epochs", 1, "--max-length", 64, "--precision", "fp32", "--no-progress")
    record = yaml.safe_load((out / "config.yaml").read_text())["task_model"]
    assert record["labels"] == ["0", "1"] and record["text_fields"] == ["body"]
    assert [row["line"] for row in jsonl(out / "predictions-dev.jsonl")] == list(range(1, 51))
    row = out_rows(cli_ok("predict", "--model", out, json.dumps({"body": "Tea and cake."})))[0]
    assert set(row["probabilities"]) == {"0", "1"}

    # A pair: two text columns, the label column named as the user likes
    def pairs(rows):  # consecutive sentences; the label is the second one's
        return [(a, b, label) for (a, _), (b, label) in zip(rows[:-1], rows[1:])]
    write_csv(tmp_path / "pairs-train.csv", ["first", "second", "has_and"], pairs(keyword["train_rows"][:301]))
    dev = write_csv(tmp_path / "pairs-dev.csv", ["first", "second", "has_and"], pairs(keyword["dev_rows"][:41]))
    out = tmp_path / "pairs"
    cli_ok("finetune", "--model", electra, "--task", "text-classification", "--train", tmp_path / "pairs-train.csv",
           "--dev", dev, "--text-columns", "first,second", "--label-column", "has_and", "--out", out,
           "--epochs", 1, "--max-length", 64, "--precision", "fp32", "--no-progress")
    record = yaml.safe_load((out / "config.yaml").read_text())["task_model"]
    assert record["text_fields"] == ["first", "second"] and record["labels"] == ["no", "yes"]
    res = json.loads((out / "eval_results.json").read_text())
    assert len(jsonl(out / "predictions-dev.jsonl")) == 40
    ev = cli_ok("evaluate", "--model", out, "--data", dev, "--out", tmp_path / "ev.json")
    assert json.loads((tmp_path / "ev.json").read_text())["results"] == res["results"], ev.out
    rows = out_rows(cli_ok("predict", "--model", out, json.dumps({"first": "It rained.", "second": "Bread and tea."}),
                           json.dumps({"second": "No.", "first": "Yes.", "extra": 1})))
    assert len(rows) == 2 and all(row["label"] in ("no", "yes") for row in rows)
    assert all(sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5) for row in rows)
    user_error(cli("predict", "--model", out, "Just one text."),
               "argument line 1: this task needs JSON lines with the fields first, second")
    user_error(cli("predict", "--model", out, json.dumps({"first": "a"})),
               "argument line 1: missing text field(s) second")


def test_token_classification_from_tab_separated_columns(electra, conll_small, tmp_path):
    files = {}
    for name in ("train", "valid"):
        sentences = conll_small[1][name][:200]
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n",
                               encoding="utf-8")
    out = tmp_path / "tagger"
    cli_ok("finetune", "--model", electra, "--task", "token-classification", "--train", files["train"],
           "--dev", files["valid"], "--out", out, *QUICK)
    used = {t for s in conll_small[1]["train"][:200] for _, t in s}
    types = sorted({t[2:] for t in used if t != "O"})
    expected = ["O", *[f"{p}-{t}" for t in types for p in "BI" if f"{p}-{t}" in used]]
    record = yaml.safe_load((out / "config.yaml").read_text())["task_model"]
    assert record["family"] == "tagging" and record["labels"] == expected
    rows = jsonl(out / "predictions-dev.jsonl")
    assert [row["words"] for row in rows] == [[w for w, _ in s] for s in conll_small[1]["valid"]]
    res = json.loads((out / "eval_results.json").read_text())
    assert set(res["results"]["dev"]) == {"precision", "recall", "f1"}
    cli_ok("evaluate", "--model", out, "--data", files["valid"], "--out", tmp_path / "ev.json")
    assert json.loads((tmp_path / "ev.json").read_text())["results"] == res["results"]


def test_a_dev_label_training_never_saw(electra, keyword, tmp_path):
    dev_rows = [list(r) for r in keyword["dev_rows"][:20]]
    dev_rows[3][1] = "maybe"  # the 4th row: line 5 (the header is line 1)
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], dev_rows)
    out = tmp_path / "never"
    user_error(cli("finetune", "--model", electra, "--task", "text-classification", "--train", keyword["train"],
                   "--dev", dev, "--text-columns", "text", "--label-column", "label", "--out", out, "--no-progress"),
               f"{dev} line 5: label 'maybe' does not occur in the training data (labels: no, yes)")
    assert_no_task_dir(out)


def test_a_dev_tag_training_never_saw(electra, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("Peter\tB-PER\nlives\tO\nhere\tO\n\nParis\tB-LOC\nis\tO\nbig\tO\n", encoding="utf-8")
    dev = tmp_path / "dev.txt"
    dev.write_text("-DOCSTART-\tO\n\nPeter\tB-PER\nwent\tO\n\nto\tO\nAcme\tB-ORG\nCorp\tI-ORG\n", encoding="utf-8")
    out = tmp_path / "never"
    user_error(cli("finetune", "--model", electra, "--task", "token-classification", "--train", train, "--dev", dev,
                   "--out", out, "--no-progress"),
               f"{dev} line 7: tag 'B-ORG' does not occur in the training data (tags: O, B-LOC, B-PER)")
    assert_no_task_dir(out)


# --- bad input ---------------------------------------------------------------------------------


def test_out_that_exists_is_not_overwritten(builtin, electra, glue, tmp_path):
    task_dir, _, _ = builtin("sst2")
    before = snapshot(task_dir)
    user_error(cli("finetune", "--model", electra, "--task", "sst2", "--data", glue / "SST-2", "--out", task_dir,
                   *QUICK),
               f"{task_dir} exists and is not empty; choose a new --out (nothing was overwritten)")
    assert snapshot(task_dir) == before
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    user_error(cli("finetune", "--model", electra, "--task", "sst2", "--data", glue / "SST-2", "--out", a_file, *QUICK),
               f"{a_file} exists and is not a directory; choose a new --out (nothing was overwritten)")
    assert a_file.read_text() == "keep me"


def test_ragged_tsv_rows_are_named(electra, glue, regression, tmp_path):
    lines = regression["train"].read_text(encoding="utf-8").splitlines()[:40]
    lines[6] += "\textra"  # line 7
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "ragged"
    user_error(cli("finetune", "--model", electra, "--task", "text-classification", "--train", train,
                   "--dev", regression["dev"], "--text-columns", "text", "--label-column", "score", "--regression",
                   "--out", out, "--no-progress"),
               f"{train} line 7: expected 2 columns, got 3")
    assert_no_task_dir(out)
    # a GLUE folder whose dev.tsv has a row with a missing field
    folder = tmp_path / "SST-2"
    folder.mkdir()
    shutil.copy(glue / "SST-2" / "train.tsv", folder / "train.tsv")
    dev = (glue / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[:30]
    dev[20] = dev[20].split("\t")[0]  # line 21
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n", encoding="utf-8")
    user_error(cli("finetune", "--model", electra, "--task", "sst2", "--data", folder, "--out", out, *QUICK),
               f"{folder / 'dev.tsv'} line 21: expected 2 columns, got 1")
    assert_no_task_dir(out)


def test_squad_needs_more_than_ten_articles(electra, shared_data, tmp_path):
    data = json.loads((shared_data / "squad-v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    folder = tmp_path / "squad10"
    folder.mkdir()
    path = folder / "dev-v1.1.json"
    path.write_text(json.dumps({"version": "1.1", "data": data["data"][:10]}), encoding="utf-8")
    out = tmp_path / "qa"
    user_error(cli("finetune", "--model", electra, "--task", "squad1", "--data", folder, "--out", out, "--no-progress"),
               f"{path}: 10 articles, too few to hold out the last 10 for evaluation (give a training file too)")
    assert_no_task_dir(out)


def test_options_of_another_task(electra, glue, tmp_path):
    out = tmp_path / "x"
    user_error(cli("finetune", "--model", electra, "--task", "sst2", "--data", glue / "SST-2", "--out", out,
                   "--text-columns", "sentence", "--no-progress"),
               "text columns, label column and regression are options of text-classification, not sst2")
    dev = glue / "SST-2" / "dev.tsv"
    user_error(cli("finetune", "--model", electra, "--task", "text-classification", "--train", dev, "--dev", dev,
                   "--out", out, "--no-progress"),
               "text-classification needs the text column(s) and the label column "
               "(--text-columns A[,B] --label-column C)")
    assert_no_task_dir(out)
