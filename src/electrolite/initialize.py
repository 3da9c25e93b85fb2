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
from typing import Any

import torch
from torch import nn
from tokenizers import Tokenizer

from electrolite import config as cfgmod
from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.checkpoint import sha256
from electrolite.config import EncoderConfig
from electrolite.errors import UserError


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
    from electrolite.tasks.model import load_encoder, load_pretrain_objective
    root = Path(path)
    loaded = load_encoder(path, "pretrain --init")  # run, task dir or HF dir, with its tokenizer and family
    heads: dict[str, dict[str, torch.Tensor]] = {}
    if loaded.source == "hf":
        from electrolite.hf_io import load_hf_model
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
    from electrolite.hf_io import read_checkpoint  # optional: the hf extra
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


ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "embedding_size", "num_hidden_groups", "hidden_act", "max_position_embeddings",
                       "type_vocab_size", "layer_norm_eps")


def model_from_init(path: str, size: str | None, model: dict[str, Any]) -> dict[str, Any]:
    """The model section of a run that starts from `path`: its checkpoint's encoder config.

    Args:
        size: the named size the user gave (None: none given).
        model: the model fields the user gave (config file and flags).

    Raises:
        UserError: a given field or size contradicts the checkpoint, naming the field.
    """
    theirs = read_init_config(path)
    if size is not None:
        named = cfgmod.from_name(size, vocab_size=theirs.vocab_size)
        for key in ARCHITECTURE_FIELDS:
            if key != "vocab_size" and getattr(named, key) != getattr(theirs, key):
                raise UserError(f"size {size} contradicts --init {path}: its {key} is {getattr(named, key)!r}, "
                                f"the checkpoint's {getattr(theirs, key)!r} (leave --size out: the checkpoint sets "
                                "the architecture)")
    resolved = cfgmod.to_dict(theirs)
    for key, value in model.items():
        if key not in resolved:
            continue  # an unknown field: building the config names it
        current = getattr(theirs, key)
        mine = cfgmod.coerce(value, type(current), f"model.{key}")
        if mine != current and key in ARCHITECTURE_FIELDS + ("pad_token_id",):
            raise UserError(f"model.{key} {mine!r} contradicts --init {path}, whose {key} is "
                            f"{current!r} (the checkpoint sets the architecture)")
        resolved[key] = mine  # dropout and initializer_range may change
    return resolved


def generator_fields(path: str, model: dict[str, Any], objective: dict[str, Any]) -> dict[str, Any]:
    """objective.generator_size and generator_layers that make the generator the shape of `path`'s encoder
    ({} without --init-generator). The generator shares the discriminator's embedding width."""
    if not path:
        return {}
    if objective.get("name", "electra") != "electra":
        raise UserError("init_generator is for the electra objective (the masked LM has no generator)")
    theirs = read_init_config(path)
    width = model.get("embedding_size") or model["hidden_size"]
    if (theirs.embedding_size or theirs.hidden_size) != width:
        raise UserError(f"--init-generator {path}: its embedding size {theirs.embedding_size or theirs.hidden_size} "
                        f"differs from the discriminator's {width}; the two share their embeddings")
    derived = EncoderConfig(hidden_size=theirs.hidden_size)  # what generator_config() derives from the width
    for key in ("num_attention_heads", "intermediate_size"):
        if getattr(derived, key) != getattr(theirs, key):
            raise UserError(f"--init-generator {path}: its {key} is {getattr(theirs, key)}, but a generator "
                            f"{theirs.hidden_size} wide gets {getattr(derived, key)} (hidden/64 heads, 4 × hidden FFN, "
                            "as ELECTRA's generators)")
    return {"generator_size": theirs.hidden_size / model["hidden_size"],
            "generator_layers": theirs.num_hidden_layers / model["num_hidden_layers"]}


def grow_vocabulary(source: InitSource, pieces: dict[int, list[int]], rows: int) -> None:
    """Grow `source`'s word embeddings (and its MLM head's bias) to `rows` for an extended vocabulary: each
    new row starts as the mean of its word's pieces' rows (``vocab.grow_rows``)."""
    from electrolite.vocab import grow_rows
    key = "embeddings.word_embeddings.weight"
    source.encoder[key] = grow_rows(source.encoder[key], pieces, rows)
    if "mlm_head" in source.heads:
        source.heads["mlm_head"]["bias"] = grow_rows(source.heads["mlm_head"]["bias"], pieces, rows)
