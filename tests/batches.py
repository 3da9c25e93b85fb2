"""Synthetic corpus batches for the masking and objective tests.

Batches mimic the corpus layout: ``[CLS] A [SEP] B [SEP] pad...`` with ``segment_lengths``
(B, 2) (B = 0: ``[CLS] A [SEP]`` only). Ids: PAD 0, UNK 1, CLS 2, SEP 3, MASK 4, real tokens ≥ 5;
ids 5..499 start a word and 500..999 continue one.
"""

from __future__ import annotations

import numpy as np
import torch

from electrolite.config import ObjectiveConfig, PretrainConfig, from_name
from electrolite.objectives import Electra, Masker, make_inputs

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


# --- a tiny ELECTRA on these batches ---------------------------------------------------------------

def tiny_electra(seed: int = 0, **objective) -> tuple[Electra, PretrainConfig]:
    """A tiny ELECTRA without dropout over this vocabulary, seeded; `objective` are ObjectiveConfig fields."""
    obj = ObjectiveConfig(name="electra", **objective)
    cfg = PretrainConfig(size="tiny", model=from_name("tiny", vocab_size=V, hidden_dropout_prob=0.0,
                                                      attention_probs_dropout_prob=0.0), objective=obj)
    torch.manual_seed(seed)
    return Electra(cfg.model, cfg.generator_config(), obj), cfg


def electra_inputs(cfg: PretrainConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """An 8 × 32 batch made into the objective's inputs with `cfg`'s masking, seeded."""
    m = Masker(cfg.objective, V, MASK, SPECIALS, WORD_START)
    return make_inputs(make_batch(rows=8, seq_len=32, seed=seed), m, False, torch.Generator().manual_seed(seed))
