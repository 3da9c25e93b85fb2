"""How much a pre-trained encoder's token vectors still tell tokens apart (not a test).

    python bench/representations.py RUN [RUN ...] [--batches 4] [--random-init]

For each pre-training run (ELECTRA: its discriminator; MLM: its encoder), and with --random-init
for the first run's architecture from random weights (what fine-tuning "from scratch" starts from),
it encodes validation sequences of the run's own corpus, uncorrupted, as fine-tuning would, and
prints per layer (0 = embeddings):

- cos: the mean cosine similarity between the vectors of two different tokens of a sequence
  (0: spread out; 1: every token has the same vector, so what the token was is lost);
- rank: the effective rank of the centered token vectors, exp of the entropy of the normalised
  singular values (out of hidden_size);
- same/other: the mean cosine between two occurrences of the same word id at different places,
  divided by that of two different word ids (how much of the vector is still the word).

Used in STUDY.md to show what a discriminator that stays at its class prior does to its layers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from electrolite.interop.load import load_encoder
from electrolite.model import Encoder
from electrolite.pretrain import RunSetup as Setup
from electrolite.pretrain import load_run_config
from electrolite.tasks.model import from_scratch


def layer_stats(states: list[torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> list[dict]:
    real = mask.bool()
    flat_ids = ids[real]  # (N,)
    n = flat_ids.numel()
    a = torch.randint(0, n, (20000,), generator=g)
    b = torch.randint(0, n, (20000,), generator=g)
    keep = a != b
    a, b = a[keep], b[keep]
    same = flat_ids[a] == flat_ids[b]
    # Pairs of the same word id at different places: every pair among repeated ids, capped.
    order = torch.argsort(flat_ids)
    sorted_ids = flat_ids[order]
    rep = (sorted_ids[1:] == sorted_ids[:-1]).nonzero().squeeze(1)
    sa, sb = order[rep], order[rep + 1]
    out = []
    for h in states:
        x = h[real].float()  # (N, H)
        xn = torch.nn.functional.normalize(x, dim=-1)
        cos = (xn[a] * xn[b]).sum(-1)
        cos_same = (xn[sa] * xn[sb]).sum(-1).mean()
        cos_other = cos[~same].mean()
        s = torch.linalg.svdvals(x - x.mean(0))
        p = s / s.sum()
        rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        out.append({"cos": round(cos.mean().item(), 3), "rank": round(rank.item(), 1),
                    "same_over_other": round((cos_same / cos_other).item(), 2) if cos_other > 0 else None})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--batches", type=int, default=4, help="validation batches of 32 sequences")
    p.add_argument("--random-init", action="store_true", help="add the first run's architecture, random weights")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    setup = Setup(load_run_config(args.runs[0]))
    rows = min(len(setup.valid), 32 * args.batches)
    batch = setup.valid.batch(list(range(rows)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    models = [(r, load_encoder(r)) for r in args.runs]
    if args.random_init:
        models.append(("random init", from_scratch(models[0][1], seed=0)))
    results = {}
    for name, loaded in models:
        enc = Encoder(loaded.config)
        enc.load_state_dict(loaded.state)
        enc.eval()
        _, states = enc(ids, mask, output_hidden_states=True)
        stats = layer_stats(states, ids, mask, torch.Generator().manual_seed(0))
        results[name] = stats
        print(f"{name}: " + "  ".join(f"L{i} cos {s['cos']:.3f} rank {s['rank']:.1f} same/other {s['same_over_other']}"
                                      for i, s in enumerate(stats)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
