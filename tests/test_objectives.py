"""Masking rates and splits, whole-word and n-gram spans, SOP, ELECTRA and MLM losses.

Batches mimic the corpus layout: ``[CLS] A [SEP] B [SEP] pad...`` with ``segment_lengths``
(B, 2) (B = 0: ``[CLS] A [SEP]`` only). Ids: PAD 0, UNK 1, CLS 2, SEP 3, MASK 4, real tokens ≥ 5;
ids 5..499 start a word and 500..999 continue one.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from electrolite.config import ObjectiveConfig, PretrainConfig, from_name
from electrolite.model import count_parameters
from electrolite.objectives import (
    IGNORE,
    Electra,
    Masker,
    MaskedLM,
    build_objective,
    sample_from_logits,
    make_inputs,
    sop_swap,
)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V = 1000
SPECIALS = [PAD, CLS, SEP, MASK]
WORD_START = np.zeros(V, dtype=bool)
WORD_START[:500] = True  # specials and 5..499 start words; 500..999 continue them


# --- synthetic corpus batches --------------------------------------------------------------------

def words(rng: np.random.Generator, n: int, max_word: int = 3) -> list[int]:
    """n tokens of whole words: a start id (5..499) then 0..max_word-1 continuation ids (500..999)."""
    out: list[int] = []
    while len(out) < n:
        out.append(int(rng.integers(5, 500)))
        out.extend(int(x) for x in rng.integers(500, V, int(rng.integers(0, max_word))))
    return out[:n]


def make_batch(rows: int = 200, seq_len: int = 128, seed: int = 0, single_frac: float = 0.25,
               max_word: int = 3, sprinkle_mask: bool = False) -> dict[str, torch.Tensor]:
    """A packed batch like the corpus gives: input_ids, attention_mask, segment_lengths."""
    rng = np.random.default_rng(seed)
    ids = np.full((rows, seq_len), PAD, dtype=np.int64)
    seg = np.zeros((rows, 2), dtype=np.int64)
    for r in range(rows):
        total = int(rng.integers(seq_len // 2, seq_len + 1))
        if r == 0 or rng.random() < single_frac:
            la, lb = total - 2, 0
            row = [CLS] + words(rng, la, max_word) + [SEP]
        else:
            la = int(rng.integers(1, total - 3))
            lb = total - 3 - la
            row = [CLS] + words(rng, la, max_word) + [SEP] + words(rng, lb, max_word) + [SEP]
        ids[r, :len(row)] = row
        seg[r] = la, lb
    if sprinkle_mask:  # literal [MASK] tokens in the text must never be selected either
        r, c = np.nonzero(ids >= 5)
        pick = rng.choice(len(r), size=len(r) // 50, replace=False)
        ids[r[pick], c[pick]] = MASK
    ids_t = torch.from_numpy(ids)
    return dict(input_ids=ids_t, attention_mask=ids_t != PAD, segment_lengths=torch.from_numpy(seg))


def masker(name: str = "mlm", masking: str = "token", **kw) -> Masker:
    return Masker(ObjectiveConfig(name=name, masking=masking, **kw), V, MASK, SPECIALS, WORD_START)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real_candidates(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    ids = inputs["input_ids"]
    special = torch.zeros(V, dtype=torch.bool)
    special[SPECIALS] = True
    return inputs["attention_mask"] & ~special[ids]


def runs(row: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of True."""
    padded = np.r_[False, row, False].astype(np.int8)
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def assert_whole_words(inputs: dict[str, torch.Tensor]) -> int:
    """No partial word is selected; returns how many selected words had continuation tokens."""
    ids, sel = inputs["input_ids"], inputs["mlm_mask"]
    cont = ~torch.from_numpy(WORD_START)[ids]  # (B, T) continuation tokens
    # A continuation and the token before it belong to one word: selected together or not at all.
    assert torch.equal(sel[:, 1:][cont[:, 1:]], sel[:, :-1][cont[:, 1:]])
    # Every selected run starts at a word start and ends before a word start (or a special/pad).
    assert not (sel & cont & ~torch.roll(sel, 1, dims=1)).any()
    return int((sel[:, 1:] & cont[:, 1:]).sum())


# --- masking rates -------------------------------------------------------------------------------

def test_token_masking_rate_and_exact_counts():
    batch = make_batch(sprinkle_mask=True)
    inputs = make_inputs(batch, masker(), sop=False, generator=gen())
    cand = real_candidates(inputs)
    sel = inputs["mlm_mask"]
    rate = sel.sum().item() / cand.sum().item()
    assert abs(rate - 0.15) <= 0.005
    n = cand.sum(1).float()
    expected = torch.clamp((n * 0.15).round(), min=1).long()
    assert torch.equal(sel.sum(1), expected)  # token masking hits each row's budget exactly
    assert not (sel & ~cand).any()


@pytest.mark.parametrize("masking", ["token", "whole_word", "ngram"])
def test_specials_and_padding_never_selected(masking):
    batch = make_batch(sprinkle_mask=True, seed=3)
    inputs = make_inputs(batch, masker(masking=masking), sop=True, generator=gen(3))
    sel, ids = inputs["mlm_mask"], inputs["input_ids"]
    assert (ids == MASK).sum() > 100  # the sprinkled literal [MASK]s are there to be (not) selected
    for special in SPECIALS:
        assert int((sel & (ids == special)).sum()) == 0
    assert int((sel & ~inputs["attention_mask"]).sum()) == 0
    # Corruption never touches unselected positions (including specials and padding).
    assert torch.equal(inputs["masked_input_ids"][~sel], ids[~sel])


@pytest.mark.parametrize("masking", ["whole_word", "ngram"])
def test_word_masking_rate_and_whole_words(masking):
    batch = make_batch(seed=1)
    inputs = make_inputs(batch, masker(masking=masking), sop=True, generator=gen(1))
    rate = inputs["mlm_mask"].sum().item() / real_candidates(inputs).sum().item()
    assert abs(rate - 0.15) <= 0.02
    multi = assert_whole_words(inputs)
    assert multi > 500  # many selected words had continuations: the property was really exercised


def test_whole_word_check_catches_partial_words():
    # The checker itself: a selection that splits a word must fail it.
    ids = torch.tensor([[CLS, 10, 600, 601, 11, SEP]])
    ok = dict(input_ids=ids, mlm_mask=torch.tensor([[False, True, True, True, False, False]]))
    assert assert_whole_words(ok) == 2
    for bad in ([False, True, True, False, False, False], [False, False, True, True, False, False]):
        with pytest.raises(AssertionError):
            assert_whole_words(dict(input_ids=ids, mlm_mask=torch.tensor([bad])))


def test_ngram_span_lengths_follow_one_over_n():
    # With a budget of one token per row (mask_prob 0.01, ≤ 126 candidates), only the first span is
    # placed and it is always accepted whole: each row holds exactly one span, of n words, n ~ 1/n.
    batch = make_batch(rows=3000, seed=2, single_frac=1.0)
    m = masker(masking="ngram", mask_prob=0.01, max_ngram=3)
    inputs = make_inputs(batch, m, sop=False, generator=gen(2))
    assert_whole_words(inputs)
    sel = inputs["mlm_mask"].numpy()
    starts = WORD_START[inputs["input_ids"].numpy()]
    lengths = Counter()
    for r in range(sel.shape[0]):
        (s, e), = runs(sel[r])  # exactly one span per row
        lengths[int(starts[r, s:e].sum())] += 1
    assert set(lengths) == {1, 2, 3}  # never more than max_ngram words
    p = {n: lengths[n] / sel.shape[0] for n in (1, 2, 3)}
    for n, expected in zip((1, 2, 3), (6 / 11, 3 / 11, 2 / 11)):
        assert abs(p[n] - expected) <= 0.03, (n, p)
    assert p[1] > p[2] > p[3]


def test_ngram_max_ngram_one_is_whole_word_spans():
    batch = make_batch(rows=500, seed=4, single_frac=1.0)
    inputs = make_inputs(batch, masker(masking="ngram", mask_prob=0.01, max_ngram=1), sop=False,
                         generator=gen(4))
    starts = WORD_START[inputs["input_ids"].numpy()]
    sel = inputs["mlm_mask"].numpy()
    assert all(int(starts[r, s:e].sum()) == 1 for r in range(500) for s, e in runs(sel[r]))


def test_mlm_80_10_10_split():
    batch = make_batch(rows=2000, seed=5)
    inputs = make_inputs(batch, masker("mlm"), sop=False, generator=gen(5))
    sel, orig, out = inputs["mlm_mask"], inputs["input_ids"], inputs["masked_input_ids"]
    n = sel.sum().item()
    assert n > 25000
    masked = (out[sel] == MASK).sum().item() / n
    random = ((out[sel] != MASK) & (out[sel] != orig[sel])).sum().item() / n
    kept = (out[sel] == orig[sel]).sum().item() / n
    pool = V - len(SPECIALS)  # a random replacement equals the original with probability 1/pool
    assert masked + random + kept == pytest.approx(1.0)
    assert abs(masked - 0.8) <= 0.02
    assert abs(random - 0.1 * (1 - 1 / pool)) <= 0.02
    assert abs(kept - (0.1 + 0.1 / pool)) <= 0.02
    replaced = out[sel & (out != MASK) & (out != orig)]
    assert not torch.isin(replaced, torch.tensor(SPECIALS)).any()
    assert replaced.min() >= 0 and replaced.max() < V
    assert len(replaced.unique()) > 500  # drawn over the whole non-special vocabulary


def test_electra_85_15_split_has_no_random_tokens():
    batch = make_batch(rows=1000, seed=6)
    inputs = make_inputs(batch, masker("electra"), sop=False, generator=gen(6))
    sel, orig, out = inputs["mlm_mask"], inputs["input_ids"], inputs["masked_input_ids"]
    n = sel.sum().item()
    masked = (out[sel] == MASK).sum().item() / n
    kept = (out[sel] == orig[sel]).sum().item() / n
    assert masked + kept == 1.0  # every selected position is [MASK] or the original
    assert abs(masked - 0.85) <= 0.02
    assert abs(kept - 0.15) <= 0.02


@pytest.mark.parametrize("masking", ["token", "whole_word", "ngram"])
def test_masking_is_deterministic_given_the_seed(masking):
    batch = make_batch(rows=64, seed=7)
    m = masker(masking=masking)
    a = make_inputs(batch, m, sop=True, generator=gen(11))
    b = make_inputs(batch, m, sop=True, generator=gen(11))
    c = make_inputs(batch, m, sop=True, generator=gen(12))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["mlm_mask"], c["mlm_mask"])


def test_masker_needs_word_start_for_word_strategies():
    with pytest.raises(ValueError, match="word_start"):
        Masker(ObjectiveConfig(masking="whole_word"), V, MASK, SPECIALS)
    m = Masker(ObjectiveConfig(masking="token"), V, MASK, SPECIALS)
    assert len(m.random_pool) == V - 4 and not torch.isin(m.random_pool, torch.tensor(SPECIALS)).any()


# --- sentence order ------------------------------------------------------------------------------

def test_sop_swap_exact_tokens_and_types():
    A, B = [10, 11, 12], [20, 21]
    ids = torch.tensor([
        [CLS, *A, SEP, *B, SEP, PAD, PAD],
        [CLS, *A, SEP, *B, SEP, PAD, PAD],
        [CLS, 10, 11, SEP, PAD, PAD, PAD, PAD, PAD, PAD],
    ])
    seg = torch.tensor([[3, 2], [3, 2], [2, 0]])
    out, types = sop_swap(ids, seg, torch.tensor([True, False, True]))
    assert out.tolist() == [
        [CLS, *B, SEP, *A, SEP, PAD, PAD],
        [CLS, *A, SEP, *B, SEP, PAD, PAD],
        [CLS, 10, 11, SEP, PAD, PAD, PAD, PAD, PAD, PAD],  # single segment: never swapped
    ]
    assert types.tolist() == [
        [0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]


def reference_swap(row: list[int], la: int, lb: int) -> tuple[list[int], list[int]]:
    a, b = row[1:1 + la], row[2 + la:2 + la + lb]
    body = [CLS, *b, SEP, *a, SEP]
    types = [0] * (lb + 2) + [1] * (la + 1)
    pad = len(row) - len(body)
    return body + [PAD] * pad, types + [0] * pad


def test_make_inputs_sop_swaps_half_and_labels():
    batch = make_batch(rows=2000, seq_len=64, seed=8)
    m = masker()
    inputs = make_inputs(batch, m, sop=True, generator=gen(8))
    seg, labels = batch["segment_lengths"], inputs["sop_labels"]
    two = seg[:, 1] > 0
    assert torch.equal(labels[~two], torch.full(((~two).sum().item(),), IGNORE))
    assert set(labels[two].tolist()) == {0, 1}
    assert abs(labels[two].float().mean().item() - 0.5) <= 0.03
    assert torch.equal(inputs["attention_mask"], batch["attention_mask"])  # same length after a swap
    for r in range(2000):
        row, (la, lb) = batch["input_ids"][r].tolist(), seg[r].tolist()
        if labels[r] == 1:
            ids, types = reference_swap(row, la, lb)
        else:
            ids = row
            types = [0] * (la + 2) + [1] * (lb + 1 if lb else 0)
            types += [0] * (len(row) - len(types))
        assert inputs["input_ids"][r].tolist() == ids
        assert inputs["token_type_ids"][r].tolist() == types


def test_make_inputs_without_sop_keeps_order():
    batch = make_batch(rows=200, seq_len=64, seed=9)
    inputs = make_inputs(batch, masker(), sop=False, generator=gen(9))
    assert torch.equal(inputs["input_ids"], batch["input_ids"])
    two = batch["segment_lengths"][:, 1] > 0
    assert (inputs["sop_labels"][two] == 0).all()  # nothing was swapped, so nothing is labelled swapped
    assert (inputs["sop_labels"][~two] == IGNORE).all()
    # Second segments have type 1, so token types are right without SOP too.
    la = batch["segment_lengths"][:, 0]
    assert torch.equal(inputs["token_type_ids"].sum(1), torch.where(two, batch["segment_lengths"][:, 1] + 1, 0))
    assert (inputs["token_type_ids"][torch.arange(200), la + 1] == 0).all()  # first [SEP] is segment 0


# --- ELECTRA ---------------------------------------------------------------------------------------

def run_config(objective: dict | None = None, **model) -> PretrainConfig:
    base = dict(vocab_size=V, max_position_embeddings=128)
    base.update(model)
    obj = dict(generator_size=0.5)
    obj.update(objective or {})
    return PretrainConfig(size="tiny", model=from_name("tiny", **base), objective=ObjectiveConfig(**obj))


def electra(objective: dict | None = None, seed: int = 0, **model) -> Electra:
    cfg = run_config(objective, **model)
    torch.manual_seed(seed)
    obj = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    assert isinstance(obj, Electra)
    return obj


def small_inputs(name: str = "electra", sop: bool = False, rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = make_batch(rows=rows, seq_len=48, seed=seed)
    return make_inputs(batch, masker(name), sop=sop, generator=gen(seed))


def test_electra_generator_is_smaller_and_shares_embeddings():
    model = electra(embedding_size=32)
    assert model.generator.config.hidden_size == 32 and model.discriminator.config.hidden_size == 64
    ge, de = model.generator.embeddings, model.discriminator.embeddings
    assert ge is de
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        for p_name, p in getattr(de, name).named_parameters():
            q = getattr(getattr(ge, name), p_name)
            assert q is p and q.data_ptr() == p.data_ptr(), (name, p_name)
    assert model.generator_head.word_embeddings[0].weight is de.word_embeddings.weight
    # Shared tensors are counted once.
    total = count_parameters(model)
    separate = sum(count_parameters(m) for m in (model.generator, model.discriminator, model.generator_head,
                                                 model.discriminator_head))
    assert separate - total == count_parameters(de)
    assert not hasattr(model.generator, "embeddings_project")  # generator hidden 32 == embedding 32
    assert model.discriminator.embeddings_project.in_features == 32


def test_electra_rtd_labels_and_corruption():
    model = electra()
    inputs = small_inputs()
    torch.manual_seed(0)
    out = model(inputs)
    orig, attn, sel = inputs["input_ids"], inputs["attention_mask"], inputs["mlm_mask"]
    corrupted = out.corrupted_ids
    assert torch.equal(out.rtd_labels, (corrupted != orig) & attn)
    assert not ((corrupted != orig) & ~sel).any()  # only selected positions are ever replaced
    n_replaced = out.rtd_labels.sum().item()
    assert 0 < n_replaced <= sel.sum().item()
    assert out.replaced_fraction.item() == pytest.approx(n_replaced / attn.sum().item())
    assert out.rtd_logits.shape == orig.shape
    # An untrained generator samples nearly uniformly over 1000 ids: almost every sample differs.
    assert n_replaced / sel.sum().item() > 0.95


def test_electra_generator_runs_only_on_masked_positions():
    model = electra()
    inputs = small_inputs()
    n = int(inputs["mlm_mask"].sum())
    seen: list[tuple[int, ...]] = []
    handle = model.generator_head.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        out = model(inputs)
    finally:
        handle.remove()
    assert n < inputs["attention_mask"].sum() / 4
    assert seen == [(n, model.generator.config.hidden_size)]  # called once, on the N selected rows
    assert tuple(out.mlm_logits.shape) == (n, V)


def test_electra_loss_weights():
    inputs = small_inputs()
    outs = {}
    for gw, dw in ((1.0, 50.0), (2.0, 10.0)):
        model = electra(dict(generator_weight=gw, discriminator_weight=dw), seed=0)
        torch.manual_seed(123)  # identical dropout and sampling for both weightings
        out = model(inputs)
        outs[gw, dw] = out
        torch.testing.assert_close(out.loss.detach(), gw * out.mlm_loss + dw * out.rtd_loss, rtol=1e-6, atol=1e-6)
    a, b = outs[1.0, 50.0], outs[2.0, 10.0]
    assert torch.equal(a.corrupted_ids, b.corrupted_ids)
    assert a.mlm_loss.item() == b.mlm_loss.item() and a.rtd_loss.item() == b.rtd_loss.item()
    # Untrained: generator loss ≈ ln V, discriminator loss ≈ ln 2 (logits near 0).
    assert abs(a.mlm_loss.item() - np.log(V)) < 0.2
    assert abs(a.rtd_loss.item() - np.log(2)) < 0.1
    assert a.loss.item() == pytest.approx(a.mlm_loss.item() + 50 * a.rtd_loss.item(), rel=1e-6)


def test_electra_rtd_loss_by_hand():
    model = electra().eval()
    inputs = small_inputs()
    torch.manual_seed(0)
    out = model(inputs)
    attn = inputs["attention_mask"]
    with torch.no_grad():
        hidden = model.discriminator(out.corrupted_ids, attn, inputs["token_type_ids"])
        logits = model.discriminator_head(hidden)
    torch.testing.assert_close(out.rtd_logits, logits, rtol=0, atol=1e-6)
    expected = F.binary_cross_entropy_with_logits(logits[attn], out.rtd_labels[attn].float())
    torch.testing.assert_close(out.rtd_loss, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_each_electra_loss_reaches_the_shared_embeddings(which):
    weights = dict(generator_weight=1.0, discriminator_weight=0.0) if which == "generator" else \
        dict(generator_weight=0.0, discriminator_weight=1.0)
    model = electra(weights, embedding_size=32)
    inputs = small_inputs()
    torch.manual_seed(0)
    model(inputs).loss.backward()
    emb = model.discriminator.embeddings
    assert emb.word_embeddings.weight.grad.abs().sum() > 0
    assert emb.position_embeddings.weight.grad.abs().sum() > 0
    assert emb.LayerNorm.weight.grad.abs().sum() > 0

    def grad_sum(module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    gen_side = grad_sum(model.generator.encoder) + grad_sum(model.generator_head)
    disc_side = grad_sum(model.discriminator.encoder) + grad_sum(model.discriminator_head) \
        + grad_sum(model.discriminator.embeddings_project)
    if which == "generator":
        assert gen_side > 0 and disc_side == 0
    else:
        # Sampling is not differentiable: no gradient flows from the discriminator into the generator.
        assert disc_side > 0 and gen_side == 0


def test_sample_from_logits_matches_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5], requires_grad=True)
    torch.manual_seed(0)
    for temperature in (1.0, 2.0):
        draws = sample_from_logits(logits.expand(200_000, 5), temperature)
        assert draws.dtype == torch.long and not draws.requires_grad
        freq = torch.bincount(draws, minlength=5).float() / draws.numel()
        expected = torch.softmax(logits.detach() / temperature, -1)
        torch.testing.assert_close(freq, expected, rtol=0, atol=0.005)


def test_sample_from_logits_never_draws_impossible_ids():
    torch.manual_seed(0)
    logits = torch.full((50_000, 30), float("-inf"))
    logits[:, [0, 29]] = 0.0  # only the first and the last id are possible; every edge of the CDF
    logits[::2, 0] = float("-inf")  # even rows: only the last id
    draws = sample_from_logits(logits.to(torch.bfloat16))
    assert set(draws.unique().tolist()) <= {0, 29}
    assert (draws[::2] == 29).all()
    assert abs((draws[1::2] == 0).float().mean().item() - 0.5) < 0.01


def test_sample_equal_to_original_is_labelled_original():
    model = electra().eval()
    inputs = small_inputs()
    sel = inputs["mlm_mask"]
    favourite = 77
    inputs = dict(inputs, input_ids=inputs["input_ids"].clone())
    inputs["input_ids"][sel] = favourite  # every selected position's original is the favourite id
    with torch.no_grad():
        model.generator_head.bias[favourite] = 1e4  # the generator always samples it
    out = model(inputs)
    assert torch.equal(out.corrupted_ids, inputs["input_ids"])
    assert int(out.rtd_labels.sum()) == 0
    assert out.replaced_fraction.item() == 0.0
    assert out.mlm_accuracy.item() == 1.0
    # And favouring another id replaces every selected position: labels == mlm_mask exactly.
    with torch.no_grad():
        model.generator_head.bias[favourite] = 0.0
        model.generator_head.bias[78] = 1e4
    out = model(inputs)
    assert torch.equal(out.rtd_labels, sel)
    assert (out.corrupted_ids[sel] == 78).all()
    assert out.mlm_accuracy.item() == 0.0


def test_rtd_accuracies_on_a_constructed_case():
    model = electra().eval()
    inputs = small_inputs()
    with torch.no_grad():  # the discriminator predicts "original" everywhere
        model.discriminator_head.dense_prediction.weight.zero_()
        model.discriminator_head.dense_prediction.bias.fill_(-5.0)
    out = model(inputs)
    assert 0 < out.replaced_fraction.item() < 1
    assert out.rtd_original_accuracy.item() == 1.0
    assert out.rtd_replaced_accuracy.item() == 0.0
    assert out.rtd_accuracy.item() == pytest.approx(1 - out.replaced_fraction.item(), abs=1e-6)
    # Constant logit -5: loss = mean of softplus(-5) on originals and softplus(5) on replacements.
    f = out.replaced_fraction.item()
    expected = (1 - f) * F.softplus(torch.tensor(-5.0)).item() + f * F.softplus(torch.tensor(5.0)).item()
    assert out.rtd_loss.item() == pytest.approx(expected, rel=1e-5)


# --- masked LM -----------------------------------------------------------------------------------

def mlm(objective: dict | None = None, seed: int = 0, **model) -> MaskedLM:
    cfg = run_config(dict(name="mlm", **(objective or {})), **model)
    torch.manual_seed(seed)
    obj = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    assert isinstance(obj, MaskedLM)
    return obj


def test_mlm_loss_equals_cross_entropy_by_hand():
    model = mlm(embedding_size=32).eval()
    inputs = small_inputs("mlm")
    with torch.no_grad():
        out = model(inputs)
        hidden = model.encoder(inputs["masked_input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        full = model.mlm_head(hidden)  # (B, T, V): every position, for the reference only
    sel = inputs["mlm_mask"]
    expected = F.cross_entropy(full[sel], inputs["input_ids"][sel])
    torch.testing.assert_close(out.mlm_loss, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.mlm_logits, full[sel], rtol=0, atol=1e-5)
    assert out.loss.item() == out.mlm_loss.item()
    acc = (full[sel].argmax(-1) == inputs["input_ids"][sel]).float().mean()
    assert out.mlm_accuracy.item() == pytest.approx(acc.item())
    assert 0.0 <= out.mlm_accuracy.item() <= 1.0
    assert abs(out.mlm_loss.item() - np.log(V)) < 0.2


def test_mlm_accuracy_on_a_constructed_case():
    model = mlm().eval()
    inputs = small_inputs("mlm")
    sel = inputs["mlm_mask"]
    n = int(sel.sum())
    targets = inputs["input_ids"].clone()
    picked = targets[sel]
    picked[: n // 4] = 77  # a quarter of the targets are the id the head always predicts
    picked[n // 4:][picked[n // 4:] == 77] = 78
    targets[sel] = picked
    with torch.no_grad():
        model.mlm_head.bias[77] = 1e4
    out = model(dict(inputs, input_ids=targets))
    assert out.mlm_accuracy.item() == pytest.approx((n // 4) / n)
    # Loss: 0 on the quarter predicted right, ~1e4 above the right logit elsewhere.
    assert out.mlm_loss.item() == pytest.approx(1e4 * (n - n // 4) / n, rel=1e-3)


@pytest.mark.parametrize("name", ["mlm", "electra"])
def test_sop_loss_added_with_its_weight(name):
    objective = dict(sop=True, sop_weight=0.5)
    model = (mlm(objective) if name == "mlm" else electra(objective)).eval()
    inputs = small_inputs(name, sop=True, rows=16)
    labels = inputs["sop_labels"]
    assert (labels == 1).any() and (labels == 0).any() and (labels == IGNORE).any()
    torch.manual_seed(0)
    out = model(inputs)
    parts = out.mlm_loss + 0.5 * out.sop_loss
    if name == "electra":
        parts = parts + 50.0 * out.rtd_loss
    torch.testing.assert_close(out.loss.detach(), parts, rtol=1e-6, atol=1e-6)
    # The SOP loss by hand: cross-entropy of the head on the (possibly corrupted) sequence, valid rows only.
    with torch.no_grad():
        if name == "mlm":
            hidden = model.encoder(inputs["masked_input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        else:
            hidden = model.discriminator(out.corrupted_ids, inputs["attention_mask"], inputs["token_type_ids"])
        logits = model.sop_head(hidden)
    valid = labels != IGNORE
    torch.testing.assert_close(out.sop_loss, F.cross_entropy(logits[valid], labels[valid]), rtol=0, atol=1e-5)
    assert 0.0 <= out.sop_accuracy.item() <= 1.0
    # Constructed accuracy: a head that always says "in order" is right on the label-0 rows.
    with torch.no_grad():
        model.sop_head.classifier.weight.zero_()
        model.sop_head.classifier.bias.copy_(torch.tensor([1.0, 0.0]))
    torch.manual_seed(0)
    out = model(inputs)
    assert out.sop_accuracy.item() == pytest.approx((labels[valid] == 0).float().mean().item())
    expected = F.cross_entropy(torch.tensor([[1.0, 0.0]]).expand(int(valid.sum()), 2), labels[valid])
    assert out.sop_loss.item() == pytest.approx(expected.item(), rel=1e-5)


ENCODERS = {
    "plain": dict(),
    "factorized": dict(embedding_size=32),
    "shared": dict(num_hidden_layers=4, num_hidden_groups=1),
    "albert": dict(num_hidden_layers=4, num_hidden_groups=1, embedding_size=16),
}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("name, sop", [("electra", False), ("electra", True), ("mlm", False), ("mlm", True)])
def test_any_objective_on_any_encoder(encoder, name, sop):
    model_kw = ENCODERS[encoder]
    cfg = run_config(dict(name=name, sop=sop), **model_kw)
    torch.manual_seed(0)
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    inputs = small_inputs(name, sop=sop, rows=6)
    torch.manual_seed(1)
    out = model(inputs)
    expected = cfg.objective.generator_weight * out.mlm_loss if name == "electra" else out.mlm_loss.clone()
    if name == "electra":
        expected = expected + cfg.objective.discriminator_weight * out.rtd_loss
    if sop:
        expected = expected + cfg.objective.sop_weight * out.sop_loss
    else:
        assert out.sop_loss is None
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-6, atol=1e-6)
    assert abs(out.mlm_loss.item() - np.log(V)) < 0.3  # an untrained head: near-uniform over V
    out.loss.backward()
    # The encoder under test is the one configured: shared weights, factorized embeddings.
    enc = model.discriminator if name == "electra" else model.encoder
    assert len(enc.encoder.layer) == cfg.model.num_hidden_groups
    assert enc.config.embedding_size == cfg.model.embedding_size
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # Every parameter of encoder(s) and heads receives a gradient.
    assert missing == []
    metrics = out.metrics()
    assert all(np.isfinite(v) for v in metrics.values())
    assert set(metrics) >= {"loss", "mlm_loss", "mlm_accuracy"} | ({"rtd_loss"} if name == "electra" else set()) \
        | ({"sop_loss", "sop_accuracy"} if sop else set())


def test_build_objective_electra_needs_generator():
    cfg = run_config()
    with pytest.raises(ValueError, match="generator config"):
        build_objective(cfg.model, cfg.objective, None)
    gen = cfg.generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (32, 1, 128)
    assert isinstance(build_objective(cfg.model, dataclasses.replace(cfg.objective, name="mlm")), MaskedLM)


def test_rank_auc_hand_checked():
    from electrolite.objectives import rank_auc
    labels = torch.tensor([False, False, True, True])
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert rank_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), labels).item() == pytest.approx(0.75)
    assert rank_auc(torch.tensor([0.0, 0.1, 0.5, 0.9]), labels).item() == pytest.approx(1.0)
    assert rank_auc(torch.tensor([0.9, 0.5, 0.1, 0.0]), labels).item() == pytest.approx(0.0)
    # Ties count one half (Mann-Whitney): a constant output is exactly chance, whatever the order.
    assert rank_auc(torch.full((6,), 0.3), torch.tensor([True, False, True, False, False, True])).item() == 0.5
    assert rank_auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), torch.tensor([False, True, False, True])).item() == 0.875
    assert rank_auc(torch.tensor([0.5, 0.5, 0.1, 0.9]), torch.tensor([True, False, False, True])).item() == 0.875
    assert rank_auc(torch.tensor([0.3, 0.2]), torch.tensor([False, False])).item() == 0.5
