"""Start pre-training from released weights: ``electrolite pretrain --init PATH`` (continued, domain- or
task-adaptive pre-training, as in Gururangan et al. 2020, "Don't Stop Pretraining").

PATH is a Hugging Face checkpoint dir (BERT, ELECTRA discriminator or generator, ALBERT: any class
electrolite reads), an electrolite pre-training run or a fine-tuned task dir. The architecture and the
tokenizer come from PATH; the corpus must have been prepared with PATH's tokenizer.

What is loaded into the objective (``apply_init``):

- masked LM: the encoder, and the checkpoint's MLM head where it has one (BertForMaskedLM,
  ElectraForMaskedLM, AlbertForMaskedLM, an MLM run); otherwise the head is fresh (tied to the word
  embeddings, as always).
- ELECTRA: the discriminator is PATH's encoder, with its RTD head where it has one (ElectraForPreTraining,
  an ELECTRA run); its MLM head, if any, starts the two-stage warm start's head. The generator is
  ``--init-generator PATH2``'s encoder and MLM head, or fresh; under ``embedding_sharing: shared`` it uses
  the discriminator's embeddings (PATH's), under ``gdes`` its own table starts as PATH2's (or PATH's) and the
  discriminator's residual is what separates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Tokenizer
from torch import nn

from electrolite import config as cfgmod
from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.config import EncoderConfig
from electrolite.data.vocab import grow_rows
from electrolite.errors import UserError
from electrolite.interop.hf_io import load_hf_model, read_checkpoint
from electrolite.interop.load import load_encoder, load_pretrain_objective
from electrolite.objectives import Electra, MaskedLM
from electrolite.training.checkpoint import sha256


@dataclass
class InitSource:
    """Weights a run starts from."""

    path: str
    family: str
    """electra, bert or albert."""
    config: EncoderConfig
    tokenizer: Tokenizer
    encoder: dict[str, torch.Tensor]
    """Encoder weights, keys relative to the Encoder module."""
    heads: dict[str, dict[str, torch.Tensor]]
    """Pre-training heads it has: "mlm_head" and/or "rtd_head" (keys relative to the head)."""
    weights_file: Path

    def record(self) -> dict[str, Any]:
        """Where the weights came from, for summary.json and metrics.jsonl: path, file, SHA-256, family."""
        return {"path": self.path, "weights": str(self.weights_file), "sha256": sha256(self.weights_file),
                "family": self.family, "heads": sorted(self.heads)}


def _weights_file(root: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json"):
        if (root / name).is_file():
            return root / name
    raise UserError(f"{root}: no model.safetensors or pytorch_model.bin to start from")


def _heads_of(module: nn.Module, names: dict[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """{our head name: its weights} for the attributes of `module` named in `names` ({attribute: head})."""
    return {head: {k: v.detach().clone() for k, v in getattr(module, attr).state_dict().items()}
            for attr, head in names.items() if hasattr(module, attr)}


def read_init(path: str) -> InitSource:
    """Read what `--init PATH` names (see the module docstring)."""
    root = Path(path)
    loaded = load_encoder(path, "pretrain --init")  # run, task dir or HF dir, with its tokenizer and family
    heads: dict[str, dict[str, torch.Tensor]] = {}
    if loaded.source == "hf":
        module, _ = load_hf_model(root)
        heads = _heads_of(module, {"mlm_head": "mlm_head", "rtd_head": "rtd_head"})
    elif loaded.source == "pretrain-run":
        cfg = cfgmod.build(cfgmod.PretrainConfig, cfgmod.load_yaml(root / "config.yaml"))
        objective = load_pretrain_objective(root, cfg)
        heads = _heads_of(objective, {"mlm_head": "mlm_head", "discriminator_head": "rtd_head",
                                      "discriminator_mlm_head": "mlm_head"})
    return InitSource(os.fspath(path), loaded.family, loaded.config, loaded.tokenizer, loaded.state, heads,
                      _weights_file(root))


def read_init_config(path: str) -> EncoderConfig:
    """The encoder config of what `--init PATH` names, read without loading weights."""
    art = expect(open_dir(path), (RunDir, TaskDir, HFDir),
                 "pretrain --init needs a pre-training run, a fine-tuned task dir or a Hugging Face checkpoint")
    if isinstance(art, RunDir):
        return art.config().model
    if isinstance(art, TaskDir):
        try:
            return cfgmod.build(EncoderConfig, art.data.get("encoder") or {}, "encoder")
        except UserError as e:
            raise UserError(f"{art.root / 'config.yaml'}: {e}") from None
    return read_checkpoint(art.root).config


def _load(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"--init {path}: the {what} does not fit (missing: {', '.join(missing[:6]) or '-'}; "
                        f"unexpected: {', '.join(unexpected[:6]) or '-'})")


@torch.no_grad()
def apply_init(model: nn.Module, source: InitSource, generator: InitSource | None = None) -> None:
    """Load `source` (and the ELECTRA generator's `generator`) into a freshly built objective module."""
    if hasattr(model, "discriminator"):  # ELECTRA
        model = cast(Electra, model)  # build_objective: only Electra has a discriminator
        _load(model.discriminator, source.encoder, "encoder", source.path)
        if "rtd_head" in source.heads:
            _load(model.discriminator_head, source.heads["rtd_head"], "RTD head", source.path)
        if "mlm_head" in source.heads and hasattr(model, "discriminator_mlm_head"):
            _load(model.discriminator_mlm_head, source.heads["mlm_head"], "MLM head", source.path)
        if generator is not None:
            shared = model.generator.embeddings is model.discriminator.embeddings
            state = {k: v for k, v in generator.encoder.items() if not (shared and k.startswith("embeddings."))}
            _load_partial(model.generator, state, shared, generator.path)
            if "mlm_head" in generator.heads:
                _load(model.generator_head, generator.heads["mlm_head"], "generator's MLM head", generator.path)
        if model.gdes:  # the generator's own table: PATH2's, else PATH's; the residual is the difference
            if generator is None:
                model.generator.embeddings.load_state_dict(model.discriminator.embeddings.state_dict())
        return
    model = cast(MaskedLM, model)  # build_objective's other module
    _load(model.encoder, source.encoder, "encoder", source.path)
    if "mlm_head" in source.heads:
        _load(model.mlm_head, source.heads["mlm_head"], "MLM head", source.path)


def _load_partial(module: nn.Module, state: dict[str, torch.Tensor], shared: bool, path: str) -> None:
    """A generator's encoder without its embeddings when those are the discriminator's (shared)."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (shared and k.startswith("embeddings."))]
    if missing or unexpected:
        raise UserError(f"--init-generator {path}: the generator does not fit objective.generator_size / "
                        f"generator_layers (missing: {', '.join(missing[:6]) or '-'}; unexpected: "
                        f"{', '.join(unexpected[:6]) or '-'})")


def pretrain_config(file_data: dict[str, Any] | None = None,
                    overrides: dict[str, Any] | None = None) -> cfgmod.PretrainConfig:
    """``config.resolve_pretrain_config`` for a user's config file and flags: when they set ``init`` (and
    ``init_generator``), the checkpoints' encoder configs are read here (without weights) and set the model."""
    def given(key: str) -> str:
        value = (overrides or {}).get(key, (file_data or {}).get(key, ""))
        return cfgmod.coerce(value, str, key) if value else ""
    init, generator = given("init"), given("init_generator")
    return cfgmod.resolve_pretrain_config(file_data, overrides, init_config=read_init_config(init) if init else None,
                                          generator_config=read_init_config(generator) if generator else None)


def grow_vocabulary(source: InitSource, pieces: dict[int, list[int]], rows: int) -> None:
    """Grow `source`'s word embeddings (and its MLM head's bias) to `rows` for an extended vocabulary: each
    new row starts as the mean of its word's pieces' rows (``vocab.grow_rows``)."""
    key = "embeddings.word_embeddings.weight"
    source.encoder[key] = grow_rows(source.encoder[key], pieces, rows)
    if "mlm_head" in source.heads:
        source.heads["mlm_head"]["bias"] = grow_rows(source.heads["mlm_head"]["bias"], pieces, rows)
