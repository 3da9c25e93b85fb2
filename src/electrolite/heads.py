"""Small heads on top of the encoder, with Hugging Face's module names.

- MLMHead: ELECTRA's ``generator_predictions`` + ``generator_lm_head`` (BERT's
  ``cls.predictions``, ALBERT's ``predictions``): dense H→E, activation, LayerNorm(E), then a
  decoder E→V whose weight is the word-embedding matrix (tied) with its own bias.
- RTDHead: ELECTRA's ``discriminator_predictions``: dense H→H, activation, dense H→1.
- SOPHead: ALBERT's pooler (dense + tanh on [CLS]) and ``sop_classifier``: 2-way classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from electrolite.config import EncoderConfig
from electrolite.model import ACTIVATIONS, init_weights

IGNORE_INDEX = -100  # the label of positions that carry no loss (unmasked, specials, continuation pieces, padding)


class MLMHead(nn.Module):
    """Masked-LM output for selected positions only.

    Args:
        config: the encoder config the head sits on (hidden_size in, embedding_size out).
        word_embeddings: the (V, E) embedding whose weight the decoder reuses.
    """

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Embedding):
        super().__init__()
        e = word_embeddings.embedding_dim
        self.dense = nn.Linear(config.hidden_size, e)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self.word_embeddings = [word_embeddings]  # a list: not registered twice as a submodule
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states at the selected positions → (N, V) logits."""
        x = self.LayerNorm(self.act(self.dense(hidden)))  # (N, E)
        return nn.functional.linear(x, self.word_embeddings[0].weight, self.bias)


class RTDHead(nn.Module):
    """Replaced-token detection: one logit per token (positive = replaced)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) → (B, T) logits."""
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)


class Pooler(nn.Module):
    """BERT/ALBERT pooler: dense + tanh on the first ([CLS]) position."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class SOPHead(nn.Module):
    """Sentence-order prediction: pooled [CLS] → 2 logits (0 = in order, 1 = swapped)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) → (B, 2)."""
        return self.classifier(self.dropout(self.pooler(hidden)))


# --- fine-tuning heads -------------------------------------------------------------------------

class SequenceClassificationHead(nn.Module):
    """Sentence(-pair) classification or regression from the [CLS] position.

    Two layouts, matching the checkpoints Hugging Face users expect from each family:
    ``electra`` (ElectraClassificationHead: dropout, dense, GELU, dropout, out_proj) and
    ``pooler`` (BERT/ALBERT: tanh pooler, dropout, classifier).

    Args:
        config: the encoder config.
        num_labels: classes (1 for regression).
        kind: "electra" or "pooler".
        dropout: classifier dropout (defaults to the encoder's hidden dropout).
    """

    def __init__(self, config: EncoderConfig, num_labels: int, kind: str = "electra", dropout: float | None = None):
        super().__init__()
        if kind not in ("electra", "pooler"):
            raise ValueError(f"unknown classification head kind {kind!r}")
        self.kind = kind
        p = config.hidden_dropout_prob if dropout is None else dropout
        self.dropout = nn.Dropout(p)
        if kind == "electra":
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.act = ACTIVATIONS["gelu"]
            self.out_proj = nn.Linear(config.hidden_size, num_labels)
        else:
            self.pooler = Pooler(config)
            self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) → (B, num_labels)."""
        if self.kind == "electra":
            x = self.dropout(hidden[:, 0])
            x = self.dropout(self.act(self.dense(x)))
            return self.out_proj(x)
        return self.classifier(self.dropout(self.pooler(hidden)))


class TokenClassificationHead(nn.Module):
    """Per-token tags: dropout, classifier (as every HF *ForTokenClassification)."""

    def __init__(self, config: EncoderConfig, num_labels: int, dropout: float | None = None):
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) → (B, T, num_labels)."""
        return self.classifier(self.dropout(hidden))


class QuestionAnsweringHead(nn.Module):
    """Extractive QA: start and end logits per token (HF ``qa_outputs``)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H) → start (B, T), end (B, T)."""
        start, end = self.qa_outputs(hidden).unbind(-1)
        return start, end
