"""`evaluate`, `predict`, `detect` and `fill-mask` end to end on fine-tuned task dirs of the built-in tasks.

The task dirs are conftest.py's `builtin` fine-tunes (tiny ELECTRA on real slices of each task).
"""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from electrolite.data.tokenizer import load_tokenizer

from .conftest import cli, cli_ok, glue_dev, jsonl, out_rows, user_error

# --- evaluate and predict ----------------------------------------------------------------------


def test_evaluate_prints_and_writes_metrics(builtin, glue, tmp_path):
    src, _, _ = builtin("sst2")
    model = tmp_path / "sst2"
    shutil.copytree(src, model)
    res = json.loads((model / "eval_results.json").read_text())
    r = cli_ok("evaluate", "--model", model, "--data", glue / "SST-2")
    assert r.out.splitlines() == [f"sst2 dev: accuracy {res['main']:.4f}", f"wrote {model / 'evaluate.json'}"]
    written = json.loads((model / "evaluate.json").read_text())
    assert written["task"] == "sst2" and written["results"] == res["results"]
    assert written["data"] == {"dev": str(glue / "SST-2" / "dev.tsv")}
    # the GLUE root works as --data too, and a single file is read as the dev split
    cli_ok("evaluate", "--model", model, "--data", glue, "--out", tmp_path / "a.json")
    cli_ok("evaluate", "--model", model, "--data", glue / "SST-2" / "dev.tsv", "--out", tmp_path / "b.json")
    for name in ("a.json", "b.json"):
        assert json.loads((tmp_path / name).read_text())["results"] == res["results"]
    user_error(cli("evaluate", "--model", model, "--data", glue / "MRPC", "--task", "mrpc"),
               f"{model} was fine-tuned for sst2, not mrpc")


def test_predict_texts_file_stdin_and_output(builtin, glue, tmp_path, monkeypatch):
    model, _, _ = builtin("sst2")
    r = cli_ok("predict", "--model", model, "a charming and often affecting journey .", "dull , bleak and slow .")
    rows = out_rows(r)
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"label", "probabilities"} and list(row["probabilities"]) == ["0", "1"]
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)

    # a file of dev sentences gives what fine-tuning wrote for them
    gold = glue_dev(glue / "SST-2" / "dev.tsv", "label")[:30]
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(f[0] for _, _, f in gold[:15]) + "\n\n" + "\n".join(f[0] for _, _, f in gold[15:]),
                      encoding="utf-8")
    from_file = out_rows(cli_ok("predict", "--model", model, "--input", inputs))
    assert len(from_file) == 30  # the blank line is skipped
    dev_rows = jsonl(model / "predictions-dev.jsonl")[:30]
    for p, d in zip(from_file, dev_rows):
        assert p["label"] == d["label"]
        assert p["probabilities"][p["label"]] == pytest.approx(d["probability"], abs=1e-4)

    # --output writes the same lines to a file; stdin (no texts, or --input -) reads the same
    written = tmp_path / "out.jsonl"
    r = cli_ok("predict", "--model", model, "--input", inputs, "--output", written)
    assert r.out == "" and jsonl(written) == from_file
    for argv in ([], ["--input", "-"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(inputs.read_text(encoding="utf-8")))
        assert out_rows(cli_ok("predict", "--model", model, *argv)) == from_file


def test_predict_sentence_pairs_and_their_errors(builtin, glue, tmp_path):
    model, _, _ = builtin("mrpc")
    gold = glue_dev(glue / "MRPC" / "dev.tsv", "Quality")[:5]
    records = [{"sentence1": f[3], "sentence2": f[4]} for _, _, f in gold]
    inputs = tmp_path / "pairs.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    rows = out_rows(cli_ok("predict", "--model", model, "--input", inputs))
    dev_rows = jsonl(model / "predictions-dev.jsonl")[:5]
    assert [r["label"] for r in rows] == [d["label"] for d in dev_rows]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\nHe said the pie business does not fit.\n", encoding="utf-8")
    user_error(cli("predict", "--model", model, "--input", bad),
               f"{bad} line 2: this task needs JSON lines with the fields sentence1, sentence2")
    bad.write_text(json.dumps(records[0]) + "\n" + json.dumps({"sentence1": "x", "sentence2": 3}) + "\n")
    user_error(cli("predict", "--model", model, "--input", bad), f"{bad} line 2: missing text field(s) sentence2")
    bad.write_text('{"sentence1": "x", \n')
    assert user_error(cli("predict", "--model", model, "--input", bad)).startswith(f"{bad} line 1: not valid JSON")
    user_error(cli("predict", "--model", model, "--input", tmp_path / "nope.jsonl"),
               f"{tmp_path / 'nope.jsonl'}: cannot read (No such file or directory)")
    stsb, _, _ = builtin("stsb")
    rows = out_rows(cli_ok("predict", "--model", stsb, "--input", inputs))
    assert len(rows) == 5 and all(set(r) == {"score"} for r in rows)


def test_predict_qa_answers_are_context_substrings(builtin, squad_small, tmp_path):
    model, _, _ = builtin("squad1")
    held_out = squad_small[1]
    inputs = tmp_path / "qa.jsonl"
    inputs.write_text("".join(json.dumps({"question": q["question"], "context": q["context"]}) + "\n"
                              for q in held_out), encoding="utf-8")
    rows = out_rows(cli_ok("predict", "--model", model, "--input", inputs))
    assert len(rows) == len(held_out)
    dev_rows = jsonl(model / "predictions-dev.jsonl")
    for row, q, d in zip(rows, held_out, dev_rows):
        assert set(row) == {"answer", "start", "end", "score"}
        assert row["answer"] and row["answer"] == q["context"][row["start"]:row["end"]]
        assert row["answer"] == d["answer"]  # the same span fine-tuning's evaluation decoded
        assert 0 < row["end"] - row["start"] and len(row["answer"].split()) <= 30
    user_error(cli("predict", "--model", model, "Where is it?"),
               "argument line 1: this task needs JSON lines with the fields question, context")


def test_predict_entities_have_character_offsets(builtin, conll_small, tmp_path):
    model, _, _ = builtin("conll2003")
    texts = [" ".join(w for w, _ in s) for s in conll_small[1]["valid"][:40] if len(s) > 3]
    inputs = tmp_path / "ner.txt"
    inputs.write_text("\n".join(texts) + "\n", encoding="utf-8")
    rows = out_rows(cli_ok("predict", "--model", model, "--input", inputs))
    assert len(rows) == len(texts)
    found = 0
    for row, text in zip(rows, texts):
        for e in row["entities"]:
            assert set(e) == {"type", "start", "end", "text"} and e["type"] in {"PER", "ORG", "LOC", "MISC"}
            assert e["text"] == text[e["start"]:e["end"]] and e["text"].strip() == e["text"] != ""
            found += 1
    assert found > 0  # the offsets were actually checked
    raw = "Peter Blackburn (EU) visited Germany's capital, Berlin."
    for e in out_rows(cli_ok("predict", "--model", model, raw))[0]["entities"]:
        assert e["text"] == raw[e["start"]:e["end"]]


def test_detect_gives_a_probability_per_token(electra, mlm, builtin):
    text = "the old man walked slowly along the river to the village"
    r = cli_ok("detect", "--model", electra, "--json", text)
    result = json.loads(r.out)
    tok = load_tokenizer(str(electra / "tokenizer.json"))
    enc = tok.encode(text)
    assert result["text"] == text
    assert [t["token"] for t in result["tokens"]] == enc.tokens[1:-1]  # no [CLS] / [SEP]
    for t in result["tokens"]:
        assert 0.0 <= t["replaced_probability"] <= 1.0
        assert text[t["start"]:t["end"]] == t["token"].removeprefix("##")
    plain = cli_ok("detect", "--model", electra, *text.split()).out.splitlines()
    assert len(plain) == len(result["tokens"])
    for line, t in zip(plain, result["tokens"]):
        assert line.split()[:2] == [t["token"], f"{t['replaced_probability']:.3f}"]
    user_error(cli("detect", "--model", mlm, text), f"{mlm} was pre-trained with mlm; detect needs an ELECTRA run")
    task_dir, _, _ = builtin("sst2")
    user_error(cli("detect", "--model", task_dir, text),
               f"{task_dir} is a fine-tuned task dir; detect needs a pre-training run or a Hugging Face checkpoint")


@pytest.mark.parametrize("run", ["electra", "mlm"])
def test_fill_mask_top_k(run, request, builtin):
    model = request.getfixturevalue(run)
    r = cli_ok("fill-mask", "--model", model, "--json", "the old [MASK] walked along the [MASK] .")
    result = json.loads(r.out)
    assert result["mask_token"] == "[MASK]" and len(result["fills"]) == 2
    vocab = load_tokenizer(str(model / "tokenizer.json")).get_vocab()
    for fills in result["fills"]:
        assert len(fills) == 5
        probs = [f["probability"] for f in fills]
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-4
        assert all(f["token"] in vocab for f in fills) and len({f["token"] for f in fills}) == 5
    r = cli_ok("fill-mask", "--model", model, "--top-k", 3, "the [MASK] house")
    assert len(r.out.splitlines()) == 1 and r.out.startswith("[MASK] #1: ") and r.out.count("(") == 3
    user_error(cli("fill-mask", "--model", model, "the old house"), "the text has no [MASK] token to fill")
    task_dir, _, _ = builtin("sst2")
    user_error(cli("fill-mask", "--model", task_dir, "the [MASK] house"),
               f"{task_dir} is a fine-tuned task dir; fill-mask needs a pre-training run or a Hugging Face checkpoint")


def test_predict_needs_a_task_dir(electra):
    user_error(cli("predict", "--model", electra, "hello"),
               f"{electra} is a pre-training run; predict needs a fine-tuned task dir or a Hugging Face task checkpoint")
