"""Shared pieces of the Hugging Face tests (test_hf.py, test_hf_import.py): tiny run and task dirs
with every parameter perturbed, and the comparisons with ``transformers``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from electrolite import config as cfgmod
from electrolite.config import EncoderConfig, FinetuneConfig
from electrolite.data.tokenizer import save_tokenizer
from electrolite.objectives import build_objective
from electrolite.tasks.model import TaskModel
from electrolite.training import checkpoint

transformers = pytest.importorskip("transformers")

VOCAB = Path(__file__).parent / "integration" / "data" / "gutenberg-wordpiece-2000.txt"
TEXTS = ["the old house stood by the river", "a man walked slowly along the road towards the village",
         "evening light"]
ATOL = 1e-5
# Small but not degenerate: two heads, factorized where asked, 4 layers when shared in groups of 2.
SMALL = {"model.hidden_size": 32, "model.num_attention_heads": 2, "model.intermediate_size": 64,
         "model.max_position_embeddings": 64, "model.num_hidden_layers": 2}


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
    # ELECTRA's paper recipe: one shared embedding module, the tie the export tests check (a small-budget run's
    # GDES export has its own test in tests/integration/test_e2e_hf.py)
    cfg = cfgmod.resolve_pretrain_config(None, {"size": "tiny", "objective.recipe": "paper",
                                                "model.vocab_size": tok.get_vocab_size(), **SMALL, **overrides})
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
    import transformers
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
    import transformers
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path))
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == tok.encode(text).ids
    assert hf_tok(TEXTS[0], TEXTS[1])["token_type_ids"] == tok.encode(TEXTS[0], TEXTS[1]).type_ids


def tiny_hf_config(model_type: str, **extra):
    """A small transformers config with factorized embeddings (and shared layer groups for ALBERT)."""
    import transformers
    fields = dict(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)
    if model_type != "bert":
        fields["embedding_size"] = 16
    if model_type == "albert":
        fields["num_hidden_groups"] = 2
    return transformers.AutoConfig.for_model(model_type, **{**fields, **extra})
