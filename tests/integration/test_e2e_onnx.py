"""ONNX export and the onnxruntime predict path end to end through the CLI.

The tiny ELECTRA of test_e2e_finetune.py (its fixtures are reused) is fine-tuned on real slices of
SST-2 (single sentences), STS-B (sentence pairs, regression) and CoNLL-2003 (tagging), long enough
that its outputs depend on the input (shorter runs give nearly the same logits for every input,
which would make the comparisons vacuous), and exported with ``export --format onnx``.
onnxruntime's logits equal the TaskModel's on real dev inputs in batches of other sizes and
lengths than the traced one (the axes really are dynamic), and ``predict --runtime onnx`` prints
what ``predict`` prints. QA models and pre-training runs are refused in one line, and an existing
OUT is never touched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from electrolite.data.tokenizer import load_tokenizer, special_tokens
from electrolite.interop.load import load_task_model
from electrolite.interop.onnx import OnnxTaskModel

from .conftest import cli, cli_ok, glue_dev, out_rows, snapshot, user_error

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ONNX_FILES = {"model.onnx", "config.yaml", "tokenizer.json"}
# (batch size, first input) of the batches the logits are compared on; inputs sorted longest first,
# so the lengths differ as well (none is the traced (2, 8)).
BATCHES = [(1, 0), (3, 1), (16, 20), (5, 60), (40, 100), (1, 199)]


# task → (data, --max-train-examples, --epochs, --lr, --max-length)
FINETUNE = {"sst2": ("SST-2", 3000, 3, 2e-3, 64), "stsb": ("STS-B", 2000, 3, 2e-3, 64),
            "conll2003": ("conll", 1000, 3, 5e-3, 64), "squad1": ("squad", 32, 1, 2e-3, 128)}


@pytest.fixture(scope="module")
def finetuned(electra, glue, conll_small, squad_small, tmp_path_factory):
    """finetune NAME → its task dir, once per name (observed: SST-2 dev accuracy 0.70)."""
    root = tmp_path_factory.mktemp("onnx-tasks")
    cache = {}

    def get(name: str) -> Path:
        if name not in cache:
            data, n, epochs, lr, length = FINETUNE[name]
            data = {"conll": conll_small[0], "squad": squad_small[0]}.get(data, glue / data)
            cli_ok("finetune", "--model", electra, "--task", name, "--data", data, "--out", root / name,
                   "--max-train-examples", n, "--epochs", epochs, "--lr", lr, "--max-length", length,
                   "--precision", "fp32", "--no-progress")
            cache[name] = root / name
        return cache[name]

    return get


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory):
    """export --format onnx of finetuned(NAME) → (task dir, ONNX dir), once per name."""
    root = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            task_dir, out = finetuned(name), root / name
            r = cli_ok("export", task_dir, out, "--format", "onnx")
            family = {"sst2": "classification", "stsb": "regression", "conll2003": "tagging"}[name]
            assert r.out == f"wrote {out / 'model.onnx'} ({family}, {name}, opset 18)\n"
            cache[name] = task_dir, out
        return cache[name]

    return get


@pytest.fixture(scope="module")
def inputs(glue, conll_small) -> dict[str, list[dict[str, str]]]:
    """200 real dev inputs per task, in predict's record form."""
    sst2 = [{"sentence": f[0]} for _, _, f in glue_dev(glue / "SST-2" / "dev.tsv", "label")[:200]]
    stsb = [{"sentence1": f[7], "sentence2": f[8]} for _, _, f in glue_dev(glue / "STS-B" / "dev.tsv", "score")[:200]]
    conll = [{"text": " ".join(w for w, _ in s)} for s in conll_small[1]["valid"][:200]]
    return {"sst2": sst2, "stsb": stsb, "conll2003": conll}


def padded(tok, records: list[dict[str, str]], pad: int, max_length: int = 64) -> dict[str, np.ndarray]:
    """Encoded records padded to the longest: input_ids, attention_mask, token_type_ids (B, T) int64."""
    encs = [tok.encode(*r.values()) for r in records]
    width = min(max_length, max(len(e.ids) for e in encs))
    out = {k: np.zeros((len(encs), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["input_ids"][:] = pad
    for row, e in enumerate(encs):
        n = min(width, len(e.ids))
        out["input_ids"][row, :n] = e.ids[:n]
        out["token_type_ids"][row, :n] = e.type_ids[:n]
        out["attention_mask"][row, :n] = 1
    return out


@pytest.mark.parametrize("name", ["sst2", "stsb", "conll2003"])
def test_onnxruntime_logits_equal_the_task_model_at_any_batch_size_and_length(name, exported, inputs):
    task_dir, out = exported(name)
    assert {p.name for p in out.iterdir()} == ONNX_FILES  # nothing else, no temporary dir left
    for f in ONNX_FILES - {"model.onnx"}:
        assert (out / f).read_bytes() == (task_dir / f).read_bytes()
    model, record = load_task_model(task_dir)
    onnx = OnnxTaskModel(out / "model.onnx", record["family"])
    tok = load_tokenizer(str(out / "tokenizer.json"))
    pad = special_tokens(tok).pad_token_id
    records = sorted(inputs[name], key=lambda r: -len(tok.encode(*r.values()).ids))
    shapes = set()
    for size, first in BATCHES:
        batch = padded(tok, records[first:first + size], pad)
        with torch.no_grad():
            want = model({k: torch.from_numpy(v) for k, v in batch.items()})["logits"].numpy()
        got = onnx(batch)["logits"]
        shapes.add(got.shape)
        assert got.shape == want.shape == {"sst2": (size, 2), "stsb": (size,),
                                           "conll2003": (size, batch["input_ids"].shape[1], 9)}[name]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        if size > 1:  # real, input-dependent numbers: the rows differ
            assert np.ptp(want, axis=0).max() > 1e-3
    assert len({s[0] for s in shapes}) == 5
    if name == "conll2003":
        assert len({s[1] for s in shapes}) >= 5  # sequence lengths too


@pytest.mark.parametrize("name", ["sst2", "stsb", "conll2003"])
def test_predict_runtime_onnx_prints_what_predict_prints(name, exported, inputs, tmp_path):
    task_dir, out = exported(name)
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in inputs[name]), encoding="utf-8")
    ours = out_rows(cli_ok("predict", "--model", task_dir, "--input", path))
    theirs = out_rows(cli_ok("predict", "--model", out, "--runtime", "onnx", "--input", path))
    assert len(ours) == len(theirs) == 200
    if name == "sst2":
        assert [r["label"] for r in theirs] == [r["label"] for r in ours]
        assert len({r["label"] for r in ours}) == 2  # both labels occur: the comparison is not vacuous
        for o, t in zip(ours, theirs):
            assert list(t["probabilities"]) == list(o["probabilities"]) == ["0", "1"]
            assert list(t["probabilities"].values()) == pytest.approx(list(o["probabilities"].values()), abs=1e-4)
    elif name == "stsb":
        scores = [r["score"] for r in ours]
        assert [r["score"] for r in theirs] == pytest.approx(scores, abs=1e-4)
        assert max(scores) - min(scores) > 1e-2
    else:
        assert theirs == ours
        texts = [r["text"] for r in inputs[name]]
        entities = [(e, text) for row, text in zip(ours, texts) for e in row["entities"]]
        assert len(entities) > 20 and all(e["text"] == text[e["start"]:e["end"]] for e, text in entities)


def test_export_refuses_qa_pretraining_runs_and_existing_out_and_writes_nothing(finetuned, electra, exported,
                                                                                tmp_path):
    squad = finetuned("squad1")
    out = tmp_path / "out"
    assert user_error(cli("export", squad, out, "--format", "onnx")) == (
        f"{squad} is a qa model (squad1); only classification and tagging models export to ONNX")
    assert user_error(cli("export", electra, out, "--format", "onnx")) == (
        f"{electra} is a pre-training run; export --format onnx needs a fine-tuned classification or tagging task dir")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    task_dir, onnx_dir = exported("sst2")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for existing in (taken, onnx_dir):
        before = snapshot(existing)
        assert user_error(cli("export", task_dir, existing, "--format", "onnx")) == (
            f"{existing} exists and is not empty; choose a new OUT (nothing was overwritten)")
        assert snapshot(existing) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    # each runtime names the directory the other one needs
    assert user_error(cli("predict", "--model", onnx_dir, "a fine film")) == (
        f"{onnx_dir} is an ONNX export (model.onnx); predict needs a fine-tuned task dir or a Hugging Face task "
        "checkpoint; only `predict --runtime onnx` runs it")
    assert user_error(cli("predict", "--model", task_dir, "--runtime", "onnx", "a fine film")) == (
        f"{task_dir} is a fine-tuned task dir; --runtime onnx needs an ONNX export (`electrolite export TASK_DIR OUT "
        "--format onnx`); without --runtime onnx a task dir runs in torch")


def test_without_onnxruntime_both_commands_say_what_to_install(exported, monkeypatch, tmp_path):
    task_dir, onnx_dir = exported("sst2")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, find_spec gives None
    assert user_error(cli("predict", "--model", onnx_dir, "--runtime", "onnx", "a fine film")) == (
        "--runtime onnx needs onnxruntime: pip install 'electrolite[onnx]'")
    assert user_error(cli("export", task_dir, tmp_path / "x", "--format", "onnx")) == (
        "export --format onnx needs onnxruntime: pip install 'electrolite[onnx]'")
    assert list(tmp_path.iterdir()) == []
