"""The fine-tuning recipe follows the checkpoint's family (issue 17): ELECTRA's layer-wise LR decay for
ELECTRA checkpoints and runs, BERT's single learning rate for BERT and ALBERT ones; the factors the parity
ablation turns (batch order, Adam ε, head) are options, recorded in the task dir.

The values pinned here are the ones bench/finetune_parity.py measured (BENCHMARKS.md, "Fine-tuning parity").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from electrolite import config as cfgmod
from electrolite import finetune
from electrolite.config import CHECKPOINT_RECIPES, FINETUNE_RECIPES, FinetuneConfig
from electrolite.errors import UserError
from electrolite.finetune import run_one, shuffled_batches
from electrolite.interop.load import load_encoder
from electrolite.tasks.model import new_task_model
from tests.hf_cases import tiny_hf_config, write_run
from tests.test_finetune import VOCAB, ft_config, loaded_encoder, sst2_data, sst2_task, tok  # noqa: F401 (fixture)

PINNED = {
    "electra": {"recipe": "electra", "layerwise_lr_decay": 0.8, "adam_epsilon": 1e-6, "batch_order": "bucketed"},
    "bert": {"recipe": "bert", "layerwise_lr_decay": 1.0, "adam_epsilon": 1e-6, "batch_order": "bucketed"},
    "albert": {"recipe": "bert", "layerwise_lr_decay": 1.0, "adam_epsilon": 1e-6, "batch_order": "bucketed"},
}


@pytest.mark.parametrize("family", ["electra", "bert", "albert"])
def test_the_default_recipe_of_each_checkpoint_family_is_pinned(family):
    assert FinetuneConfig().resolved_recipe(family) == PINNED[family]
    assert set(CHECKPOINT_RECIPES) == {"electra", "bert", "albert"} and set(FINETUNE_RECIPES) == {"electra", "bert"}


def test_a_named_recipe_or_field_overrides_the_family():
    assert FinetuneConfig(recipe="electra").resolved_recipe("bert") == PINNED["electra"]
    got = FinetuneConfig(layerwise_lr_decay=0.9, adam_epsilon=1e-8, batch_order="shuffled").resolved_recipe("bert")
    assert got == {"recipe": "bert", "layerwise_lr_decay": 0.9, "adam_epsilon": 1e-8, "batch_order": "shuffled"}
    assert FinetuneConfig().resolved_layer_decay(1024, "electra") == 0.9  # ELECTRA-Large's 0.9
    assert FinetuneConfig().resolved_layer_decay(1024, "bert") == 1.0


@pytest.mark.parametrize("field,value,message", [
    ("recipe", "roberta", "finetune recipe must be auto, electra or bert, got 'roberta'"),
    ("batch_order", "sorted", "finetune batch_order must be bucketed or shuffled, got 'sorted'"),
    ("head", "mean", "finetune head must be auto, electra or pooler, got 'mean'"),
    ("layerwise_lr_decay", 1.5, "finetune layerwise_lr_decay must be in (0, 1]"),
])
def test_bad_recipe_fields_are_one_line_errors(field, value, message):
    with pytest.raises(UserError) as err:
        cfgmod.build(FinetuneConfig, {field: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def _hf_dir(root: Path, arch: str) -> Path:
    import transformers
    model_type = arch.split("For")[0].replace("Model", "").lower()
    config = tiny_hf_config(model_type, vocab_size=len(VOCAB.read_text().split()))
    getattr(transformers, arch)(config).save_pretrained(str(root))
    (root / "vocab.txt").write_text(VOCAB.read_text())
    return root


@pytest.mark.parametrize("arch,family", [("ElectraForPreTraining", "electra"), ("BertForMaskedLM", "bert"),
                                         ("AlbertModel", "albert")])
def test_the_family_of_a_hugging_face_checkpoint(tmp_path, arch, family):
    assert load_encoder(str(_hf_dir(tmp_path / "hf", arch))).family == family


def test_the_family_of_the_real_minilm_checkpoint(minilm_dir):
    loaded = load_encoder(str(minilm_dir))
    assert (loaded.family, loaded.head) == ("bert", "pooler")
    assert FinetuneConfig().resolved_recipe(loaded.family)["layerwise_lr_decay"] == 1.0


@pytest.mark.parametrize("overrides,family", [({"objective.name": "electra"}, "electra"),
                                              ({"objective.name": "mlm"}, "bert"),
                                              ({"objective.name": "mlm", "objective.sop": True}, "albert")])
def test_the_family_of_a_pretraining_run(tok, tmp_path, overrides, family):  # noqa: F811
    root, _, _ = write_run(tmp_path / "run", tok, overrides)
    assert load_encoder(str(root)).family == family


def _spied_run(tok, tmp_path, monkeypatch, family: str, **cfg):  # noqa: F811
    captured = {}
    real_adamw, real_new = finetune.adamw, finetune.new_task_model

    def spy_new(*args, **kwargs):
        captured["model"] = real_new(*args, **kwargs)
        return captured["model"]

    def spy_adamw(groups, lr, betas, eps, device):
        captured["eps"] = eps
        captured["lr"] = {id(p): g["lr"] for g in groups for p in g["params"]}
        return real_adamw(groups, lr, betas, eps, device)

    monkeypatch.setattr(finetune, "new_task_model", spy_new)
    monkeypatch.setattr(finetune, "adamw", spy_adamw)
    loaded = loaded_encoder(tok)
    loaded.family = family
    loaded.head = "electra" if family == "electra" else "pooler"
    out = tmp_path / f"task-{family}"
    summary = run_one(ft_config(tmp_path, epochs=1, **cfg), out, sst2_task(), sst2_data(), loaded)
    names = {id(p): n for n, p in captured["model"].named_parameters()}
    return summary, {names[i]: v for i, v in captured["lr"].items()}, captured["eps"], out


@pytest.mark.parametrize("family", ["electra", "bert"])
def test_run_one_trains_with_its_family_recipe_and_records_it(tok, tmp_path, monkeypatch, family):  # noqa: F811
    summary, lr_of, eps, out = _spied_run(tok, tmp_path, monkeypatch, family)
    lr, layers = 1e-3, 2
    embedding = lr_of["encoder.embeddings.word_embeddings.weight"]
    if family == "electra":  # embeddings at depth 0 of L + 2: lr × 0.8^(L+2)
        assert embedding == pytest.approx(lr * 0.8 ** (layers + 2), rel=1e-12)
    else:  # one learning rate for every parameter
        assert all(v == pytest.approx(lr, rel=1e-12) for v in lr_of.values()) and len(lr_of) > 30
    assert eps == 1e-6
    recorded = {**PINNED[family], "learning_rate": lr}
    assert summary["recipe"] == recorded
    saved = cfgmod.load_yaml(out / "config.yaml")["task_model"]
    assert saved["recipe"] == recorded and saved["checkpoint_family"] == family
    assert json.loads((out / "eval_results.json").read_text())["recipe"] == recorded
    # a task dir keeps its family: fine-tuning it again takes the same recipe
    assert load_encoder(str(out)).family == family


def test_the_ablation_factors_reach_the_run(tok, tmp_path, monkeypatch):  # noqa: F811
    seen = []
    real = finetune.shuffled_batches
    monkeypatch.setattr(finetune, "shuffled_batches", lambda *a: seen.append(a) or real(*a))
    summary, lr_of, eps, out = _spied_run(tok, tmp_path, monkeypatch, "bert", adam_epsilon=1e-8,
                                          batch_order="shuffled", head="electra", layerwise_lr_decay=0.5)
    assert eps == 1e-8 and len(seen) == 1  # one epoch, uniformly shuffled
    assert "head.out_proj.weight" in lr_of and not any(n.startswith("head.pooler") for n in lr_of)
    assert lr_of["encoder.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.5 ** 4, rel=1e-12)
    assert cfgmod.load_yaml(out / "config.yaml")["task_model"]["head"] == "electra"
    assert summary["recipe"]["batch_order"] == "shuffled"


def test_shuffled_batches_cover_every_index_once_and_mix_lengths():
    batches = shuffled_batches(1000, 32, np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000)) and [len(b) for b in batches[:-1]] == [32] * 31
    assert len(batches[-1]) == 1000 - 31 * 32
    assert not np.array_equal(flat, np.arange(1000))
    assert not np.array_equal(flat, np.concatenate(shuffled_batches(1000, 32, np.random.default_rng(1))))


def test_a_head_override_reloads_as_trained(tok, tmp_path):  # noqa: F811
    loaded = loaded_encoder(tok)
    loaded.head = "pooler"
    model = new_task_model(loaded, "classification", 2, 32, head="electra")
    assert model.head.kind == "electra"
    torch.manual_seed(0)
    assert new_task_model(loaded, "classification", 2, 32).head.kind == "pooler"
