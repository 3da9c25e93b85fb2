"""Pre-training objectives, independent of the encoder's architecture.

Data side (CPU, seeded by a ``torch.Generator`` so a resumed run masks identically):
``Masker`` chooses positions (token, whole-word or ALBERT n-gram) and corrupts them, and
``sop_swap`` swaps the two segments of half the examples for sentence-order prediction.
``make_inputs`` applies both to a corpus batch.

Model side: ``MaskedLM`` (BERT) and ``Electra`` (generator + discriminator with shared
embeddings) take the prepared batch and return an ``ObjectiveOutput`` with the loss and its
parts. Both take ``sop=True`` to add ALBERT's sentence-order head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from electrolite.config import EncoderConfig, ObjectiveConfig
from electrolite.heads import IGNORE_INDEX, MLMHead, RTDHead, SOPHead
from electrolite.model import Encoder

# --- masking -----------------------------------------------------------------------------------

class Masker:
    """Chooses and corrupts positions for masked-LM style objectives.

    Args:
        objective: mask_prob, masking strategy, max_ngram and the [MASK]/random/keep split.
        vocab_size: size of the vocabulary (random replacements are drawn from non-special ids).
        mask_token_id: id of [MASK].
        special_ids: ids never selected ([CLS], [SEP], [PAD], [MASK]).
        word_start: (V,) bool, True where a token begins a word (for whole_word and ngram).
    """

    def __init__(self, objective: ObjectiveConfig, vocab_size: int, mask_token_id: int,
                 special_ids: list[int], word_start: np.ndarray | None = None):
        self.mask_prob = objective.mask_prob
        self.strategy = objective.masking
        self.max_ngram = objective.max_ngram
        self.mask_token_frac = objective.mask_token_frac
        self.random_token_frac = objective.random_token_frac
        self.mask_token_id = mask_token_id
        self.special = torch.zeros(vocab_size, dtype=torch.bool)
        self.special[torch.tensor(sorted(set(special_ids)))] = True
        self.random_pool = torch.nonzero(~self.special).squeeze(1)  # ids a random replacement may take
        if word_start is None:
            if self.strategy != "token":
                raise ValueError(f"masking={self.strategy} needs the tokenizer's word_start table")
            word_start = np.ones(vocab_size, dtype=bool)
        self.word_start = torch.as_tensor(np.asarray(word_start, dtype=bool))

    def candidates(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: real, non-special tokens (the only ones that may be masked)."""
        return attention_mask.bool() & ~self.special[input_ids]

    def select(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """(B, T) bool of positions to predict: about mask_prob of each sequence's candidates."""
        cand = self.candidates(input_ids, attention_mask)
        n = cand.sum(1)
        k = torch.where(n > 0, torch.clamp((n.float() * self.mask_prob).round().long(), min=1), 0)  # (B,)
        if self.strategy == "token":
            return self._select_tokens(cand, k, generator)
        if self.strategy == "whole_word":
            return self._select_whole_words(input_ids, cand, k, generator)
        return self._select_ngrams(input_ids, cand, k, generator)

    @staticmethod
    def _select_tokens(cand: torch.Tensor, k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        scores = torch.rand(cand.shape, generator=generator)
        scores[~cand] = 2.0  # non-candidates sort last
        rank = scores.argsort(1).argsort(1)  # (B, T) rank of each position in random order
        return (rank < k[:, None]) & cand

    def _word_ids(self, input_ids: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        # A non-candidate (special/pad) token always starts a "word" of its own, so words never
        # span segments. (B, T) word index, increasing along each row.
        starts = self.word_start[input_ids] | ~cand
        return starts.long().cumsum(1) - 1

    def _select_whole_words(self, input_ids: torch.Tensor, cand: torch.Tensor, k: torch.Tensor,
                            generator: torch.Generator) -> torch.Tensor:
        b, t = cand.shape
        word = self._word_ids(input_ids, cand)  # (B, T)
        word_score = torch.rand((b, t), generator=generator)  # one score per word id
        scores = word_score.gather(1, word)
        scores[~cand] = 2.0
        # Stable sort by score keeps each word's sub-tokens together and in order.
        order = torch.sort(scores, dim=1, stable=True).indices
        rank = order.argsort(1)  # (B, T)
        first_rank = torch.full((b, t), t, dtype=torch.long).scatter_reduce(1, word, rank, "amin")
        length = torch.zeros((b, t), dtype=torch.long).scatter_add(1, word, torch.ones_like(word))
        fr, ln = first_rank.gather(1, word), length.gather(1, word)  # per token: its word's values
        # Take a word when half of it fits in the budget k, so the expected rate stays at
        # mask_prob instead of always over- or under-shooting by part of a word; the first
        # word is always taken.
        take = (2 * fr + ln <= 2 * k[:, None]) | (fr == 0)
        return take & cand

    def _select_ngrams(self, input_ids: torch.Tensor, cand: torch.Tensor, k: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        # ALBERT's n-gram masking: spans of n whole words, p(n) ∝ 1/n for n ≤ max_ngram, chosen
        # at random non-overlapping word starts until the budget is spent. Per-row Python on
        # numpy: a few hundred words per row, far below a training step's cost.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        p = 1.0 / np.arange(1, self.max_ngram + 1)
        p /= p.sum()
        word = self._word_ids(input_ids, cand).numpy()
        cand_np = cand.numpy()
        out = np.zeros(cand_np.shape, dtype=bool)
        for r in range(cand_np.shape[0]):
            budget = int(k[r])
            if budget == 0:
                continue
            pos = np.nonzero(cand_np[r])[0]
            wid = word[r, pos]
            bounds = np.flatnonzero(np.r_[True, wid[1:] != wid[:-1], True])
            spans = [(pos[s], pos[e - 1] + 1) for s, e in zip(bounds[:-1], bounds[1:])]  # word token spans
            covered = np.zeros(len(spans), dtype=bool)
            count = 0
            for w in rng.permutation(len(spans)):
                if count >= budget:
                    break
                n = int(rng.choice(self.max_ngram, p=p)) + 1
                # Shrink n until the span fits the row, stays inside one segment and the budget.
                while n > 0:
                    last = w + n - 1
                    if (last < len(spans) and not covered[w:last + 1].any()
                            and spans[last][1] - spans[w][0] == sum(e - s for s, e in spans[w:last + 1])):
                        size = spans[last][1] - spans[w][0]
                        if count + size <= budget or count == 0:
                            break
                    n -= 1
                if n == 0:
                    continue
                covered[w:w + n] = True
                s, e = spans[w][0], spans[w + n - 1][1]
                out[r, s:e] = True
                count += e - s
        return torch.from_numpy(out) & cand

    def corrupt(self, input_ids: torch.Tensor, selected: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        """Replace selected positions: mask_token_frac [MASK], random_token_frac random, the rest kept."""
        u = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (u < self.mask_token_frac)
        to_random = selected & (u >= self.mask_token_frac) & (u < self.mask_token_frac + self.random_token_frac)
        out = input_ids.clone()
        out[to_mask] = self.mask_token_id
        if to_random.any():
            pick = torch.randint(len(self.random_pool), (int(to_random.sum()),), generator=generator)
            out[to_random] = self.random_pool[pick]
        return out


def sop_swap(input_ids: torch.Tensor, segment_lengths: torch.Tensor, swap: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap segments A and B of the rows where `swap` is True: [CLS] A [SEP] B [SEP] → [CLS] B [SEP] A [SEP].

    Args:
        input_ids: (B, T) packed examples.
        segment_lengths: (B, 2) lengths of A and B (B = 0: single segment, never swapped).
        swap: (B,) bool.

    Returns:
        (input_ids, token_type_ids), both (B, T).
    """
    b, t = input_ids.shape
    la, lb = segment_lengths[:, :1], segment_lengths[:, 1:]  # (B, 1)
    j = torch.arange(t)[None, :]  # (1, T)
    src = torch.where((j >= 1) & (j <= lb), la + 1 + j,
                      torch.where(j == lb + 1, la + 1,
                                  torch.where((j >= lb + 2) & (j <= la + lb + 1), j - lb - 1, j)))
    do = (swap & (segment_lengths[:, 1] > 0))[:, None]
    src = torch.where(do, src, j.expand(b, t))
    ids = input_ids.gather(1, src)
    first = torch.where(do, lb, la)  # length of the segment now first
    second_end = torch.where(lb > 0, la + lb + 2, la + 1)  # last position of the example
    types = ((j > first + 1) & (j <= second_end)).long()
    return ids, types


def make_inputs(batch: dict[str, torch.Tensor], masker: Masker, sop: bool,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Turn a corpus batch into an objective's inputs (on CPU).

    Returns a dict with input_ids (the original, after any SOP swap), masked_input_ids,
    mlm_mask (B, T) bool of selected positions, attention_mask, token_type_ids and sop_labels
    ((B,) 1 = swapped, 0 = in order, -100 = single segment).
    """
    ids, seg = batch["input_ids"], batch["segment_lengths"]
    attention = batch["attention_mask"].bool()
    swap = torch.rand(ids.shape[0], generator=generator) < 0.5  # drawn either way: masks don't depend on sop
    if not sop:
        swap = torch.zeros_like(swap)  # nothing swapped, so nothing labelled swapped
    ids, types = sop_swap(ids, seg, swap)
    sop_labels = torch.where(seg[:, 1] > 0, swap.long(), IGNORE_INDEX)
    selected = masker.select(ids, attention, generator)
    return dict(input_ids=ids, masked_input_ids=masker.corrupt(ids, selected, generator),
                mlm_mask=selected, attention_mask=attention, token_type_ids=types, sop_labels=sop_labels)


# --- objectives --------------------------------------------------------------------------------

@dataclass
class ObjectiveOutput:
    """What an objective returns: the loss to optimise and its parts (detached unless noted)."""

    loss: torch.Tensor
    """Weighted total, with gradient."""
    mlm_loss: torch.Tensor
    mlm_accuracy: torch.Tensor
    rtd_loss: torch.Tensor | None = None
    rtd_accuracy: torch.Tensor | None = None
    """Over all real tokens."""
    rtd_replaced_accuracy: torch.Tensor | None = None
    """Over the tokens the generator actually replaced."""
    rtd_original_accuracy: torch.Tensor | None = None
    replaced_fraction: torch.Tensor | None = None
    """Share of real tokens that differ from the original after sampling."""
    rtd_auc: torch.Tensor | None = None
    """Probability that a replaced token scores above an original one (0.5 = chance); sensitive
    long before thresholded accuracy leaves the all-original baseline."""
    corrective_lm_loss: torch.Tensor | None = None
    """ELECTRA with corrective_lm_weight: the discriminator's masked-LM loss on the corrupted positions."""
    sop_loss: torch.Tensor | None = None
    sop_accuracy: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    """(N, V) at the N selected positions only."""
    corrupted_ids: torch.Tensor | None = None
    rtd_labels: torch.Tensor | None = None
    rtd_logits: torch.Tensor | None = None

    def metrics(self) -> dict[str, float]:
        """Scalar parts as floats, for logging."""
        out = {}
        for name in ("loss", "mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "rtd_replaced_accuracy",
                     "rtd_original_accuracy", "replaced_fraction", "rtd_auc", "corrective_lm_loss", "sop_loss",
                     "sop_accuracy"):
            v = getattr(self, name)
            if v is not None:
                out[name] = float(v.detach())
        return out


def _masked_lm(hidden: torch.Tensor, head: MLMHead, inputs: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLM loss at the selected positions only: (loss, accuracy, logits (N, V), targets (N,))."""
    sel = inputs["mlm_mask"]
    logits = head(hidden[sel])  # (N, V): the output layer never runs on unselected positions
    targets = inputs["input_ids"][sel]
    if targets.numel() == 0:
        zero = hidden.sum() * 0.0
        return zero, zero.detach(), logits, targets
    loss = F.cross_entropy(logits.float(), targets)
    # max().indices is argmax (the first maximal index on ties) at a fifth of its CPU time over a
    # (N, 16k) bf16 matrix: 10 ms against 47 ms per step measured on one thread.
    acc = (logits.detach().max(-1).indices == targets).float().mean()
    return loss, acc, logits, targets


def _sentence_order(hidden: torch.Tensor, head: SOPHead, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()  # (B, 2)
    valid = labels != IGNORE_INDEX
    if not valid.any():
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    acc = (logits.detach().argmax(-1) == labels)[valid].float().mean()
    return loss, acc


class MaskedLM(nn.Module):
    """BERT's masked-LM objective (optionally + SOP) on any encoder."""

    def __init__(self, model: EncoderConfig, objective: ObjectiveConfig):
        super().__init__()
        self.objective = objective
        self.encoder = Encoder(model)
        self.mlm_head = MLMHead(model, self.encoder.embeddings.word_embeddings)
        if objective.sop:
            self.sop_head = SOPHead(model)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ObjectiveOutput:
        hidden = self.encoder(inputs["masked_input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        mlm_loss, mlm_acc, logits, _ = _masked_lm(hidden, self.mlm_head, inputs)
        loss = mlm_loss
        out = ObjectiveOutput(loss=loss, mlm_loss=mlm_loss.detach(), mlm_accuracy=mlm_acc, mlm_logits=logits)
        if self.objective.sop:
            out.sop_loss, out.sop_accuracy = _sentence_order(hidden, self.sop_head, inputs["sop_labels"])
            out.loss = loss + self.objective.sop_weight * out.sop_loss
            out.sop_loss = out.sop_loss.detach()
        return out


def rank_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ROC AUC of `scores` for boolean `labels` (Mann-Whitney U from ranks); 0.5 if a class is empty."""
    n_pos = labels.sum()
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(0.5)
    # Tied scores share their mean rank: bf16 logits tie often, and a discriminator that has collapsed to
    # one output ties everywhere (AUC exactly 0.5, not whatever the sort order of the ties gives).
    ordered, order = scores.sort()
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    mid = ends - (counts.to(torch.float64) - 1) / 2  # mean of ranks end-count+1 .. end
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = mid[group]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).float()


def prior_rtd_loss(replaced_fraction: float) -> float:
    """BCE of always answering the replaced fraction q: the loss of a discriminator that learned nothing."""
    q = replaced_fraction
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def sample_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Draw one id per row from softmax(logits / temperature), in fp32, without gradient.

    Inverse-CDF sampling (one uniform per row, a cumulative sum and a binary search) draws from
    exactly the distribution Gumbel-max does, with N uniforms instead of N × V plus two logarithms:
    on a (614, 30522) generator output 107 CPU-ms against 400 (BENCHMARKS.md). A zero-probability
    id is never drawn.
    """
    with torch.no_grad():
        z = logits.detach().float()
        probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # (N, V)
        cdf = probs.cumsum_(-1)
        u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]  # in [0, total)
        ids = torch.searchsorted(cdf, u, right=True).squeeze(1)  # first id whose cdf exceeds u
        return ids.clamp_(max=cdf.shape[-1] - 1)


class Electra(nn.Module):
    """ELECTRA: a small masked-LM generator corrupts tokens; the discriminator detects replacements.

    Generator and discriminator share token, position and type embeddings and the embedding
    LayerNorm (one module); each has its own projection to its hidden size when needed. With
    ``embedding_sharing: gdes`` the discriminator has an embedding module of its own whose tensors
    always equal the generator's plus a residual (see ``after_optimizer_step``), so it stays a plain
    encoder for fine-tuning and export. The small-budget levers (generator learning rate, replacement
    curriculum, two-stage warm start) are driven by the recipe through ``set_step``.

    Two-stage warm start: the first stage trains the discriminator's encoder (and, shared, the embeddings) as
    a masked LM; the second continues from exactly those weights with RTD. The generator's own weights take no
    step in the first stage. Under GDES its table also stays as initialised, and the discriminator's trained
    embeddings become generator + residual, so the generator still starts weak.
    """

    random_pool: torch.Tensor  # (V',) a buffer (register_buffer): the ids a uniform replacement may take

    def __init__(self, model: EncoderConfig, generator: EncoderConfig, objective: ObjectiveConfig):
        super().__init__()
        self.objective = objective
        self.gdes = objective.embedding_sharing == "gdes"
        self.discriminator = Encoder(model)
        shared = None if self.gdes else self.discriminator.embeddings
        self.generator = (self.discriminator if objective.tie_encoders else Encoder(generator, embeddings=shared))
        if self.gdes:  # the residual starts at zero: the discriminator embeds exactly as the generator does
            self.discriminator.embeddings.load_state_dict(self.generator.embeddings.state_dict())
        self.generator_head = MLMHead(generator, self.generator.embeddings.word_embeddings)
        self.discriminator_head = RTDHead(model)
        if objective.sop:
            self.sop_head = SOPHead(model)
        if objective.two_stage_fraction > 0 or objective.corrective_lm_weight > 0:  # the discriminator as an LM
            self.discriminator_mlm_head = MLMHead(model, self.discriminator.embeddings.word_embeddings)
        self.temperature, self.uniform_share = objective.temperature, 0.0
        self.first_stage = False
        self._generator_embeddings_before: list[torch.Tensor] | None = None
        pool = torch.ones(model.vocab_size, dtype=torch.bool)
        pool[model.pad_token_id] = False
        self.register_buffer("random_pool", torch.nonzero(pool).squeeze(1), persistent=False)

    @property
    def changes_stage(self) -> bool:
        """Whether the set of parameters that get a gradient changes during the run (the two-stage warm start)."""
        return self.objective.two_stage_fraction > 0

    def set_random_pool(self, ids: torch.Tensor) -> None:
        """Ids a uniform replacement may take (the non-special ones; default: all but padding)."""
        self.random_pool = ids.to(self.random_pool.device)

    def set_step(self, step: int, steps: int) -> None:
        """Put the schedules at `step` of `steps`: the curriculum's temperature and uniform share, and the stage."""
        self.temperature, self.uniform_share = self.objective.curriculum(step, steps)
        self.first_stage = step < self.objective.first_stage_steps(steps)

    def set_final(self) -> None:
        """The corruption the recipe ends at (evaluation always measures against it): no curriculum, stage 2."""
        self.temperature, self.uniform_share, self.first_stage = self.objective.temperature, 0.0, False

    def lr_scales(self) -> dict[str, float]:
        """{parameter name: learning-rate multiplier} for the generator's own parameters (generator_lr_scale).

        Shared embeddings belong to the discriminator (they get its RTD gradient); under GDES the
        generator's table is the generator's alone.
        """
        scale = self.objective.generator_lr_scale
        if scale == 1.0:
            return {}
        own = {id(p) for p in self.generator_parameters()}
        return {name: scale for name, p in self.named_parameters() if id(p) in own}

    def generator_parameters(self) -> list[nn.Parameter]:
        """The parameters only the generator's loss trains (for decoupled clipping)."""
        mine = {id(p) for p in self.discriminator.parameters()}
        seen: dict[int, nn.Parameter] = {}
        for module in (self.generator, self.generator_head):
            for p in module.parameters():
                if id(p) not in mine:
                    seen[id(p)] = p
        return list(seen.values())

    def before_optimizer_step(self) -> None:
        """GDES: remember the generator's embeddings, so the discriminator's can follow their update."""
        if self.gdes:
            self._generator_embeddings_before = [p.detach().clone() for p in self.generator.embeddings.parameters()]

    @torch.no_grad()
    def after_optimizer_step(self, lr: float, weight_decay: float) -> None:
        """GDES: discriminator embeddings = generator's + residual, kept as one plain tensor per parameter.

        The discriminator's embedding tensor D = sg(G) + R. Its gradient is R's (G gets none from RTD), so
        the optimizer's update of D is R's update; G's own update (from the masked LM) is added here, and R
        takes AdamW's decoupled weight decay (the group of D has none: D itself must not decay to zero).
        """
        if not self.gdes or self._generator_embeddings_before is None:
            return
        pairs = zip(self.discriminator.embeddings.named_parameters(), self.generator.embeddings.parameters(),
                    self._generator_embeddings_before)
        for (name, d), g, g_before in pairs:
            residual = d - g_before
            if weight_decay and d.ndim >= 2:
                residual.mul_(1.0 - lr * weight_decay)
            d.copy_(g + residual)
        self._generator_embeddings_before = None

    def no_weight_decay(self) -> set[str]:
        """Parameter names whose decay `after_optimizer_step` applies itself (GDES: to the residual only)."""
        if not self.gdes:
            return set()
        return {f"discriminator.embeddings.{n}" for n, _ in self.discriminator.embeddings.named_parameters()}

    def residual_embeddings(self) -> dict[str, torch.Tensor]:
        """GDES: the discriminator's embedding residuals (its tensors minus the generator's); {} when shared."""
        if not self.gdes:
            return {}
        g = dict(self.generator.embeddings.named_parameters())
        return {n: (d - g[n]).detach() for n, d in self.discriminator.embeddings.named_parameters()}

    def corrupt(self, original: torch.Tensor, selected: torch.Tensor, gen_logits: torch.Tensor) -> torch.Tensor:
        """Replace every selected position with a sample (a share `uniform_share` of them uniform over the
        pool, the rest from softmax(logits / temperature)); a sample equal to the original counts as original."""
        corrupted = original.clone()
        samples = sample_from_logits(gen_logits, self.temperature)  # (N,)
        if self.uniform_share > 0 and samples.numel():
            uniform = torch.rand(samples.shape, device=samples.device) < self.uniform_share
            pick = torch.randint(len(self.random_pool), samples.shape, device=samples.device)
            samples = torch.where(uniform, self.random_pool[pick], samples)
        corrupted[selected] = samples
        return corrupted

    def forward(self, inputs: dict[str, torch.Tensor]) -> ObjectiveOutput:
        attention, types = inputs["attention_mask"], inputs["token_type_ids"]
        original = inputs["input_ids"]
        if self.first_stage:  # the warm start: the discriminator's encoder learns as a masked LM
            hidden = self.discriminator(inputs["masked_input_ids"], attention, types)
            mlm_loss, mlm_acc, logits, _ = _masked_lm(hidden, self.discriminator_mlm_head, inputs)
            return ObjectiveOutput(loss=mlm_loss, mlm_loss=mlm_loss.detach(), mlm_accuracy=mlm_acc, mlm_logits=logits)
        gen_hidden = self.generator(inputs["masked_input_ids"], attention, types)  # (B, T, Hg)
        gen_loss, gen_acc, gen_logits, _ = _masked_lm(gen_hidden, self.generator_head, inputs)

        corrupted = self.corrupt(original, inputs["mlm_mask"], gen_logits)
        labels = (corrupted != original) & attention  # (B, T)

        disc_hidden = self.discriminator(corrupted, attention, types)  # (B, T, H)
        logits = self.discriminator_head(disc_hidden).float()  # (B, T)
        weights = attention.float()
        per_token = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
        disc_loss = (per_token * weights).sum() / weights.sum().clamp(min=1.0)

        loss = self.objective.generator_weight * gen_loss + self.objective.discriminator_weight * disc_loss
        corrective = None
        if self.objective.corrective_lm_weight > 0:  # recover the originals where the generator wrote
            corrective, _, _, _ = _masked_lm(disc_hidden, self.discriminator_mlm_head, inputs)
            loss = loss + self.objective.corrective_lm_weight * corrective
        with torch.no_grad():
            real = attention
            correct = (logits > 0) == labels
            replaced = labels
            kept = real & ~labels
            n_rep = replaced.sum()
            out = ObjectiveOutput(
                loss=loss,
                mlm_loss=gen_loss.detach(), mlm_accuracy=gen_acc, rtd_loss=disc_loss.detach(),
                rtd_accuracy=correct[real].float().mean(),
                rtd_replaced_accuracy=correct[replaced].float().mean() if n_rep > 0 else torch.tensor(0.0),
                rtd_original_accuracy=correct[kept].float().mean(),
                replaced_fraction=n_rep.float() / real.sum().clamp(min=1),
                rtd_auc=rank_auc(logits[real], labels[real]),
                mlm_logits=gen_logits, corrupted_ids=corrupted, rtd_labels=labels, rtd_logits=logits.detach(),
                corrective_lm_loss=None if corrective is None else corrective.detach())
        if self.objective.sop:
            sop_loss, out.sop_accuracy = _sentence_order(disc_hidden, self.sop_head, inputs["sop_labels"])
            out.loss = out.loss + self.objective.sop_weight * sop_loss
            out.sop_loss = sop_loss.detach()
        return out


def build_objective(model: EncoderConfig, objective: ObjectiveConfig,
                    generator: EncoderConfig | None = None) -> MaskedLM | Electra:
    """The objective module for a config: Electra (needs the generator config) or MaskedLM."""
    if objective.name == "electra":
        if generator is None:
            raise ValueError("the electra objective needs a generator config")
        return Electra(model, generator, objective)
    return MaskedLM(model, objective)
