"""Conversions to and from Hugging Face ``transformers``: weight keys, configs, which class.

Every supported ``transformers`` class has one table from its checkpoint keys to electrolite's
(DESIGN.md rule 8; the tables are ``hf_tables.py``): ``{}`` stands for the layer index, ``None`` marks a key that is dropped
(a buffer, a tied copy, a head electrolite has no use for), and a key that is in no table is an
error listing it by name, as is a key the model needs that the checkpoint lacks. The electrolite
side is a flat state dict under fixed prefixes: ``encoder.`` (``model.Encoder``) and the heads
``mlm_head.``, ``rtd_head.``, ``sop_head.``, ``pooler.`` (``Pretrained``) or ``head.``
(``tasks.model.TaskModel``).

Reading and writing checkpoint directories (import, ``export_hf``) is ``hf_io.py``. What ``transformers`` cannot
express is a ``UserError`` naming it: ELECTRA has no cross-layer sharing, BERT no factorized
embeddings, ELECTRA's generator head always uses GELU. ALBERT always projects its embeddings,
so an encoder with ``embedding_size == hidden_size`` is written to ALBERT with an identity
projection, and read back from ALBERT only when the projection is the identity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from electrolite import config as cfgmod
from electrolite.config import EncoderConfig
from electrolite.errors import UserError
from electrolite.heads import MLMHead, Pooler, RTDHead, SOPHead
from electrolite.interop.hf_tables import ARCHITECTURES, ENCODERS, HEADS, TIED, WRITTEN_AS, Arch
from electrolite.model import Encoder
from electrolite.tasks.model import TaskModel

__all__ = ["ARCHITECTURES", "HF_DEFAULTS", "WRITTEN_AS", "Arch", "Pretrained", "build_model", "check_fits",
           "encoder_config_from_hf", "from_hf", "hf_config", "mlm_arch", "prefixed", "task_arch", "to_hf", "weight_map"]


def weight_map(arch: str) -> dict[str, str | None]:
    """The whole table of one ``transformers`` class: its checkpoint keys → electrolite keys (None: dropped)."""
    a = ARCHITECTURES[arch]
    table = {a.prefix + k: (None if v is None else "encoder." + v) for k, v in ENCODERS[a.model_type].items()}
    return {**table, **HEADS[arch]}


@lru_cache(maxsize=None)
def _compiled(arch: str) -> tuple[list[tuple[re.Pattern, str | None]], list[tuple[re.Pattern, str]]]:
    def pattern(key: str) -> re.Pattern:
        return re.compile(re.escape(key).replace(r"\{\}", r"(\d+)"))
    table = weight_map(arch)
    forward = [(pattern(k), v) for k, v in table.items()]
    backward = [(pattern(v), k) for k, v in table.items() if v is not None]
    return forward, backward


def _lookup(key: str, rules: Sequence[tuple[re.Pattern, str | None]]) -> tuple[bool, str | None]:
    for pat, target in rules:
        m = pat.fullmatch(key)
        if m:
            return True, None if target is None else target.format(*m.groups())
    return False, None


def _names(keys: list[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def to_hf(state: dict[str, torch.Tensor], arch: str, config: EncoderConfig) -> dict[str, torch.Tensor]:
    """electrolite weights (``encoder.``/head prefixes) → the checkpoint keys of ``transformers`` class `arch`.

    Args:
        state: flat state dict under ``encoder.`` and the arch's head prefixes.
        arch: a key of ARCHITECTURES.
        config: the encoder's config (ALBERT needs it for the identity projection).

    Raises:
        UserError: a weight the class has no place for (named), i.e. a part it cannot express.
    """
    _, backward = _compiled(arch)
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, tensor in state.items():
        found, hf_key = _lookup(key, backward)
        if not found:
            unplaced.append(key)
        else:
            assert hf_key is not None  # every backward rule has a target
            out[hf_key] = tensor.detach().clone().contiguous()
    if unplaced:
        raise UserError(f"{arch} has no place for these weights: {_names(unplaced)}")
    a = ARCHITECTURES[arch]
    proj = a.prefix + "encoder.embedding_hidden_mapping_in."
    if a.model_type == "albert" and proj + "weight" not in out:
        # ALBERT always projects E → H: an unfactorized encoder gets the identity.
        out[proj + "weight"] = torch.eye(config.hidden_size)
        out[proj + "bias"] = torch.zeros(config.hidden_size)
    for tied, source in TIED.get(arch, {}).items():
        out[tied] = out[source].clone()
    return out


# Checkpoints converted from TensorFlow before transformers 4 name LayerNorm parameters gamma and beta.
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def _modern_name(key: str, arch: Arch) -> str:
    """The key as today's transformers names it: legacy LayerNorm names, and a bare *Model's weights
    saved under the base model's prefix ("bert.embeddings..." for BertModel), as transformers accepts them."""
    for old, new in LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[:-len(old)] + new
    base = arch.model_type + "."
    if not arch.prefix and key.startswith(base):
        key = key[len(base):]
    return key


def from_hf(hf_state: dict[str, torch.Tensor], arch: str, config: EncoderConfig, where: str = "checkpoint"
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A ``transformers`` checkpoint's weights → electrolite keys; returns (state, dropped HF keys).

    Args:
        hf_state: the checkpoint's tensors.
        arch: its class (a key of ARCHITECTURES).
        config: the encoder config read from its config.json.
        where: the checkpoint's path, for messages.

    Keys are first renamed as transformers renames them on load (``_modern_name``).

    Raises:
        UserError: keys in no table (listed), untied output embeddings, or an ALBERT projection that
            is not the identity while embedding_size == hidden_size.
    """
    forward, _ = _compiled(arch)
    a = ARCHITECTURES[arch]
    hf_state = {_modern_name(k, a): v for k, v in hf_state.items()}
    proj = a.prefix + "encoder.embedding_hidden_mapping_in."
    if a.model_type == "albert" and config.embedding_size == config.hidden_size and proj + "weight" in hf_state:
        w, b = hf_state.pop(proj + "weight"), hf_state.pop(proj + "bias", torch.zeros(1))
        if not (torch.equal(w, torch.eye(config.hidden_size, dtype=w.dtype)) and not b.any()):
            raise UserError(f"{where}: embedding_size equals hidden_size but the ALBERT embedding projection "
                            "is not the identity; electrolite projects embeddings only when they are factorized")
    for tied, source in TIED.get(arch, {}).items():
        if tied in hf_state and source in hf_state and not torch.equal(hf_state[tied], hf_state[source]):
            raise UserError(f"{where}: {tied} is not tied to {source}; electrolite's output layer always "
                            "reuses them")
    out, dropped, unknown = {}, [], []
    for key, tensor in hf_state.items():
        found, ours = _lookup(key, forward)
        if not found:
            unknown.append(key)
        elif ours is None:
            dropped.append(key)
        else:
            out[ours] = tensor
    if unknown:
        raise UserError(f"{where}: unknown weights for {arch}: {_names(unknown)}")
    return out, dropped


# --- configs ------------------------------------------------------------------------------------

# Defaults of transformers' config classes: config.json files written with use_diff leave them out.
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0),
    "electra": dict(vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                    num_attention_heads=4, intermediate_size=1024, hidden_act="gelu", hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0),
    "albert": dict(vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                   num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384, inner_group_num=1,
                   hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                   max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
                   layer_norm_eps=1e-12, classifier_dropout_prob=0.1, pad_token_id=0),
}
_SHARED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                  "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")
# transformers' activation names → ours ("gelu_pytorch_tanh" is the same tanh approximation as "gelu_new").
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}


def encoder_config_from_hf(data: dict[str, Any], where: str = "config.json") -> EncoderConfig:
    """EncoderConfig from a BERT, ELECTRA or ALBERT config.json mapping (BERT: embedding_size = hidden_size)."""
    model_type = data.get("model_type")
    if model_type not in HF_DEFAULTS:
        raise UserError(f"{where}: model_type {model_type!r} is not supported (electrolite reads bert, "
                        "electra and albert checkpoints)")
    defaults = HF_DEFAULTS[model_type]
    d = {**defaults, **{k: v for k, v in data.items() if v is not None or k not in defaults}}
    if d.get("position_embedding_type") not in (None, "absolute"):
        raise UserError(f"{where}: position_embedding_type {d['position_embedding_type']!r} cannot be expressed "
                        "(electrolite has absolute position embeddings only)")
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise UserError(f"{where}: a decoder or cross-attention model cannot be expressed (electrolite encoders only)")
    if model_type == "albert" and d.get("inner_group_num", 1) != 1:
        raise UserError(f"{where}: inner_group_num {d['inner_group_num']} cannot be expressed "
                        "(electrolite shares one layer per group)")
    if d["hidden_act"] not in HF_ACTIVATIONS:
        raise UserError(f"{where}: hidden_act {d['hidden_act']!r} cannot be expressed "
                        f"(supported: {', '.join(HF_ACTIVATIONS)})")
    fields = {k: d[k] for k in _SHARED_FIELDS}
    fields["hidden_act"] = HF_ACTIVATIONS[d["hidden_act"]]
    fields["pad_token_id"] = d["pad_token_id"] if d["pad_token_id"] is not None else 0
    fields["embedding_size"] = d["hidden_size"] if model_type == "bert" else d["embedding_size"]
    fields["num_hidden_groups"] = d["num_hidden_groups"] if model_type == "albert" else d["num_hidden_layers"]
    try:
        return cfgmod.build(EncoderConfig, fields, "model")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def hf_config(config: EncoderConfig, arch: str) -> dict[str, Any]:
    """config.json fields of ``transformers`` class `arch` for an electrolite encoder.

    Raises:
        UserError: the class cannot express the encoder (ELECTRA: layer sharing; BERT: factorized
            embeddings or sharing), naming what.
    """
    a = ARCHITECTURES[arch]
    shared = config.num_hidden_groups < config.num_hidden_layers
    if shared and a.model_type != "albert":
        raise UserError(f"{arch} cannot express cross-layer sharing (num_hidden_groups {config.num_hidden_groups} "
                        f"< num_hidden_layers {config.num_hidden_layers}); only ALBERT shares layers")
    if a.model_type == "bert" and config.embedding_size != config.hidden_size:
        raise UserError(f"{arch} cannot express factorized embeddings (embedding_size {config.embedding_size} "
                        f"!= hidden_size {config.hidden_size})")
    fields = {k: getattr(config, k) for k in _SHARED_FIELDS}
    fields["model_type"] = a.model_type
    if a.model_type != "bert":
        fields["embedding_size"] = config.embedding_size
    if a.model_type == "albert":
        fields.update(num_hidden_groups=config.num_hidden_groups, inner_group_num=1,
                      classifier_dropout_prob=config.hidden_dropout_prob)
    return fields


# --- choosing a class ---------------------------------------------------------------------------

def _kinds(config: EncoderConfig) -> tuple[bool, bool]:
    return config.num_hidden_groups < config.num_hidden_layers, config.embedding_size != config.hidden_size


def mlm_arch(config: EncoderConfig, sop: bool) -> str:
    """BERT's masked LM → BertForMaskedLM; factorized, shared or with SOP → AlbertFor{PreTraining,MaskedLM}."""
    shared, factorized = _kinds(config)
    if sop:
        return "AlbertForPreTraining"
    return "AlbertForMaskedLM" if shared or factorized else "BertForMaskedLM"


def task_arch(config: EncoderConfig, family: str, head: str) -> str:
    """The ``transformers`` class of a fine-tuned task model (family: classification, regression, tagging, qa)."""
    kind = {"classification": "SequenceClassification", "regression": "SequenceClassification",
            "tagging": "TokenClassification", "qa": "QuestionAnswering"}[family]
    shared, factorized = _kinds(config)
    if head == "electra" and not shared:
        return f"ElectraFor{kind}"
    if head == "electra" and kind == "SequenceClassification":
        raise UserError(f"the ELECTRA classification head (dense, GELU, out_proj) on a shared-layer encoder "
                        f"(num_hidden_groups {config.num_hidden_groups} < num_hidden_layers "
                        f"{config.num_hidden_layers}) cannot be expressed: ElectraForSequenceClassification "
                        "has no layer sharing and AlbertForSequenceClassification has a tanh pooler head")
    return f"AlbertFor{kind}" if shared or factorized else f"BertFor{kind}"


# --- electrolite modules for a class ------------------------------------------------------------

class Pretrained(nn.Module):
    """An encoder with the pre-training heads of one ``transformers`` class, under electrolite's names.

    Args:
        config: the encoder config.
        parts: any of mlm_head (tied to the word embeddings), rtd_head, sop_head, pooler.
    """

    def __init__(self, config: EncoderConfig, parts: tuple[str, ...]):
        super().__init__()
        self.encoder = Encoder(config)
        if "mlm_head" in parts:
            self.mlm_head = MLMHead(config, self.encoder.embeddings.word_embeddings)
        if "rtd_head" in parts:
            self.rtd_head = RTDHead(config)
        if "sop_head" in parts:
            self.sop_head = SOPHead(config)
        if "pooler" in parts:
            self.pooler = Pooler(config)


def build_model(arch: str, config: EncoderConfig, num_labels: int = 0, regression: bool = False) -> Pretrained | TaskModel:
    """The electrolite module whose state dict `arch`'s table maps to: Pretrained or TaskModel."""
    a = ARCHITECTURES[arch]
    if not a.family:
        return Pretrained(config, a.parts)
    family = "regression" if regression else a.family
    return TaskModel(config, family, num_labels, a.head)


def prefixed(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def check_fits(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], arch: str, where: str,
               prefix: str = "") -> None:
    """Raise UserError unless `state` has exactly the keys and shapes of `expected` (a module's state dict).

    Missing weights are named by their Hugging Face keys; `prefix` is what `expected`'s keys lack
    of the full electrolite keys ("encoder." for a bare Encoder).
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        _, backward = _compiled(arch)
        parts = []
        if missing:
            parts.append(f"missing weights for {arch}: "
                         + _names([_lookup(prefix + k, backward)[1] or k for k in missing]))
        if extra:
            parts.append(f"weights that config.json has no place for: {_names([prefix + k for k in extra])}")
        raise UserError(f"{where}: " + "; ".join(parts))
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        raise UserError(f"{where}: weights whose shape does not fit config.json: " + ", ".join(
            f"{prefix}{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in wrong[:6]))
