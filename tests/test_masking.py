"""Masking: rates and exact counts, the 80/10/10 and 85/15 splits, whole-word and n-gram spans, SOP swaps.

Batches come from tests/batches.py (the corpus layout with synthetic ids).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from batches import CLS, MASK, PAD, SEP, SPECIALS, WORD_START, V, assert_whole_words, gen, make_batch, masker, real_candidates, runs

from electrolite.config import ObjectiveConfig
from electrolite.objectives import IGNORE_INDEX, Masker, make_inputs, sop_swap


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
    assert torch.equal(labels[~two], torch.full(((~two).sum().item(),), IGNORE_INDEX))
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
    assert (inputs["sop_labels"][~two] == IGNORE_INDEX).all()
    # Second segments have type 1, so token types are right without SOP too.
    la = batch["segment_lengths"][:, 0]
    assert torch.equal(inputs["token_type_ids"].sum(1), torch.where(two, batch["segment_lengths"][:, 1] + 1, 0))
    assert (inputs["token_type_ids"][torch.arange(200), la + 1] == 0).all()  # first [SEP] is segment 0
