"""Training FLOPs accounting, in two conventions.

**Paper FLOPs** follow the ELECTRA paper (Clark et al., 2020, Table 1) and its
``flops_computation.py``, so our runs can be placed on the same compute axis as the
published BERT/ELECTRA/ALBERT rows: 2 FLOPs per multiply-add, embedding lookups counted as
dense one-hot matrix products, small per-element costs for dropout, layer norm, GELU and
softmax, the MLM output softmax on ``output_frac`` of the positions, and training counted as
2 × forward ("backward costs the same as forward").

**Model FLOPs** are for hardware utilisation (MFU): 2 FLOPs per multiply-add of every matrix
product that actually runs, elementwise work ignored, training counted as 3 × forward (the
backward pass computes a gradient for both the input and the weight of each product). The
MLM head runs only on the masked positions; the RTD head runs on every position.

In both conventions cross-layer sharing (ALBERT's ``num_hidden_groups``) changes nothing:
a shared layer still runs once per layer. A factorized embedding (``embedding_size !=
hidden_size``) adds the ``embedding_size → hidden_size`` projection but shrinks the MLM output
layer, which is where its saving comes from.

Example::

    report = estimate(disc, gen, "electra", sop=False, steps=1_000_000, batch_size=128,
                      seq_len=128, mask_prob=0.15)
    print(format_flops(report.paper_flops))  # 1.29e18 for ELECTRA-Small
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Protocol

__all__ = [
    "EncoderShape",
    "FlopsReport",
    "estimate",
    "format_flops",
    "model_forward_flops",
    "model_train_flops",
    "paper_train_flops",
]

# Per-element costs of the paper convention (google-research/electra flops_computation.py).
# They only touch O(hidden) activations, so they barely move the totals; they are kept so our
# figures equal the published ones.
DROPOUT_FLOPS = 4  # random number, compare, apply mask, rescale by 1 / (1 - p)
LAYER_NORM_FLOPS = 5  # mean, variance (square + sum), bias, scale
ACTIVATION_FLOPS = 8  # tanh-approximated GELU
SOFTMAX_FLOPS = 5  # max-subtract, exp, sum, divide

# The paper's output_frac: the MLM softmax runs on 15.625% (= 20/128) of positions.
PAPER_OUTPUT_FRAC = 0.15625

Head = Literal["none", "rtd", "mlm", "classification"]
_HEADS = ("none", "rtd", "mlm", "classification")


class EncoderShape(Protocol):
    """What FLOPs accounting reads from an encoder config (``config.EncoderConfig`` fits).

    All fields are resolved ints. ``num_hidden_groups`` is deliberately absent: sharing
    parameters across layers does not change the compute.
    """

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int


@dataclasses.dataclass(frozen=True)
class _Shape:
    """The numbers we need, with the embedding width overridable (tied ELECTRA embeddings)."""

    v: int  # vocab size
    e: int  # embedding size
    h: int  # hidden size
    layers: int
    heads: int
    i: int  # intermediate (FFN) size
    types: int  # token-type vocab size

    @classmethod
    def of(cls, cfg: EncoderShape, embedding_size: int | None = None) -> _Shape:
        return cls(
            v=int(cfg.vocab_size),
            e=int(cfg.embedding_size if embedding_size is None else embedding_size),
            h=int(cfg.hidden_size),
            layers=int(cfg.num_hidden_layers),
            heads=int(cfg.num_attention_heads),
            i=int(cfg.intermediate_size),
            types=int(cfg.type_vocab_size),
        )


def _check_sizes(**sizes: float) -> None:
    for name, value in sizes.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


# ---------------------------------------------------------------------------------------------
# Paper convention. Every function returns forward FLOPs for ONE sequence of length s.
# ---------------------------------------------------------------------------------------------


def _paper_layer(sh: _Shape, s: int) -> float:
    h, i = sh.h, sh.i
    kqv = h  # heads × head_size == hidden in our encoder
    per_position = (
        3 * 2 * h * kqv  # Q, K, V projections
        + 3 * kqv  # their biases
        + 2 * kqv * s  # this position's query against s keys (all heads together)
        + (SOFTMAX_FLOPS + DROPOUT_FLOPS + 1) * s * sh.heads  # softmax, dropout, 1/sqrt(d) scale
        + 2 * h * s  # attention-weighted sum of s values
        + 2 * h * h + h  # attention output projection + bias
        + DROPOUT_FLOPS * h + h  # dropout, residual add
        # The reference counts this layer norm once per position, not per element (the FFN's
        # below is per element). Kept as is so our totals equal the published ones.
        + LAYER_NORM_FLOPS
        + 2 * h * i + i + ACTIVATION_FLOPS * i  # FFN in: matmul, bias, GELU
        + 2 * i * h + h  # FFN out: matmul, bias
        + DROPOUT_FLOPS * h + h + LAYER_NORM_FLOPS * h  # dropout, residual add, layer norm
    )
    return per_position * s


def _paper_embeddings(sh: _Shape, s: int) -> float:
    e, h = sh.e, sh.h
    per_position = (
        2 * e * sh.v  # token lookup as a dense one-hot product
        + 2 * e * (s + sh.types)  # position and token-type lookups, also one-hot products
        + 2 * e  # adding the three embeddings
        + LAYER_NORM_FLOPS * e
        + DROPOUT_FLOPS * e
    )
    if e != h:
        per_position += 2 * e * h + h  # factorized embedding: projection e → h + bias
    return per_position * s


def _paper_mlm_output(sh: _Shape, s: int, output_frac: float) -> float:
    e, h, v = sh.e, sh.h, sh.v
    per_position = (
        2 * h * e + e  # transform dense h → e + bias
        + ACTIVATION_FLOPS * e + LAYER_NORM_FLOPS * e
        + 2 * e * v  # logits against the (tied) embedding table
        + SOFTMAX_FLOPS * v
        + 2 * v  # picking the target word's log-probability
    )
    # Only the predicted positions pay for the softmax over the vocabulary.
    return output_frac * per_position * s


def _paper_binary_head(sh: _Shape, s: int) -> float:
    # ELECTRA's discriminator head, on every position: dense h → h, bias, GELU, h → 1 logit.
    h = sh.h
    return (2 * h * h + h + ACTIVATION_FLOPS * h + 2 * h) * s


def _paper_sop_head(sh: _Shape) -> float:
    # ALBERT's sentence-order head, priced like the binary head above but on the [CLS]
    # position only: pooler dense h → h, bias, activation, h → 2 logits.
    h = sh.h
    return 2 * h * h + h + ACTIVATION_FLOPS * h + 2 * h * 2


def _paper_forward(sh: _Shape, s: int, head: str, output_frac: float, sop: bool) -> float:
    flops = sh.layers * _paper_layer(sh, s) + _paper_embeddings(sh, s)
    if head == "mlm":
        flops += _paper_mlm_output(sh, s, output_frac)
    elif head == "rtd":
        flops += _paper_binary_head(sh, s)
    if sop:
        flops += _paper_sop_head(sh)
    return flops


def paper_train_flops(
    disc: EncoderShape,
    steps: float,
    batch_size: int,
    seq_len: int,
    *,
    generator: EncoderShape | None = None,
    sop: bool = False,
    output_frac: float = PAPER_OUTPUT_FRAC,
) -> float:
    """Pre-training FLOPs in the ELECTRA paper's convention (its Table 1).

    Args:
        disc: The main encoder: ELECTRA's discriminator, or the MLM model when ``generator``
            is None.
        steps: Optimizer steps (a float is fine: ``1.45e6``).
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        generator: ELECTRA's generator. When given, ``disc`` gets the replaced-token-detection
            head on every position and the generator the MLM output; their embeddings are tied,
            so the generator's embedding width is taken to be ``disc.embedding_size``.
        sop: Add ALBERT's sentence-order head (on the main encoder's [CLS] position).
        output_frac: Fraction of positions that pay for the MLM output softmax.

    Returns:
        Total training FLOPs: 2 × forward, summed over all steps.
    """
    _check_sizes(steps=steps, batch_size=batch_size, seq_len=seq_len, output_frac=output_frac)
    if generator is None:
        per_sequence = _paper_forward(_Shape.of(disc), seq_len, "mlm", output_frac, sop)
    else:
        per_sequence = _paper_forward(_Shape.of(disc), seq_len, "rtd", output_frac, sop)
        gen = _Shape.of(generator, embedding_size=disc.embedding_size)
        per_sequence += _paper_forward(gen, seq_len, "mlm", output_frac, sop=False)
    # The paper counts the backward pass as costing the same as the forward.
    return 2.0 * batch_size * steps * per_sequence


# ---------------------------------------------------------------------------------------------
# Model convention: matrix products only, 2 FLOPs per multiply-add.
# ---------------------------------------------------------------------------------------------


def _model_encoder(sh: _Shape, s: int) -> float:
    """Forward matmul FLOPs of the encoder (no head) on one sequence of length s."""
    h, i = sh.h, sh.i
    per_layer = (
        2 * h * 3 * h * s  # Q, K, V projections: (s, h) @ (h, 3h)
        + 2 * s * s * h  # scores Q K^T: (heads, s, d) @ (heads, d, s), heads × d = h
        + 2 * s * s * h  # weighted values A V: (heads, s, s) @ (heads, s, d)
        + 2 * h * h * s  # attention output projection
        + 2 * h * i * s * 2  # FFN in and out
    )
    # Lookups are gathers, not products; only the factorized projection e → h multiplies.
    projection = 2 * sh.e * sh.h * s if sh.e != sh.h else 0
    return sh.layers * per_layer + projection


def _model_head(sh: _Shape, s: int, head: str, mask_prob: float, num_labels: int) -> float:
    h, e = sh.h, sh.e
    if head == "none":
        return 0.0
    if head == "rtd":
        return (2 * h * h + 2 * h) * s  # dense h → h, then h → 1, on every position
    if head == "mlm":
        # Transform h → e and logits e → vocab, gathered to the masked positions first.
        return (2 * h * e + 2 * e * sh.v) * mask_prob * s
    if head == "classification":
        return 2 * h * h + 2 * h * num_labels  # pooler and classifier on [CLS] only
    raise ValueError(f"unknown head {head!r}; expected one of {', '.join(_HEADS)}")


def _model_forward_one(
    sh: _Shape, s: int, head: str, mask_prob: float, num_labels: int, sop: bool
) -> float:
    flops = _model_encoder(sh, s) + _model_head(sh, s, head, mask_prob, num_labels)
    if sop:
        flops += _model_head(sh, s, "classification", mask_prob, num_labels=2)
    return flops


def model_forward_flops(
    cfg: EncoderShape,
    batch_size: int,
    seq_len: int,
    *,
    head: Head = "none",
    mask_prob: float = 0.15,
    num_labels: int = 2,
    sop: bool = False,
) -> float:
    """Forward (inference) matmul FLOPs of one batch.

    Args:
        cfg: The encoder.
        batch_size: Sequences in the batch.
        seq_len: Tokens per sequence, padding included (attention runs over all of them).
        head: ``"none"`` (encoder only), ``"rtd"`` (discriminator head on every position),
            ``"mlm"`` (generator/MLM head on ``mask_prob × seq_len`` positions) or
            ``"classification"`` (pooler + ``num_labels`` classifier on [CLS]).
        mask_prob: Fraction of positions the MLM head runs on.
        num_labels: Classifier outputs for ``head="classification"``.
        sop: Add the sentence-order head (pooler + 2-way classifier on [CLS]).

    Returns:
        Forward FLOPs for the batch.
    """
    _check_sizes(batch_size=batch_size, seq_len=seq_len, mask_prob=mask_prob)
    per_sequence = _model_forward_one(_Shape.of(cfg), seq_len, head, mask_prob, num_labels, sop)
    return float(batch_size * per_sequence)


def model_train_flops(
    disc: EncoderShape,
    steps: float,
    batch_size: int,
    seq_len: int,
    *,
    generator: EncoderShape | None = None,
    sop: bool = False,
    mask_prob: float = 0.15,
) -> float:
    """Pre-training matmul FLOPs, the numerator of model FLOPs utilisation (MFU).

    Args:
        disc: The main encoder: ELECTRA's discriminator, or the MLM model when ``generator``
            is None.
        steps: Optimizer steps.
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        generator: ELECTRA's generator (MLM head on the masked positions); ``disc`` then gets
            the RTD head on every position. Embeddings are tied, so the generator's
            embedding width is ``disc.embedding_size``.
        sop: Add the sentence-order head on the main encoder.
        mask_prob: Fraction of positions masked (the MLM head's positions).

    Returns:
        Total training FLOPs: 3 × forward, summed over all steps.
    """
    _check_sizes(steps=steps, batch_size=batch_size, seq_len=seq_len, mask_prob=mask_prob)
    main = _Shape.of(disc)
    if generator is None:
        per_sequence = _model_forward_one(main, seq_len, "mlm", mask_prob, 2, sop)
    else:
        per_sequence = _model_forward_one(main, seq_len, "rtd", mask_prob, 2, sop)
        gen = _Shape.of(generator, embedding_size=disc.embedding_size)
        per_sequence += _model_forward_one(gen, seq_len, "mlm", mask_prob, 2, sop=False)
    # Backward computes both the input and the weight gradient of every product: 2 × forward.
    return 3.0 * batch_size * steps * per_sequence


def mlm_head_train_flops(disc: EncoderShape, batch_size: int, seq_len: int, mask_prob: float = 0.15,
                         output_frac: float = PAPER_OUTPUT_FRAC) -> tuple[float, float]:
    """(paper, model) FLOPs of one training step of an extra masked-LM head on ``disc`` (ELECTRA's corrective LM
    on the discriminator): what ``paper_train_flops`` and ``model_train_flops`` charge an MLM model for its output
    layer, without the encoder."""
    sh = _Shape.of(disc)
    paper = 2.0 * batch_size * _paper_mlm_output(sh, seq_len, output_frac)
    model = 3.0 * batch_size * _model_head(sh, seq_len, "mlm", mask_prob, 2)
    return paper, model


# ---------------------------------------------------------------------------------------------
# Report and formatting.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """Training compute of one pre-training run in both conventions."""

    objective: str
    steps: float
    batch_size: int
    seq_len: int
    paper_flops_per_step: float
    """ELECTRA-paper convention (2 × forward, elementwise ops, dense lookups) for one step."""
    paper_flops: float
    """Paper-convention FLOPs for the whole run; comparable to the paper's Table 1."""
    model_flops_per_step: float
    """Matmul FLOPs (3 × forward) for one step: divide by step time for achieved FLOP/s."""
    model_flops: float
    """Matmul FLOPs for the whole run."""

    def mfu(self, seconds_per_step: float, peak_flops_per_second: float) -> float:
        """Model FLOPs utilisation: achieved matmul FLOP/s over the hardware's peak."""
        return self.model_flops_per_step / seconds_per_step / peak_flops_per_second

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain JSON-able values, for ``metrics.jsonl`` and the run's summary."""
        return dataclasses.asdict(self)


_OBJECTIVES_WITH_GENERATOR = ("electra", "rtd")
_OBJECTIVES_WITHOUT_GENERATOR = ("mlm",)


def estimate(
    disc: EncoderShape,
    generator: EncoderShape | None,
    objective_name: str,
    sop: bool,
    steps: float,
    batch_size: int,
    seq_len: int,
    mask_prob: float,
) -> FlopsReport:
    """Estimate a pre-training run's FLOPs in both conventions.

    Args:
        disc: The main encoder (ELECTRA's discriminator, or the MLM model).
        generator: ELECTRA's generator, or None for MLM.
        objective_name: ``"electra"`` (or ``"rtd"``), which needs ``generator``; or ``"mlm"``,
            which must not have one.
        sop: Whether the sentence-order objective is added.
        steps: Optimizer steps.
        batch_size: Sequences per step (global, across all processes).
        seq_len: Tokens per sequence.
        mask_prob: Fraction of positions masked; the paper convention keeps its fixed
            ``output_frac`` so figures stay comparable with the paper.

    Returns:
        A `FlopsReport`.
    """
    name = objective_name.lower()
    if name in _OBJECTIVES_WITH_GENERATOR:
        if generator is None:
            raise ValueError(f"objective {objective_name!r} needs a generator config")
    elif name in _OBJECTIVES_WITHOUT_GENERATOR:
        if generator is not None:
            raise ValueError(f"objective {objective_name!r} takes no generator")
    else:
        known = ", ".join(_OBJECTIVES_WITH_GENERATOR + _OBJECTIVES_WITHOUT_GENERATOR)
        raise ValueError(f"unknown objective {objective_name!r}; expected one of {known}")
    paper_step = paper_train_flops(disc, 1, batch_size, seq_len, generator=generator, sop=sop)
    model_step = model_train_flops(
        disc, 1, batch_size, seq_len, generator=generator, sop=sop, mask_prob=mask_prob
    )
    return FlopsReport(
        objective=objective_name,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        paper_flops_per_step=paper_step,
        paper_flops=paper_step * steps,
        model_flops_per_step=model_step,
        model_flops=model_step * steps,
    )


_SI_PREFIXES = ["", "K", "M", "G", "T", "P", "E", "Z", "Y"]


def format_flops(x: float, human: bool = False) -> str:
    """Format a FLOPs count: ``"1.29e18"`` (the paper's style) or ``"1.29 EFLOPs"``.

    Args:
        x: The count.
        human: Use an SI prefix instead of scientific notation.

    Returns:
        Three significant figures.
    """
    if not math.isfinite(x):
        return f"{x} FLOPs" if human else str(x)
    if not human:
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if x == 0:
        return "0 FLOPs"
    power = min(max(int(math.floor(math.log10(abs(x)) / 3)), 0), len(_SI_PREFIXES) - 1)
    scaled = x / 1000**power
    # Rounding can carry into the next prefix (999.7 → 1000); move up when it does.
    if abs(float(f"{scaled:.3g}")) >= 1000 and power < len(_SI_PREFIXES) - 1:
        power += 1
        scaled = x / 1000**power
    return f"{scaled:.3g} {_SI_PREFIXES[power]}FLOPs"


@dataclasses.dataclass(frozen=True)
class StagedFlops:
    """Per-step FLOPs of a pre-training recipe: its first `first_steps` steps cost `first` each (ELECTRA's
    two-stage warm start: a masked LM on the discriminator) and the rest `rest` each."""

    first: FlopsReport
    rest: FlopsReport
    first_steps: int

    def paper(self, step: int) -> float:
        """Paper-convention FLOPs of the first `step` steps."""
        k = min(step, self.first_steps)
        return self.first.paper_flops_per_step * k + self.rest.paper_flops_per_step * (step - k)

    def model(self, step: int) -> float:
        """Matmul FLOPs of the first `step` steps."""
        k = min(step, self.first_steps)
        return self.first.model_flops_per_step * k + self.rest.model_flops_per_step * (step - k)

    def mean_paper_per_step(self, fraction: float) -> float:
        """Paper FLOPs per step averaged over a run that spends `fraction` of its steps in the first stage."""
        return fraction * self.first.paper_flops_per_step + (1 - fraction) * self.rest.paper_flops_per_step


def recipe_flops(disc: EncoderShape, generator: EncoderShape | None, objective, steps: int, batch_size: int,
                 seq_len: int) -> StagedFlops:
    """A run's FLOPs with its objective's recipe: the corrective LM head and the two-stage warm start counted.

    Args:
        objective: the run's ObjectiveConfig (name, sop, mask_prob, two_stage_fraction, corrective_lm_weight).
        steps: the run's steps (the first stage's length is a share of them).
    """
    o = objective
    rest = estimate(disc, generator, o.name, o.sop, 1, batch_size, seq_len, o.mask_prob)
    if o.name == "electra" and o.corrective_lm_weight > 0:  # the discriminator's extra output layer
        paper, matmul = mlm_head_train_flops(disc, batch_size, seq_len, o.mask_prob)
        rest = dataclasses.replace(rest, paper_flops_per_step=rest.paper_flops_per_step + paper,
                                   paper_flops=rest.paper_flops + paper,
                                   model_flops_per_step=rest.model_flops_per_step + matmul,
                                   model_flops=rest.model_flops + matmul)
    if o.name != "electra" or o.two_stage_fraction <= 0:
        return StagedFlops(rest, rest, 0)
    first = estimate(disc, None, "mlm", o.sop, 1, batch_size, seq_len, o.mask_prob)
    return StagedFlops(first, rest, o.first_stage_steps(steps))
