"""FLOPs accounting: the ELECTRA paper's published figures, and hand-counted matmul FLOPs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from electrolite.flops import (
    FlopsReport,
    estimate,
    format_flops,
    model_forward_flops,
    model_train_flops,
    paper_train_flops,
)


@dataclasses.dataclass
class Shape:
    """Stand-in for config.EncoderConfig: same field names, same derived defaults."""

    hidden_size: int
    num_hidden_layers: int
    embedding_size: int | None = None
    vocab_size: int = 30522
    type_vocab_size: int = 2
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    num_hidden_groups: int | None = None
    max_position_embeddings: int = 512

    def __post_init__(self):
        self.embedding_size = self.embedding_size or self.hidden_size
        self.num_attention_heads = self.num_attention_heads or max(1, self.hidden_size // 64)
        self.intermediate_size = self.intermediate_size or 4 * self.hidden_size
        self.num_hidden_groups = self.num_hidden_groups or self.num_hidden_layers


def rel_err(actual: float, expected: float) -> float:
    return abs(actual - expected) / expected


# --- Paper convention ----------------------------------------------------------------------


def test_electra_small_matches_paper():
    disc = Shape(256, 12, embedding_size=128)
    gen = Shape(64, 12)  # tied: its embedding width becomes the discriminator's 128
    flops = paper_train_flops(disc, 1_000_000, 128, 128, generator=gen)
    assert rel_err(flops, 1.29e18) < 0.02


def test_bert_small_matches_paper():
    flops = paper_train_flops(Shape(256, 12, embedding_size=128), 1.45e6, 128, 128)
    assert rel_err(flops, 1.42e18) < 0.02


def test_electra_base_matches_paper():
    flops = paper_train_flops(Shape(768, 12), 766_000, 256, 512, generator=Shape(256, 12))
    assert rel_err(flops, 6.42e19) < 0.02


# Every row of google-research/electra flops_computation.py's MODEL_FLOPS that the script
# computes (values printed by running it), as (disc, generator, steps, batch, seq, frac, expected).
REFERENCE_ROWS = {
    "gpt": (Shape(768, 12, vocab_size=40000), None, 960_800, 128, 512, 1.0, 3.968752230785352e19),
    "bert_small": (Shape(256, 12, embedding_size=128), None, 1.45e6, 128, 128, 0.15625,
                   1.4187399146496e18),
    "bert_base": (Shape(768, 12), None, 1e6, 256, 512, 0.15625, 6.428335104e19),
    "bert_large": (Shape(1024, 24), None, 1e6, 256, 512, 0.15625, 1.91720905883648e20),
    "electra_small": (Shape(256, 12, embedding_size=128), Shape(64, 12), 1e6, 128, 128, 0.15625,
                      1.293743798272e18),
    "electra_base": (Shape(768, 12), Shape(256, 12), 766_000, 256, 512, 0.15625,
                     6.424541834277683e19),
    "electra_400k": (Shape(1024, 24), Shape(256, 24), 400_000, 2048, 512, 0.15625,
                     7.117606040895488e20),
    "electra_1.75M": (Shape(1024, 24), Shape(256, 24), 1_750_000, 2048, 512, 0.15625,
                      3.113952642891776e21),
    "roberta": (Shape(1024, 24, vocab_size=50265), None, 500_000, 8000, 512, 0.15625,
                3.187221435776e21),
    "albert": (Shape(4096, 12, embedding_size=128, vocab_size=30000), None, 1.5e6, 4096, 512,
               0.15625, 3.113923955392512e22),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_ROWS))
def test_reference_rows(name):
    disc, gen, steps, batch, seq, frac, expected = REFERENCE_ROWS[name]
    flops = paper_train_flops(disc, steps, batch, seq, generator=gen, output_frac=frac)
    # Same terms as the reference, so agreement is to rounding, not just to 2%.
    assert flops == pytest.approx(expected, rel=1e-9)


def test_paper_sop_adds_a_cls_only_head():
    cfg = Shape(256, 12, embedding_size=128)
    h = 256
    # pooler matmul + bias + activation (8/element) + 2 logits, once per sequence, × 2 for
    # forward/backward, × batch × steps.
    head = 2 * h * h + h + 8 * h + 2 * h * 2
    with_sop = paper_train_flops(cfg, 10, 4, 128, sop=True)
    assert with_sop - paper_train_flops(cfg, 10, 4, 128) == pytest.approx(2 * 4 * 10 * head)


def test_paper_generator_uses_discriminator_embedding_width():
    disc = Shape(256, 12, embedding_size=128)
    untied_looking = Shape(64, 12)  # embedding_size 64 on its own
    tied = Shape(64, 12, embedding_size=128)
    assert paper_train_flops(disc, 1, 1, 128, generator=untied_looking) == paper_train_flops(
        disc, 1, 1, 128, generator=tied
    )


# --- Model convention, counted by hand ------------------------------------------------------

# hidden 64, 2 layers, 1 head, FFN 256, factorized embedding 32, vocab 100, seq 16.
TINY = dict(hidden_size=64, num_hidden_layers=2, embedding_size=32, vocab_size=100,
            num_attention_heads=1, intermediate_size=256)
S = 16

# One layer on one sequence, 2 FLOPs per multiply-add:
#   Q, K, V   (16×64)@(64×192)   2·16·64·192  = 393_216
#   Q K^T     (16×64)@(64×16)    2·16·64·16   =  32_768
#   A V       (16×16)@(16×64)    2·16·16·64   =  32_768
#   out proj  (16×64)@(64×64)    2·16·64·64   = 131_072
#   FFN in    (16×64)@(64×256)   2·16·64·256  = 524_288
#   FFN out   (16×256)@(256×64)  2·16·256·64  = 524_288
TINY_LAYER = 393_216 + 32_768 + 32_768 + 131_072 + 524_288 + 524_288
assert TINY_LAYER == 1_638_400
#   embedding projection (16×32)@(32×64)  2·16·32·64 = 65_536
TINY_ENCODER = 2 * TINY_LAYER + 65_536  # = 3_342_336
#   RTD head on 16 positions: (16×64)@(64×64) + (16×64)@(64×1) = 131_072 + 2_048
TINY_RTD = 133_120
#   MLM head on 0.25·16 = 4 masked positions: (4×64)@(64×32) + (4×32)@(32×100) = 16_384 + 25_600
TINY_MLM = 41_984
#   3-way classifier on [CLS]: (1×64)@(64×64) + (1×64)@(64×3) = 8_192 + 384
TINY_CLS = 8_576


def test_model_forward_by_hand():
    cfg = Shape(**TINY)
    assert model_forward_flops(cfg, 1, S) == TINY_ENCODER
    assert model_forward_flops(cfg, 3, S) == 3 * TINY_ENCODER
    assert model_forward_flops(cfg, 1, S, head="rtd") == TINY_ENCODER + TINY_RTD
    assert model_forward_flops(cfg, 1, S, head="mlm", mask_prob=0.25) == TINY_ENCODER + TINY_MLM
    assert (
        model_forward_flops(cfg, 1, S, head="classification", num_labels=3)
        == TINY_ENCODER + TINY_CLS
    )
    # SOP: pooler + 2-way classifier on [CLS]: 8_192 + 256.
    assert model_forward_flops(cfg, 1, S, sop=True) == TINY_ENCODER + 8_448


def test_model_train_by_hand():
    disc = Shape(**TINY)
    # Generator: hidden 32, 2 layers, FFN 128, sharing the discriminator's 32-wide embeddings
    # (so no projection).
    gen = Shape(hidden_size=32, num_hidden_layers=2, vocab_size=100, intermediate_size=128)
    #   QKV 2·16·32·96 + QK^T 2·16·32·16 + AV 2·16·16·32 + out 2·16·32·32 + FFN 2·(2·16·32·128)
    gen_layer = 98_304 + 16_384 + 16_384 + 32_768 + 262_144
    #   MLM on 4 positions: (4×32)@(32×32) + (4×32)@(32×100)
    gen_forward = 2 * gen_layer + 4 * (2 * 32 * 32 + 2 * 32 * 100)
    assert gen_forward == 885_760

    steps, batch = 5, 2
    electra = model_train_flops(disc, steps, batch, S, generator=gen, mask_prob=0.25)
    assert electra == 3 * steps * batch * (TINY_ENCODER + TINY_RTD + gen_forward)
    mlm = model_train_flops(disc, steps, batch, S, mask_prob=0.25)
    assert mlm == 3 * steps * batch * (TINY_ENCODER + TINY_MLM)


def test_sharing_layers_does_not_change_flops():
    plain = Shape(**TINY)
    shared = Shape(**TINY, num_hidden_groups=1)
    assert model_train_flops(shared, 1, 1, S) == model_train_flops(plain, 1, 1, S)
    assert paper_train_flops(shared, 1, 1, S) == paper_train_flops(plain, 1, 1, S)


def test_factorized_embedding_changes_flops():
    # BERT-base shapes: factorizing 768 → 128 adds a small projection but shrinks the
    # vocabulary products, so both conventions go down.
    full = Shape(768, 12)
    factorized = Shape(768, 12, embedding_size=128)
    for count in (model_train_flops, paper_train_flops):
        assert count(factorized, 1, 8, 128) < count(full, 1, 8, 128)
    # The model-convention difference is exactly the MLM-head saving minus the projection.
    e1, e2, h, v, masked = 768, 128, 768, 30522, 0.15 * 128
    head = lambda e: (2 * h * e + 2 * e * v) * masked  # noqa: E731
    projection = 2 * e2 * h * 128
    expected = 3 * 8 * (head(e1) - head(e2) - projection)
    diff = model_train_flops(full, 1, 8, 128) - model_train_flops(factorized, 1, 8, 128)
    assert diff == pytest.approx(expected)


def test_model_flops_agree_with_torch_flop_counter():
    """Count the products of the Hugging Face ELECTRA discriminator with torch's own counter."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    cfg = Shape(**TINY)
    hf_config = transformers.ElectraConfig(
        vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_size,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=64, attn_implementation="eager",
    )
    model = transformers.ElectraForPreTraining(hf_config)
    ids = torch.randint(0, cfg.vocab_size, (2, S))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids).logits
    forward = counter.get_total_flops()
    assert forward == model_forward_flops(cfg, 2, S, head="rtd")
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids).logits.sum().backward()
    # Backward computes an input and a weight gradient for every product: forward + 2 × forward.
    assert counter.get_total_flops() == 3 * forward
    assert logits.shape == (2, S)


# --- Report and formatting ------------------------------------------------------------------


def test_estimate_report():
    disc, gen = Shape(256, 12, embedding_size=128), Shape(64, 12)
    report = estimate(disc, gen, "electra", False, 1_000_000, 128, 128, 0.15)
    assert isinstance(report, FlopsReport)
    assert rel_err(report.paper_flops, 1.29e18) < 0.02
    assert report.paper_flops == pytest.approx(report.paper_flops_per_step * 1_000_000)
    assert report.model_flops == pytest.approx(
        model_train_flops(disc, 1_000_000, 128, 128, generator=gen, mask_prob=0.15)
    )
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["objective"] == "electra" and d["seq_len"] == 128
    assert report.mfu(1.0, report.model_flops_per_step * 2) == pytest.approx(0.5)

    mlm = estimate(disc, None, "mlm", True, 10, 128, 128, 0.15)
    assert mlm.paper_flops == pytest.approx(paper_train_flops(disc, 10, 128, 128, sop=True))


@pytest.mark.parametrize(
    "generator, name", [(None, "electra"), (Shape(64, 12), "mlm"), (None, "bogus")]
)
def test_estimate_rejects_mismatched_objective(generator, name):
    with pytest.raises(ValueError):
        estimate(Shape(256, 12), generator, name, False, 1, 1, 128, 0.15)


def test_unknown_head_rejected():
    with pytest.raises(ValueError, match="unknown head"):
        model_forward_flops(Shape(**TINY), 1, S, head="pooler")


@pytest.mark.parametrize(
    "x, sci, human",
    [
        (1.293743798272e18, "1.29e18", "1.29 EFLOPs"),
        (6.424541834277683e19, "6.42e19", "64.2 EFLOPs"),
        (3.113923955392512e22, "3.11e22", "31.1 ZFLOPs"),
        (512, "5.12e2", "512 FLOPs"),
        (999_700, "1.00e6", "1 MFLOPs"),
        (0, "0.00e0", "0 FLOPs"),
    ],
)
def test_format_flops(x, sci, human):
    assert format_flops(x) == sci
    assert format_flops(x, human=True) == human
