"""Task models (encoder + head) and loading encoders from what `--model` may name.

``--model`` accepts an electrolite pre-training run (the discriminator for ELECTRA, the
encoder otherwise), a fine-tuned task dir, and (hf.py) a Hugging Face checkpoint dir.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from electrolite.config import EncoderConfig
from electrolite.errors import UserError
from electrolite.heads import IGNORE_INDEX, QuestionAnsweringHead, SequenceClassificationHead, TokenClassificationHead
from electrolite.model import Encoder


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
        self.head: SequenceClassificationHead | TokenClassificationHead | QuestionAnsweringHead
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
                                              ignore_index=IGNORE_INDEX)
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
        pooled = cast(SequenceClassificationHead, model.head)  # the head of classification and regression
        pooled.pooler.load_state_dict(loaded.pooler)  # after the fresh init: the RNG draws are unchanged
    return model
