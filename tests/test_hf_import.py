"""Importing Hugging Face checkpoints (hf_io.py): tiny BERT and ALBERT made by ``transformers``, the real
all-MiniLM-L6-v2 checkpoint with BertModel parity on SST-2 dev, and transformers' pipelines on exported
task dirs giving what `electrolite predict` gives. Shared pieces are tests/hf_cases.py."""

from __future__ import annotations

import json

import pytest
import torch
from hf_cases import ATOL, TEXTS, VOCAB, assert_hidden_states_equal, assert_state_identical, batch, perturb, tiny_hf_config, write_task_dir
from safetensors.torch import load_file, save_file

from electrolite.data.tokenizer import load_tokenizer, save_tokenizer
from electrolite.errors import UserError
from electrolite.interop import hf, hf_export, hf_io
from electrolite.tasks.model import from_scratch, new_task_model
from electrolite.tasks.qa import snap_to_words

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(VOCAB))


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
        hf_io.load_hf_encoder(path)


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
    loaded = hf_io.load_hf_encoder(base)  # the encoder alone needs no pooler
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
    loaded = hf_io.load_hf_encoder(tmp_path)
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
def sst2_sentences(shared_data) -> list[str]:
    lines = (shared_data / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:16]]


def test_minilm_imports_with_bertmodel_parity_on_sst2(minilm_dir, sst2_sentences, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = hf_io.load_hf_encoder(minilm_dir)
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
    loaded = hf_io.load_hf_encoder(minilm_dir)
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
    assert hf_export.export_hf(minilm_dir, out) == [f"wrote {out} (BertModel)"]
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
    hf_export.export_hf(root, tmp_path / "hf")
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
    hf_export.export_hf(root, tmp_path / "hf")
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
    hf_export.export_hf(root, tmp_path / "hf")
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
