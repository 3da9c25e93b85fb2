"""The `electrolite` command end to end on real text: tokenizer → prepare → pretrain, and flops."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file

from electrolite.config import PretrainConfig, iter_fields
from electrolite.data.tokenizer import load_tokenizer, tokenizer_fingerprint

from .conftest import TINY, cli, cli_ok, read_metrics

# --- tokenizer train ---------------------------------------------------------------------------


def test_tokenizer_train_wordpiece(tokenizer_dir: Path):
    tok = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    assert tok.get_vocab_size() == 2000
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    enc = tok.encode("It will surprise you.", "And amuse you.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert "surprise" in tok.decode(enc.ids)  # lowercased, round-trips common words
    assert {"tokenizer_config.json", "special_tokens_map.json"} <= {p.name for p in tokenizer_dir.iterdir()}


def test_tokenizer_train_unigram(books: Path, tmp_path: Path):
    out = tmp_path / "unigram"
    r = cli_ok("tokenizer", "train", books, "--vocab-size", 2000, "--kind", "unigram", "--out", out)
    assert r.out.strip() == f"wrote {out}/tokenizer.json (unigram, 2,000 tokens)"
    tok = load_tokenizer(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == 2000
    assert [tok.id_to_token(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    assert tok.encode("the garden").tokens[1].startswith("▁")


# --- prepare -----------------------------------------------------------------------------------


def test_prepare_meta_matches_shards(corpus_dir: Path, tokenizer_dir: Path):
    meta = json.loads((corpus_dir / "meta.json").read_text())
    assert meta["seq_len"] == 64 and meta["vocab_size"] == 2000 and meta["dtype"] == "uint16"
    tok = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(load_tokenizer(str(corpus_dir / "tokenizer.json"))) == tokenizer_fingerprint(tok)
    special = meta["special_tokens"]
    files = {p.name for p in corpus_dir.iterdir()}
    listed = set()
    for split, num in (("train", meta["num_train"]), ("valid", meta["num_valid"])):
        info = meta["splits"][split]
        assert info["examples"] == num > 0
        assert sum(s["examples"] for s in info["shards"]) == num
        rows, real = 0, 0
        for shard in info["shards"]:
            listed.add(shard["file"])
            tensors = load_numpy(str(corpus_dir / shard["file"]))
            ids, segs = tensors["input_ids"], tensors["segment_lengths"]
            assert ids.shape == (shard["examples"], 64) and ids.dtype == np.uint16
            assert segs.shape == (shard["examples"], 2)
            rows += len(ids)
            real += int((ids != special["pad_token_id"]).sum())
            # [CLS] A [SEP] (B [SEP]) then padding, exactly as segment_lengths say
            assert (ids[:, 0] == special["cls_token_id"]).all()
            la, lb = segs[:, 0], segs[:, 1]
            assert (ids[np.arange(len(ids)), la + 1] == special["sep_token_id"]).all()
            two = lb > 0
            assert (ids[np.arange(len(ids))[two], (la + lb + 2)[two]] == special["sep_token_id"]).all()
            lengths = la + 2 + np.where(two, lb + 1, 0)
            assert ((ids != special["pad_token_id"]).sum(1) == lengths).all()
        assert rows == num
        assert real == info["tokens"]
        assert info["padding_fraction"] == pytest.approx(1 - real / (num * 64), abs=1e-6)
    assert files == {"meta.json", "tokenizer.json"} | listed


# --- pretrain ----------------------------------------------------------------------------------

# The paper's recipe: one objective for all 20 steps, so every step costs the FLOPs `electrolite flops` reports (the
# small-budget recipe's two stages are counted in test_e2e_golden.py)
ELECTRA_ARGS = ["--objective", "electra", "--objective.recipe", "paper", "--steps", 20, "--batch-size", 8, "--seed", 0,
                "--save-every", 10]


@pytest.fixture(scope="module")
def electra_run(corpus_dir: Path, tmp_path_factory) -> tuple[Path, list]:
    run = tmp_path_factory.mktemp("runs") / "electra"
    argv = ["pretrain", "--corpus", corpus_dir, "--out", run, *TINY, *ELECTRA_ARGS]
    r = cli_ok(*argv)
    assert re.fullmatch(rf"completed at step 20/20 in {re.escape(str(run))}: valid_loss \d+\.\d{{4}}, "
                        r"valid_mlm_accuracy \d\.\d{4}, valid_rtd_accuracy \d\.\d{4}", r.out.strip()), r.out
    return run, argv


def test_pretrain_writes_a_self_describing_run(electra_run, corpus_dir: Path):
    run, _ = electra_run
    assert {"config.yaml", "tokenizer.json", "model.safetensors", "metrics.jsonl", "summary.json",
            "checkpoints"} <= {p.name for p in run.iterdir()}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["size"] == "tiny" and cfg["objective"]["name"] == "electra"
    assert cfg["train"]["steps"] == 20 and cfg["train"]["batch_size"] == 8 and cfg["train"]["save_every"] == 10
    assert cfg["model"]["vocab_size"] == 2000 and cfg["model"]["hidden_size"] == 64
    assert (run / "tokenizer.json").read_bytes() == (corpus_dir / "tokenizer.json").read_bytes()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 20 and summary["stop_reason"] == "completed"
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "20"
    weights = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("generator.") for k in weights) and any(k.startswith("discriminator.") for k in weights)
    assert weights["discriminator.embeddings.word_embeddings.weight"].shape == (2000, 64)
    final = load_file(str(run / "checkpoints" / "step-00000020" / "model.safetensors"))
    for k, v in weights.items():
        assert torch.equal(v, final[k]), k


def test_pretrain_metrics_lines(electra_run):
    run, _ = electra_run
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = lines[0]
    assert first["step"] == 0 and "valid_loss" in first and first["paper_flops"] == 0
    train, valid = read_metrics(run)
    assert [m["step"] for m in train] == [10, 20]
    assert [m["step"] for m in valid] == [0, 20]
    per_step_paper = train[0]["paper_flops"] / 10
    per_step_model = train[0]["model_flops"] / 10
    assert per_step_paper > per_step_model > 0  # the paper counts embedding lookups as one-hot products
    for prev, m in zip(train, train[1:]):
        assert m["paper_flops"] > prev["paper_flops"] and m["model_flops"] > prev["model_flops"]
    for m in train:
        assert m["paper_flops"] == pytest.approx(per_step_paper * m["step"], rel=1e-12)
        assert m["model_flops"] == pytest.approx(per_step_model * m["step"], rel=1e-12)
        for key in ("loss", "mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction",
                    "grad_norm", "lr", "tokens_per_second"):
            assert key in m, key
        assert "sop_accuracy" not in m
        assert m["skipped_steps"] == 0
    # ELECTRA's objective: loss = gen + 50 × disc
    assert train[-1]["loss"] == pytest.approx(train[-1]["mlm_loss"] + 50 * train[-1]["rtd_loss"], abs=1e-4)
    # The FLOPs per step are the ones `electrolite flops` reports for the same run
    r = cli_ok("flops", "--size", "tiny", "--objective", "electra", "--steps", 20, "--batch-size", 8,
               "--seq-len", 64, "--vocab-size", 2000, "--recipe", "paper", "--json")  # the run's recipe
    report = json.loads(r.out)
    assert report["paper_flops"] == pytest.approx(train[-1]["paper_flops"], rel=1e-9)
    assert report["model_flops"] == pytest.approx(train[-1]["model_flops"], rel=1e-9)


def test_pretrain_checkpoints(electra_run):
    run, _ = electra_run
    ck = run / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step-00000020"
    kept = sorted(p.name for p in ck.iterdir() if p.is_dir())
    assert kept == ["step-00000010", "step-00000020"]
    assert len(kept) <= yaml.safe_load((run / "config.yaml").read_text())["train"]["keep_last"]
    state = json.loads((ck / "step-00000020" / "state.json").read_text())
    assert state["step"] == 20 and set(state["checksums"]) == {"model.safetensors", "optimizer.safetensors",
                                                               "rng.safetensors"}


def test_rerun_of_a_finished_run_is_a_noop(electra_run):
    run, argv = electra_run
    train_before, valid_before = read_metrics(run)
    weights_before = (run / "model.safetensors").read_bytes()
    r = cli_ok(*argv)
    assert r.out.startswith(f"completed at step 20/20 in {run}")
    train_after, valid_after = read_metrics(run)
    assert train_after == train_before  # no new training lines
    assert valid_after == valid_before  # and no repeated validation line
    assert json.loads((run / "summary.json").read_text())["step"] == 20
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000020"
    assert (run / "model.safetensors").read_bytes() == weights_before


def _short_run(corpus_dir: Path, run: Path, *extra: object) -> tuple[list, list, dict]:
    cli_ok("pretrain", "--corpus", corpus_dir, "--out", run, *TINY, "--steps", 10, "--batch-size", 8,
           "--seed", 0, "--save-every", 10, "--train.log_every", 5, *extra)
    train, valid = read_metrics(run)
    return train, valid, yaml.safe_load((run / "config.yaml").read_text())


def test_pretrain_mlm(corpus_dir: Path, tmp_path: Path):
    train, valid, cfg = _short_run(corpus_dir, tmp_path / "mlm", "--objective", "mlm")
    assert cfg["objective"]["name"] == "mlm"
    assert cfg["objective"]["mask_token_frac"] == 0.8 and cfg["objective"]["random_token_frac"] == 0.1
    assert [m["step"] for m in train] == [5, 10] and [m["step"] for m in valid] == [0, 10]
    for m in train:
        assert {"loss", "mlm_loss", "mlm_accuracy", "paper_flops", "model_flops"} <= set(m)
        assert m["loss"] == pytest.approx(m["mlm_loss"], abs=1e-6)
        assert not any(k.startswith("rtd_") or k == "sop_accuracy" for k in m)
    assert not any(k.startswith("valid_rtd_") for k in valid[-1])
    weights = load_file(str(tmp_path / "mlm" / "model.safetensors"))
    assert not any(k.startswith(("generator.", "discriminator.")) for k in weights)


def test_pretrain_albert_mlm_sop_ngram(corpus_dir: Path, tmp_path: Path):
    train, valid, cfg = _short_run(corpus_dir, tmp_path / "albert", "--objective", "mlm", "--sop",
                                   "--masking", "ngram", "--model.num_hidden_groups", 1,
                                   "--model.embedding_size", 32)
    assert cfg["objective"]["sop"] is True and cfg["objective"]["masking"] == "ngram"
    assert cfg["model"]["num_hidden_groups"] == 1 and cfg["model"]["embedding_size"] == 32
    for m in train:
        assert {"sop_loss", "sop_accuracy", "mlm_accuracy"} <= set(m)
        assert 0.0 <= m["sop_accuracy"] <= 1.0
        assert m["loss"] == pytest.approx(m["mlm_loss"] + m["sop_loss"], abs=1e-4)
        assert not any(k.startswith("rtd_") for k in m)
    assert "valid_sop_accuracy" in valid[-1]
    weights = load_file(str(tmp_path / "albert" / "model.safetensors"))
    layers = {int(k.split(".")[3]) for k in weights if k.startswith("encoder.encoder.layer.")}
    assert layers == {0}  # one shared layer serves both applications
    assert weights["encoder.embeddings.word_embeddings.weight"].shape == (2000, 32)
    assert weights["encoder.embeddings_project.weight"].shape == (64, 32)


def test_pretrain_electra_whole_word(corpus_dir: Path, tmp_path: Path):
    train, valid, cfg = _short_run(corpus_dir, tmp_path / "wwm", "--objective", "electra", "--masking", "whole_word")
    assert cfg["objective"]["masking"] == "whole_word" and cfg["objective"]["name"] == "electra"
    for m in train:
        assert {"rtd_loss", "rtd_accuracy", "mlm_accuracy", "replaced_fraction"} <= set(m)
        assert 0.05 < m["replaced_fraction"] < 0.3
    assert "valid_rtd_accuracy" in valid[-1]


# --- configuration -----------------------------------------------------------------------------


def test_config_file_and_precedence(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "from-yaml"
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "size": "tiny", "corpus": str(corpus_dir), "out": str(run),
        "model": {"num_hidden_layers": 4, "hidden_dropout_prob": 0.0},
        "objective": {"name": "mlm", "mask_prob": 0.2},
        "train": {"steps": 50, "batch_size": 8, "learning_rate": 1e-3, "log_every": 2, "save_every": 4,
                  "progress": False, "device": "cpu"},
    }))
    r = cli_ok("pretrain", "--config", config, "--steps", 4, "--lr", 3e-3, "--model.hidden_dropout_prob", 0.05)
    assert r.out.startswith(f"completed at step 4/4 in {run}")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 4  # flag beats file
    assert cfg["train"]["learning_rate"] == 3e-3  # shortcut flag beats file
    assert cfg["model"]["hidden_dropout_prob"] == 0.05  # dotted flag beats file
    assert cfg["model"]["num_hidden_layers"] == 4  # file beats the size table (tiny: 2)
    assert cfg["model"]["hidden_size"] == 64  # the size table fills the rest
    assert cfg["objective"]["name"] == "mlm" and cfg["objective"]["mask_prob"] == 0.2
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["log_every"] == 2
    train, _ = read_metrics(run)
    assert [m["step"] for m in train] == [2, 4]
    # no warm-up (10% of 4 steps is 0), then linear decay from the flag's 3e-3
    assert [m["lr"] for m in train] == pytest.approx([3e-3 * 3 / 4, 3e-3 * 1 / 4], rel=1e-12)
    weights = load_file(str(run / "model.safetensors"))
    assert {int(k.split(".")[3]) for k in weights if k.startswith("encoder.encoder.layer.")} == {0, 1, 2, 3}


def test_pretrain_help_lists_every_config_field():
    r = cli("pretrain", "--help")
    assert r.rc == 0
    flat = "".join(r.out.split())  # argparse wraps lines (and may break after hyphens)
    for name, _tp, _default, doc in iter_fields(PretrainConfig):
        assert f"--{name}" in r.out or f"--{name.replace('_', '-')}" in r.out, name  # top-level: --init-generator
        if "." in name:  # size/corpus/out have their own shortcut flags
            assert "".join(doc.split()) in flat, f"{name}: {doc}"


# --- flops -------------------------------------------------------------------------------------


def test_flops_counts_the_default_recipes_warm_start_at_masked_lm_cost():
    args = ("--size", "electra-small", "--steps", 1000, "--batch-size", 128, "--seq-len", 128, "--json")
    default = json.loads(cli_ok("flops", "--objective", "electra", *args).out)
    paper = json.loads(cli_ok("flops", "--objective", "electra", "--recipe", "paper", *args).out)
    mlm = json.loads(cli_ok("flops", "--objective", "mlm", *args).out)
    assert default["first_stage_steps"] == 300 and paper["first_stage_steps"] == 0  # small-budget: 30% warm start
    # 300 steps of a masked LM on the discriminator (no generator), then 700 ELECTRA steps
    assert default["paper_flops"] == pytest.approx(300 * mlm["paper_flops_per_step"]
                                                   + 700 * paper["paper_flops_per_step"], rel=1e-12)
    assert default["paper_flops"] < paper["paper_flops"]


@pytest.mark.parametrize("size, objective, steps, batch, seq, expected", [
    ("electra-small", "electra", 1_000_000, 128, 128, 1.29e18),   # ELECTRA paper, Table 1
    ("bert-small", "mlm", 1_450_000, 128, 128, 1.42e18),
    ("electra-base", "electra", 766_000, 256, 512, 6.42e19),
])
def test_flops_matches_the_electra_paper(size, objective, steps, batch, seq, expected):
    r = cli_ok("flops", "--size", size, "--objective", objective, "--steps", steps, "--batch-size", batch,
               "--seq-len", seq, "--recipe", "paper", "--json")
    report = json.loads(r.out)
    assert report["paper_flops"] == pytest.approx(expected, rel=0.02)
    assert report["paper_flops"] == pytest.approx(report["paper_flops_per_step"] * steps, rel=1e-12)
    assert 0 < report["model_flops"] < report["paper_flops"] * 1.5
    assert report["steps"] == steps and report["batch_size"] == batch and report["seq_len"] == seq
