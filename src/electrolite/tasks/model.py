"""Task models (encoder + head) and loading encoders from what `--model` may name.

``--model`` accepts an electrolite pre-training run (the discriminator for ELECTRA, the
encoder otherwise), a fine-tuned task dir, and (hf.py) a Hugging Face checkpoint dir.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from electrolite import checkpoint, config as cfgmod
from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.config import EncoderConfig, PretrainConfig
from electrolite.errors import UserError
from electrolite.heads import QuestionAnsweringHead, SequenceClassificationHead, TokenClassificationHead
from electrolite.model import Encoder
from electrolite.objectives import build_objective
from electrolite.tokenizer import load_tokenizer

IGNORE = -100


class TaskModel(nn.Module):
    """An encoder with the head of a task family.

    Args:
        encoder_config: the encoder's config.
        family: classification, regression, tagging or qa.
        num_labels: classes (classification, tagging).
        head: classification head layout, "electra" or "pooler".
    """

    def __init__(self, encoder_config: EncoderConfig, family: str, num_labels: int = 0, head: str = "electra"):
        super().__init__()
        self.family = family
        self.encoder = Encoder(encoder_config)
        if family == "classification":
            self.head = SequenceClassificationHead(encoder_config, num_labels, head)
        elif family == "regression":
            self.head = SequenceClassificationHead(encoder_config, 1, head)
        elif family == "tagging":
            self.head = TokenClassificationHead(encoder_config, num_labels)
        elif family == "qa":
            self.head = QuestionAnsweringHead(encoder_config)
        else:
            raise ValueError(f"unknown task family {family!r}")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits for a padded batch, and the loss when the batch carries labels.

        Returns:
            classification (B, C) / regression (B,) / tagging (B, T, C) ``logits``; qa ``start_logits``
            and ``end_logits`` (B, T), padding at -inf; ``loss`` when labels are present.
        """
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out: dict[str, torch.Tensor] = {}
        if self.family == "qa":
            start, end = self.head(hidden)
            pad = ~batch["attention_mask"].bool()
            out["start_logits"] = start.float().masked_fill(pad, float("-inf"))
            out["end_logits"] = end.float().masked_fill(pad, float("-inf"))
            if "start_positions" in batch:
                out["loss"] = (F.cross_entropy(out["start_logits"], batch["start_positions"])
                               + F.cross_entropy(out["end_logits"], batch["end_positions"])) / 2
            return out
        logits = self.head(hidden).float()
        if self.family == "regression":
            logits = logits.squeeze(-1)
        out["logits"] = logits
        if "labels" in batch:
            labels = batch["labels"]
            if self.family == "regression":
                out["loss"] = F.mse_loss(logits, labels.float())
            elif self.family == "tagging":
                out["loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                              ignore_index=IGNORE)
            else:
                out["loss"] = F.cross_entropy(logits, labels)
        return out


def layer_depths(model: TaskModel) -> tuple[dict[str, int], int]:
    """Depth of every parameter for layer-wise LR decay (ELECTRA's assignment).

    Embeddings (and their projection) are depth 0, layer i is i + 1 (a shared group takes the
    depth of the last layer that applies it), the head is num_layers + 2. Returns (depths, max depth).
    """
    stack = model.encoder.encoder
    n = stack.num_hidden_layers
    group_depth = {}
    for i in range(n):
        group_depth[stack.group_of(i)] = i + 1
    depths = {}
    for name, _ in model.named_parameters():
        if name.startswith("encoder.embeddings") or name.startswith("encoder.embeddings_project"):
            depths[name] = 0
        elif name.startswith("encoder.encoder.layer."):
            depths[name] = group_depth[int(name.split(".")[3])]
        else:
            depths[name] = n + 2
    return depths, n + 2


@dataclass
class LoadedEncoder:
    """An encoder taken from `--model`: its config, weights and tokenizer."""

    config: EncoderConfig
    state: dict[str, torch.Tensor]
    """Encoder weights with keys relative to the Encoder module."""
    tokenizer: Tokenizer
    head: str
    """The classification head layout that suits the source ("electra" or "pooler")."""
    source: str
    """What was loaded, for the record: "pretrain-run", "task-dir" or "hf"."""
    task_dir: dict[str, Any] | None = None
    """The task dir's config.yaml when --model was a fine-tuned task dir."""
    pooler: dict[str, torch.Tensor] | None = None
    """Pre-trained pooler weights (dense.weight, dense.bias) a "pooler" classification head starts from
    (Hugging Face BERT/ALBERT checkpoints that have them); None: the head starts fresh."""
    family: str = "electra"
    """The checkpoint's family, which picks the fine-tuning recipe: electra, bert or albert."""


def load_encoder(path: str, action: str = "finetune") -> LoadedEncoder:
    """Read the encoder from a pre-training run, a task dir or a Hugging Face checkpoint dir (`action`, e.g.
    "finetune" or "pretrain --init", names the command in the error for anything else)."""
    art = expect(open_dir(path), (RunDir, TaskDir, HFDir),
                 f"{action} needs a pre-training run, a fine-tuned task dir or a Hugging Face checkpoint")
    if isinstance(art, TaskDir):
        return _load_task_dir_encoder(art.root, art.data)
    if isinstance(art, RunDir):
        return _load_pretrain_encoder(art.root, art.config())
    from electrolite import hf  # optional: needs the hf extra
    return hf.load_encoder(art.root)


def load_pretrain_objective(root: Path, cfg: PretrainConfig) -> nn.Module:
    """The whole pre-training objective module of a run (generator, discriminator, heads), weights loaded."""
    weights = root / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{root}: the run has no model.safetensors yet (pre-train at least one checkpoint)")
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    checkpoint.load_weights(model, weights)
    return model.eval()


def _load_pretrain_encoder(root: Path, cfg: PretrainConfig) -> LoadedEncoder:
    model = load_pretrain_objective(root, cfg)
    encoder = model.discriminator if cfg.objective.name == "electra" else model.encoder
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if cfg.objective.name == "electra":
        family = "electra"
    else:  # masked LM: ALBERT's when it learned sentence order or shares its layers
        family = "albert" if cfg.objective.sop or cfg.model.num_hidden_groups < cfg.model.num_hidden_layers else "bert"
    return LoadedEncoder(cfg.model, state, load_tokenizer(str(root / "tokenizer.json")),
                         "electra" if family == "electra" else "pooler", "pretrain-run", family=family)


def task_dir_parts(data: dict[str, Any], path: str | Path = "config.yaml") -> tuple[EncoderConfig, dict[str, Any]]:
    """(encoder config, task record) from a task dir's config.yaml mapping.

    Raises:
        UserError: the mapping lacks what loading the model needs (naming ``path``, the file it came from).
    """
    encoder, record = data.get("encoder"), data.get("task_model")
    if not isinstance(encoder, dict) or not isinstance(record, dict):
        raise UserError(f"{path}: not the config of a fine-tuned task dir (no encoder and task_model mappings)")
    labels = record.get("labels")
    if (record.get("family") not in ("classification", "regression", "tagging", "qa")
            or record.get("head") not in ("electra", "pooler")
            or not (labels is None or isinstance(labels, list) and all(isinstance(x, str) for x in labels))):
        raise UserError(f"{path}: task_model needs family (classification, regression, tagging or qa), "
                        "head (electra or pooler) and a list of labels")
    try:
        return cfgmod.build(EncoderConfig, encoder, "encoder"), record
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _load_task_dir_encoder(root: Path, data: dict[str, Any]) -> LoadedEncoder:
    model, record = load_task_model(root, data)
    state = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    enc_cfg, _ = task_dir_parts(data, root / "config.yaml")
    family = record.get("checkpoint_family") or ("electra" if record["head"] == "electra" else "bert")  # older dirs
    return LoadedEncoder(enc_cfg, state, load_tokenizer(str(root / "tokenizer.json")), record["head"],
                         "task-dir", data, family=family)


def load_task_model(root: Path, data: dict[str, Any] | None = None) -> tuple[TaskModel, dict[str, Any]]:
    """A fine-tuned task dir's model (eval mode) and its task record (task, family, labels, head)."""
    if data is None:
        data = expect(open_dir(root), (TaskDir,), "this needs a fine-tuned task dir").data
    enc_cfg, record = task_dir_parts(data, root / "config.yaml")
    if not (root / "model.safetensors").is_file():  # before building a model of whatever size the file says
        raise UserError(f"{root / 'model.safetensors'}: no such weights file")
    labels = record.get("labels") or []
    model = TaskModel(enc_cfg, record["family"], len(labels), record["head"])
    checkpoint.load_weights(model, root / "model.safetensors")
    return model.eval(), record


def from_scratch(loaded: LoadedEncoder, seed: int) -> LoadedEncoder:
    """The same architecture and tokenizer with freshly initialised weights (no pre-training)."""
    torch.manual_seed(seed)
    state = {k: v.detach().clone() for k, v in Encoder(loaded.config).state_dict().items()}
    return dataclasses.replace(loaded, state=state, source="random-init", pooler=None)


def new_task_model(loaded: LoadedEncoder, family: str, num_labels: int, max_length: int,
                   head: str = "auto") -> TaskModel:
    """A task model whose encoder starts from `loaded`; the head is freshly initialised, except a pooler
    head's pooler when `loaded` carries pre-trained pooler weights. `head` (electra or pooler) overrides
    the layout `loaded` suits ("auto")."""
    config = loaded.config
    if max_length > config.max_position_embeddings:
        raise UserError(f"max length {max_length} exceeds the model's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    head = loaded.head if head == "auto" else head
    model = TaskModel(dataclasses.replace(config), family, num_labels, head)
    missing, unexpected = model.encoder.load_state_dict(loaded.state, strict=False)
    # The word-embedding padding row and nothing else may be absent; any other gap is a bug.
    if missing or unexpected:
        raise UserError(f"encoder weights do not fit (missing: {', '.join(missing) or '-'}; "
                        f"unexpected: {', '.join(unexpected) or '-'})")
    if loaded.pooler and family in ("classification", "regression") and head == "pooler":
        model.head.pooler.load_state_dict(loaded.pooler)  # after the fresh init: the RNG draws are unchanged
    return model
