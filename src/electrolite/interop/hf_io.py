"""Reading Hugging Face checkpoint directories into electrolite (writing them: ``hf_export.py``).

The key tables, config mapping and class choice live in ``hf.py``; this module touches disk.
``load_encoder``, ``load_hf_model`` and ``load_hf_task_model`` read config.json and model.safetensors
(or pytorch_model.bin with ``weights_only``, or a sharded index) and need only torch and safetensors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from electrolite.config import EncoderConfig
from electrolite.data.tokenizer import load_tokenizer
from electrolite.errors import UserError
from electrolite.interop.hf import (
    ARCHITECTURES,
    Pretrained,
    build_model,
    check_fits,
    encoder_config_from_hf,
    from_hf,
)
from electrolite.model import Encoder
from electrolite.tasks import family_of
from electrolite.tasks.model import LoadedEncoder, TaskModel


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], arch: str, where: str) -> None:
    check_fits(module.state_dict(), state, arch, where)
    module.load_state_dict(state, strict=True)


# --- reading Hugging Face checkpoint directories ------------------------------------------------

@dataclass
class Checkpoint:
    """A Hugging Face checkpoint directory, read."""

    root: Path
    data: dict[str, Any]
    """config.json."""
    arch: str
    config: EncoderConfig
    state: dict[str, torch.Tensor]
    """The checkpoint's tensors under their Hugging Face keys (floating point as float32)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
                    return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except Exception as e:  # safetensors, pickle (weights_only) and zip errors have no common base
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path}: cannot read weights ({e.__class__.__name__}: {first})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return state


def read_weights(root: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, pytorch_model.bin (weights_only), or their sharded index; floats as float32."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (root / name).is_file():
            state = _read_weight_file(root / name)
            break
        index = root / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            state = {}
            for shard in shards:
                state.update(_read_weight_file(root / shard))
            break
    else:
        raise UserError(f"{root}: no model.safetensors or pytorch_model.bin")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a BERT, ELECTRA or ALBERT checkpoint directory (config.json + weights)."""
    root = Path(path)
    data = _read_json(root / "config.json")
    where = str(root / "config.json")
    config = encoder_config_from_hf(data, where)
    names = data.get("architectures") or []
    known = [n for n in names if n in ARCHITECTURES]
    if names and not known:
        raise UserError(f"{where}: architecture {names[0]} is not supported (supported: "
                        f"{', '.join(ARCHITECTURES)})")
    arch = known[0] if known else {"bert": "BertModel", "electra": "ElectraModel", "albert": "AlbertModel"}[
        data["model_type"]]
    if ARCHITECTURES[arch].model_type != data["model_type"]:
        raise UserError(f"{where}: architecture {arch} does not match model_type {data['model_type']!r}")
    return Checkpoint(root, data, arch, config, read_weights(root))


def load_hf_tokenizer(root: Path) -> Tokenizer:
    """tokenizer.json or vocab.txt (tokenizer.load_tokenizer); else, with transformers, its fast tokenizer."""
    if (root / "tokenizer.json").is_file() or (root / "vocab.txt").is_file():
        tok = load_tokenizer(str(root))
    else:
        try:
            import transformers
        except ImportError:
            raise UserError(f"{root}: no tokenizer.json or vocab.txt (transformers could convert others: "
                            "pip install 'electrolite[hf]')") from None
        try:
            hf_tok = transformers.AutoTokenizer.from_pretrained(str(root))
        except Exception as e:  # noqa: BLE001 - anything transformers raises is a tokenizer it cannot read
            raise UserError(f"{root}: no tokenizer.json or vocab.txt, and transformers cannot load its "
                            f"tokenizer ({e.__class__.__name__})") from None
        if not getattr(hf_tok, "is_fast", False):
            raise UserError(f"{root}: no tokenizer.json or vocab.txt and no fast tokenizer to convert")
        tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    tok.no_padding()  # saved pipelines (sentence-transformers) often pad and truncate to their own length
    tok.no_truncation()
    return tok


def _check_vocab(tok: Tokenizer, config: EncoderConfig, root: Path) -> None:
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > config.vocab_size:
        raise UserError(f"{root}: the tokenizer has {n} tokens but the model only {config.vocab_size}")


def load_hf_model(path: str | os.PathLike) -> tuple[Pretrained | TaskModel, Checkpoint]:
    """A Hugging Face checkpoint as its electrolite module (Pretrained or TaskModel, eval mode)."""
    ckpt = read_checkpoint(path)
    a = ARCHITECTURES[ckpt.arch]
    where = str(ckpt.root)
    if ckpt.arch == "ElectraForMaskedLM" and ckpt.config.hidden_act != "gelu":
        raise UserError(f"{where}: ElectraForMaskedLM's generator head always uses gelu, the encoder "
                        f"{ckpt.config.hidden_act}; electrolite's MLM head uses the encoder's activation")
    state, _ = from_hf(ckpt.state, ckpt.arch, ckpt.config, where)
    num_labels, regression = 0, False
    if a.family and family_of(a.family).hf_labelled:  # classification (or regression) and tagging
        num_labels = len(ckpt.data.get("id2label") or {}) or int(ckpt.data.get("num_labels", 2))
        regression = family_of(a.family).hf_regression(ckpt.data, num_labels)
    module = build_model(ckpt.arch, ckpt.config, num_labels, regression)
    _load_state(module, state, ckpt.arch, where)
    return module.eval(), ckpt


def load_hf_encoder(path: str | os.PathLike) -> LoadedEncoder:
    """The encoder of a Hugging Face checkpoint dir with its tokenizer, for ``finetune --model HFDIR``.

    Heads in the checkpoint are dropped: fine-tuning puts a fresh one on top (ELECTRA's layout for
    ELECTRA checkpoints, the pooler layout for BERT and ALBERT). A BERT or ALBERT pooler the
    checkpoint has is kept for that head to start from, as ``*ForSequenceClassification.from_pretrained``
    does; its classifier is fresh.
    """
    ckpt = read_checkpoint(path)
    state, _ = from_hf(ckpt.state, ckpt.arch, ckpt.config, str(ckpt.root))
    encoder_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    with torch.device("meta"):  # shapes only, no memory
        expected = Encoder(ckpt.config).state_dict()
    check_fits(expected, encoder_state, ckpt.arch, str(ckpt.root), prefix="encoder.")
    tok = load_hf_tokenizer(ckpt.root)
    _check_vocab(tok, ckpt.config, ckpt.root)
    head = ARCHITECTURES[ckpt.arch].head
    pooler = None
    if head == "pooler":  # BertModel / AlbertModel, *ForSequenceClassification, AlbertForPreTraining (SOP)
        for where in ("pooler.", "head.pooler.", "sop_head.pooler."):
            pooler = {k[len(where):]: v for k, v in state.items() if k.startswith(where)} or None
            if pooler:
                break
    return LoadedEncoder(ckpt.config, encoder_state, tok, head, "hf", pooler=pooler,
                         family=ARCHITECTURES[ckpt.arch].model_type)


def task_record(ckpt: Checkpoint, module: TaskModel) -> dict[str, Any]:
    """The task record (as in a task dir's config.yaml) of a fine-tuned Hugging Face checkpoint.

    A checkpoint electrolite exported carries its record in config.json (``electrolite_task``);
    others get the generic task of their family.
    """
    if isinstance(ckpt.data.get("electrolite_task"), dict):
        return dict(ckpt.data["electrolite_task"])
    family = family_of(module.family)
    id2label = ckpt.data.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    record = family.hf_record(labels, ckpt.config.max_position_embeddings)
    record["head"] = ARCHITECTURES[ckpt.arch].head
    return record


def load_hf_task_model(path: str | os.PathLike):
    """A fine-tuned Hugging Face checkpoint (*For{Sequence,Token}Classification, *ForQuestionAnswering)
    as (TaskModel in eval mode, task record)."""
    module, ckpt = load_hf_model(path)
    if not ARCHITECTURES[ckpt.arch].family:
        raise UserError(f"{ckpt.root} is a {ckpt.arch} checkpoint, not a fine-tuned task model "
                        "({Electra,Bert,Albert}For{Sequence,Token}Classification or *ForQuestionAnswering)")
    model = cast(TaskModel, module)  # build_model's module for an architecture with a family
    return model, task_record(ckpt, model)
