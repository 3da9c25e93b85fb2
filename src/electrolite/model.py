"""The encoder: BERT/ELECTRA post-LayerNorm transformer with ALBERT's factorization and sharing.

Module names follow Hugging Face's ELECTRA (``embeddings.word_embeddings``, ``embeddings_project``,
``encoder.layer.{i}.attention.self.query`` ...), so conversion to and from ``transformers`` is a
key map (hf.py). With ``num_hidden_groups < num_hidden_layers``, ``encoder.layer`` holds one set of
weights per group and layer ``i`` applies group ``i * groups // layers`` (ALBERT's assignment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from electrolite.config import EncoderConfig

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class Embeddings(nn.Module):
    """Token + position + segment embeddings, LayerNorm, dropout (all of width embedding_size)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        e = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, e)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, e)
        self.LayerNorm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {t} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:t]  # (B, T, E)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, h = x.shape
        # One matmul for q, k, v: the weights stay separate (HF names) but the product is fused.
        w = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(x, w, bias).view(b, t, 3, self.num_heads, h // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        dropout_p = self.dropout_p if self.training else 0.0
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            out = cpu_bf16_attention(q, k, v, attn_mask, dropout_p)
        else:  # fp32 on CPU: the fused kernel is fastest; CUDA: flash / memory-efficient kernels
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return out.transpose(1, 2).reshape(b, t, h)  # (B, T, H)


def cpu_bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                       dropout_p: float) -> torch.Tensor:
    """Attention for bf16 inputs on CPU, computed in fp32 batched products.

    torch's fused CPU attention kernel is slow for bf16 (forward + backward of a (32, 4, 128, 64)
    batch: 100 CPU-ms), and per-head (128 × 64) products are too small for AMX tiles to pay, so
    the fp32 path of the math kernel wins (44 CPU-ms); BENCHMARKS.md has the profile.
    """
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


class SelfOutput(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, attn_mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Output(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Layer(nn.Module):
    """One post-LayerNorm transformer block: attention, then feed-forward, each with residual + LN."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, attn_mask)
        return self.output(self.intermediate(a), a)


class Stack(nn.Module):
    """num_hidden_layers applications of num_hidden_groups weight sets."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_hidden_layers = config.num_hidden_layers
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_groups))

    def group_of(self, i: int) -> int:
        return i * len(self.layer) // self.num_hidden_layers

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        states = [x] if output_hidden_states else []
        for i in range(self.num_hidden_layers):
            x = self.layer[self.group_of(i)](x, attn_mask)
            if output_hidden_states:
                states.append(x)
        return x, states


class Encoder(nn.Module):
    """Embeddings (+ projection to hidden_size when factorized) and the transformer stack.

    Args:
        config: the encoder's config.
        embeddings: an existing Embeddings module to share (ELECTRA's generator and
            discriminator share token, position and type embeddings and their LayerNorm).
    """

    def __init__(self, config: EncoderConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.config = config
        self.embeddings = embeddings if embeddings is not None else Embeddings(config)
        if self.embeddings.word_embeddings.embedding_dim != config.embedding_size:
            raise ValueError("shared embeddings must have the config's embedding_size")
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = Stack(config)
        for name, child in self.named_children():
            if not (name == "embeddings" and embeddings is not None):  # shared: already initialised
                child.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode token ids.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), nonzero/True on real tokens; None attends everywhere.
            token_type_ids: (B, T) segment ids; None means all 0.
            output_hidden_states: also return the embedding output and every layer's output.

        Returns:
            (B, T, H) last hidden states, or (last, [embedding output, layer 1, ..., layer L]).
        """
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)  # (B, T, E) -> (B, T, H)
        attn_mask = None
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            # (B, 1, 1, T): True where a key may be attended to; broadcast over heads and queries.
            # Eager without padding (packed rows): no mask, so attention takes its unmasked kernels;
            # traced (compile, ONNX export): always the mask, no data-dependent branch.
            attn_mask = attention_mask.bool()[:, None, None, :]
        x, states = self.encoder(x, attn_mask, output_hidden_states)
        return (x, states) if output_hidden_states else x


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, unit LayerNorm, zero padding row."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())

