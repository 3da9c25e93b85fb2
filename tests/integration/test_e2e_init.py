"""Continued pre-training from a released checkpoint (`pretrain --init PATH`, issue 18).

Exact loading: at step 0 the run's encoder (and the heads the checkpoint has) compute what transformers'
model on PATH computes, for tiny random BERT, ELECTRA and ALBERT checkpoints and for the real
all-MiniLM-L6-v2. Errors name the field or the tokenizer; a stopped and resumed continued run equals an
uninterrupted one; its Hugging Face export loads in transformers with the same outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from electrolite import config as cfgmod
from electrolite.initialize import apply_init, pretrain_config
from electrolite.pretrain import RunSetup as Setup
from tests.hf_cases import batch, tiny_hf_config

from .conftest import cli, cli_ok, read_metrics, user_error

VOCAB = Path(__file__).parent / "data" / "gutenberg-wordpiece-2000.txt"
QUICK = ["--precision", "fp32", "--train.device", "cpu", "--train.progress", "false", "--batch-size", 4,
         "--train.eval_batches", 1, "--seed", 0]


def hf_checkpoint(root: Path, arch: str) -> Path:
    """A tiny random transformers checkpoint of class `arch`, with the test WordPiece vocabulary."""
    import transformers
    model_type = {"Bert": "bert", "Electra": "electra", "Albert": "albert"}[arch[:arch.index("For")]
                                                                             if "For" in arch else arch[:-5]]
    torch.manual_seed(0)
    config = tiny_hf_config(model_type, vocab_size=len(VOCAB.read_text().split("\n")) - 1)
    getattr(transformers, arch)(config).save_pretrained(str(root))
    (root / "vocab.txt").write_text(VOCAB.read_text())
    return root


def prepare(books: Path, tokenizer: Path, out: Path, seq_len: int = 32) -> Path:
    cli_ok("prepare", books, "--tokenizer", tokenizer, "--seq-len", seq_len, "--out", out, "--no-progress")
    return out


def initialised(path: Path, corpus: Path, out: Path, objective: str):
    cfg = pretrain_config(None, {"init": str(path), "corpus": str(corpus), "out": str(out),
                                                "objective.name": objective})
    setup = Setup(cfg)
    model = setup.build_model()
    apply_init(model, *setup.read_init())
    return model.eval(), setup


CASES = [("BertForMaskedLM", "mlm"), ("ElectraForPreTraining", "electra"), ("AlbertForMaskedLM", "mlm"),
         ("BertModel", "electra"), ("ElectraForMaskedLM", "mlm")]


@pytest.mark.parametrize("arch,objective", CASES, ids=[f"{a}-{o}" for a, o in CASES])
def test_step_zero_computes_what_transformers_does(books, tmp_path, arch, objective):
    import transformers
    path = hf_checkpoint(tmp_path / "hf", arch)
    corpus = prepare(books, path, tmp_path / "corpus")
    model, setup = initialised(path, corpus, tmp_path / "run", objective)
    ids, mask, types = batch(setup.tokenizer)
    theirs = transformers.AutoModel.from_pretrained(str(path)).eval()
    encoder = model.discriminator if objective == "electra" else model.encoder
    with torch.no_grad():
        ours = encoder(ids, mask, types)
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
        full = getattr(transformers, arch).from_pretrained(str(path)).eval()
        out = full(input_ids=ids, attention_mask=mask, token_type_ids=types)
        if arch == "ElectraForPreTraining":  # the RTD head comes along
            torch.testing.assert_close(model.discriminator_head(ours), out.logits, atol=1e-5, rtol=0)
        if arch.endswith("ForMaskedLM"):  # and the MLM head
            torch.testing.assert_close(model.mlm_head(ours), out.logits, atol=1e-4, rtol=0)
    if objective == "electra" and model.gdes:  # GDES: the generator's table starts as the checkpoint's
        for g, d in zip(model.generator.embeddings.parameters(), model.discriminator.embeddings.parameters()):
            assert torch.equal(g, d)


def test_step_zero_of_the_real_minilm_checkpoint(books, minilm_dir, tmp_path):
    import transformers
    corpus = prepare(books, minilm_dir, tmp_path / "corpus", seq_len=64)
    for objective in ("mlm", "electra"):
        model, setup = initialised(minilm_dir, corpus, tmp_path / f"run-{objective}", objective)
        assert setup.cfg.model.hidden_size == 384 and setup.cfg.model.num_hidden_layers == 6
        ids, mask, types = batch(setup.tokenizer)
        theirs = transformers.AutoModel.from_pretrained(str(minilm_dir)).eval()
        with torch.no_grad():
            ours = (model.discriminator if objective == "electra" else model.encoder)(ids, mask, types)
            expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_a_continued_run_records_its_start_resumes_exactly_and_exports(books, tmp_path):
    import transformers
    path = hf_checkpoint(tmp_path / "hf", "BertForMaskedLM")
    corpus = prepare(books, path, tmp_path / "corpus")
    argv = ["pretrain", "--init", path, "--corpus", corpus, "--objective", "mlm", "--steps", 12, "--save-every", 4,
            "--train.eval_every", 6, "--train.log_every", 1, *QUICK]
    ref = tmp_path / "uninterrupted"
    cli_ok(*argv, "--out", ref)
    cfg = yaml_config(ref)
    assert cfg["train"]["learning_rate"] == 1e-4 and cfg["train"]["warmup_steps"] == 0  # 6% of 12 steps
    assert cfg["init"] == str(path) and cfg["model"]["hidden_size"] == 32
    sha = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["init"]["sha256"] == sha and summary["init"]["path"] == str(path)
    assert summary["init"]["family"] == "bert" and summary["init"]["heads"] == ["mlm_head"]
    first = json.loads((ref / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["init"]["sha256"] == sha

    stopped = tmp_path / "stopped"
    cli_ok(*argv, "--out", stopped, "--budget", "0.01s")
    assert json.loads((stopped / "summary.json").read_text())["step"] < 12
    cli_ok(*argv, "--out", stopped)  # resumes from its checkpoint, not from --init again
    assert json.loads((stopped / "summary.json").read_text())["init"]["sha256"] == sha
    from safetensors.torch import load_file
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = ("tokens_per_second", "elapsed_seconds")
    assert ([{k: v for k, v in m.items() if k not in strip} for m in read_metrics(stopped)[0]]
            == [{k: v for k, v in m.items() if k not in strip} for m in read_metrics(ref)[0]])

    exported = tmp_path / "exported"
    cli_ok("export", ref, exported, "--format", "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(str(exported)).eval()
    model, setup = initialised(exported, corpus, tmp_path / "again", "mlm")  # the export starts a run too
    ids, mask, types = batch(setup.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model.mlm_head(model.encoder(ids, mask, types)),
                                   hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                   atol=1e-4, rtol=0)
    trained = load_file(str(ref / "model.safetensors"))
    assert torch.equal(model.encoder.state_dict()["embeddings.word_embeddings.weight"],
                       trained["encoder.embeddings.word_embeddings.weight"])


def yaml_config(run: Path) -> dict:
    return cfgmod.load_yaml(run / "config.yaml")


def test_a_corpus_of_another_tokenizer_is_refused(books, minilm_dir, tmp_path):
    path = minilm_dir
    corpus_dir = prepare(books, hf_checkpoint(tmp_path / "hf", "BertForMaskedLM"), tmp_path / "corpus")
    out = tmp_path / "run"
    r = cli("pretrain", "--init", path, "--corpus", corpus_dir, "--out", out, "--objective", "mlm", "--steps", 2,
            *QUICK)
    assert user_error(r) == (f"corpus {corpus_dir} was prepared with another tokenizer than --init {path}'s; "
                             f"prepare it with --tokenizer {path}")
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("flag,message", [
    (["--size", "tiny"], "size tiny contradicts --init {path}: its hidden_size is 64, the checkpoint's 32"),
    (["--model.num_hidden_layers", "2"], "model.num_hidden_layers 2 contradicts --init {path}, whose "
                                         "num_hidden_layers is 4"),
])
def test_a_size_or_field_that_contradicts_the_checkpoint_names_it(books, tmp_path, flag, message):
    path = hf_checkpoint(tmp_path / "hf", "BertForMaskedLM")
    corpus = prepare(books, path, tmp_path / "corpus")
    r = cli("pretrain", "--init", path, "--corpus", corpus, "--out", tmp_path / "run", *flag, *QUICK)
    assert user_error(r).startswith(message.format(path=path))
    assert not (tmp_path / "run").exists()


def test_dropout_may_change_and_a_matching_size_is_accepted(books, tmp_path):
    path = hf_checkpoint(tmp_path / "hf", "BertForMaskedLM")
    cfg = pretrain_config(None, {"init": str(path), "model.hidden_dropout_prob": 0.0})
    assert cfg.model.hidden_dropout_prob == 0.0 and cfg.model.hidden_size == 32


def test_an_extended_vocabulary_starts_new_rows_at_the_mean_of_their_pieces(books, tmp_path):
    from electrolite.data.tokenizer import load_tokenizer
    path = hf_checkpoint(tmp_path / "hf", "BertForMaskedLM")
    ext = tmp_path / "extended"
    r = cli_ok("tokenizer", "extend", path, "--corpus", books, "--add", 20, "--min-count", 3, "--out", ext)
    record = json.loads((ext / "extension.json").read_text())
    base, extended = load_tokenizer(str(path)), load_tokenizer(str(ext))
    size = base.get_vocab_size()
    added = record["added"]
    assert record["base_vocab_size"] == size and [a["id"] for a in added] == list(range(size, size + 20))
    assert r.out.startswith(f"wrote {ext}/tokenizer.json: 20 words added after id {size - 1}, e.g. {added[0]['word']}")
    savings = [a["count"] * (len(a["pieces"]) - 1) for a in added]
    assert savings == sorted(savings, reverse=True) and min(a["count"] for a in added) >= 3
    for a in added:  # one token now, its pieces before
        assert extended.encode(a["word"], add_special_tokens=False).ids == [a["id"]]
        assert base.encode(a["word"], add_special_tokens=False).ids == a["pieces"] and len(a["pieces"]) > 1
    plain = "the house by the river"
    assert extended.encode(plain).ids == base.encode(plain).ids  # every base id keeps its meaning

    corpus = prepare(books, ext, tmp_path / "corpus")
    model, setup = initialised(path, corpus, tmp_path / "run", "mlm")
    assert setup.cfg.model.vocab_size == size + 20
    from safetensors.torch import load_file
    theirs = load_file(str(path / "model.safetensors"))
    table, bias = theirs["bert.embeddings.word_embeddings.weight"], theirs["cls.predictions.bias"]
    ours = model.encoder.embeddings.word_embeddings.weight.detach()
    assert torch.equal(ours[:size], table)
    for a in added:
        torch.testing.assert_close(ours[a["id"]], table[a["pieces"]].mean(0), atol=0, rtol=0)
        torch.testing.assert_close(model.mlm_head.bias[a["id"]].detach(), bias[a["pieces"]].mean(0), atol=0, rtol=0)

    other = prepare(books, other_vocab_dir(tmp_path), tmp_path / "corpus-other")
    r = cli("pretrain", "--init", path, "--corpus", other, "--out", tmp_path / "bad", "--objective", "mlm", *QUICK)
    assert "is not its extension (`electrolite tokenizer extend`)" in user_error(r)


def other_vocab_dir(tmp_path: Path) -> Path:
    """A larger, unrelated WordPiece vocabulary: the test vocabulary with 100 made-up words in front."""
    out = tmp_path / "other-vocab"
    out.mkdir()
    lines = VOCAB.read_text().split("\n")
    (out / "vocab.txt").write_text("\n".join(lines[:5] + [f"zz{i}" for i in range(100)] + lines[5:]))
    return out


def test_continuing_defaults(tmp_path):
    path = hf_checkpoint(tmp_path / "hf", "ElectraForPreTraining")
    cfg = pretrain_config(None, {"init": str(path), "train.steps": 1000})
    assert (cfg.train.learning_rate, cfg.train.warmup_steps) == (1e-4, 60)  # Gururangan et al.'s TAPT values
    assert cfg.objective.two_stage_fraction == 0.0  # no masked-LM warm start of a trained discriminator
    assert cfg.objective.recipe == "small-budget" and cfg.objective.embedding_sharing == "gdes"
    mine = pretrain_config(None, {"init": str(path), "train.learning_rate": 3e-4,
                                                 "train.warmup_steps": 5, "objective.two_stage_fraction": 0.2})
    assert (mine.train.learning_rate, mine.train.warmup_steps, mine.objective.two_stage_fraction) == (3e-4, 5, 0.2)
    scratch = pretrain_config(None, {"size": "tiny"})
    assert scratch.train.learning_rate == 5e-4 and scratch.objective.two_stage_fraction == 0.3


def test_init_generator_starts_the_generator_and_its_head(books, tmp_path):
    import transformers
    disc = hf_checkpoint(tmp_path / "disc", "ElectraForPreTraining")
    gen = tmp_path / "gen"
    torch.manual_seed(1)
    config = tiny_hf_config("electra", vocab_size=len(VOCAB.read_text().split("\n")) - 1, hidden_size=16,
                            num_attention_heads=1, intermediate_size=64)
    transformers.ElectraForMaskedLM(config).save_pretrained(str(gen))
    (gen / "vocab.txt").write_text(VOCAB.read_text())
    corpus = prepare(books, disc, tmp_path / "corpus")
    cfg = pretrain_config(None, {"init": str(disc), "init_generator": str(gen), "corpus": str(corpus),
                                                "out": str(tmp_path / "run")})
    assert (cfg.objective.generator_size, cfg.objective.generator_layers) == (0.5, 1.0)  # 16 of 32 wide, 4 layers
    setup = Setup(cfg)
    model = setup.build_model()
    apply_init(model, *setup.read_init())
    model.eval()
    ids, mask, types = batch(setup.tokenizer)
    theirs = transformers.ElectraForMaskedLM.from_pretrained(str(gen)).eval()
    with torch.no_grad():
        hidden = model.generator(ids, mask, types)
        out = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        torch.testing.assert_close(hidden, out.hidden_states[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.generator_head(hidden), out.logits, atol=1e-4, rtol=0)
        d = transformers.ElectraModel.from_pretrained(str(disc)).eval()
        torch.testing.assert_close(model.discriminator(ids, mask, types),
                                   d(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state,
                                   atol=1e-5, rtol=0)
    bad = tmp_path / "bad-gen"
    config = tiny_hf_config("electra", vocab_size=config.vocab_size, hidden_size=16, num_attention_heads=2,
                            intermediate_size=64)
    transformers.ElectraForMaskedLM(config).save_pretrained(str(bad))
    with pytest.raises(Exception) as err:
        pretrain_config(None, {"init": str(disc), "init_generator": str(bad)})
    assert f"--init-generator {bad}: its num_attention_heads is 2, but a generator 16 wide gets 1" in str(err.value)
