"""How fast can a fresh discriminator learn replaced-token detection? (STUDY.md, "Why ELECTRA loses here")

Trains an encoder + RTD head alone on a prepared corpus, with a fixed corruption instead of a
generator: 15% of positions (the objective's masking) replaced by tokens drawn

- uniformly from the vocabulary (`--replace uniform`): mostly rare tokens, spotted from the
  token itself; or
- from the corpus's unigram distribution (`--replace unigram`): frequent tokens where frequent
  tokens were, spotted only from context — what an early ELECTRA generator produces.

`--encoder hf` swaps in transformers' BertModel with the same shape, to tell our encoder's
behaviour from the architecture's. Prints the training loss and the RTD AUC every 50 steps.

    python bench/rtd_plateau.py --corpus work/books-128 --replace unigram --encoder ours --steps 400
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from electrolite.config import resolve_pretrain_config
from electrolite.data.corpus import EpochSampler
from electrolite.heads import RTDHead
from electrolite.model import Encoder
from electrolite.objectives import make_inputs, rank_auc
from electrolite.pretrain import RunSetup as Setup


class HFEncoder(torch.nn.Module):
    """transformers' BertModel with our encoder's call signature."""

    def __init__(self, m):
        super().__init__()
        from transformers import BertConfig, BertModel
        self.bert = BertModel(BertConfig(
            vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads, intermediate_size=m.intermediate_size,
            max_position_embeddings=m.max_position_embeddings), add_pooling_layer=False)

    def forward(self, ids, attention, types):
        return self.bert(input_ids=ids, attention_mask=attention.long(), token_type_ids=types).last_hidden_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--replace", choices=["uniform", "unigram"], default="unigram")
    ap.add_argument("--encoder", choices=["ours", "hf"], default="ours")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = resolve_pretrain_config({"size": "tiny", "corpus": args.corpus, "objective": {"name": "electra"},
                                   "model": {"hidden_size": args.hidden, "num_hidden_layers": args.layers,
                                             "num_attention_heads": args.heads}})
    setup = Setup(cfg)
    m = setup.cfg.model
    torch.manual_seed(0)
    encoder = HFEncoder(m) if args.encoder == "hf" else Encoder(m)
    head = RTDHead(m)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, eps=1e-6)
    sampler = EpochSampler(len(setup.corpus), args.batch_size, 0, 0, 1)
    probs = torch.ones(m.vocab_size)
    if args.replace == "unigram":  # token frequencies of 50 batches
        probs = torch.zeros(m.vocab_size)
        for _ in range(50):
            b = setup.corpus.batch(sampler.next_batch())
            probs += torch.bincount(b["input_ids"][b["attention_mask"].bool()], minlength=m.vocab_size).float()
    special = setup.special
    for i in (special.pad_token_id, special.cls_token_id, special.sep_token_id, special.mask_token_id):
        probs[i] = 0
    probs /= probs.sum()
    gen = torch.Generator().manual_seed(1)
    warmup = max(1, args.steps // 10)
    rows = []
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / warmup)
        inputs = make_inputs(setup.corpus.batch(sampler.next_batch()), setup.masker, False, gen)
        ids, sel, real = inputs["input_ids"].clone(), inputs["mlm_mask"], inputs["attention_mask"]
        ids[sel] = torch.multinomial(probs, int(sel.sum()), replacement=True, generator=gen)
        labels = (ids != inputs["input_ids"]) & real
        logits = head(encoder(ids, real, inputs["token_type_ids"])).float()
        loss = F.binary_cross_entropy_with_logits(logits[real], labels[real].float())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0:
            auc = float(rank_auc(logits[real].detach(), labels[real]))
            rows.append({"step": step, "loss": round(loss.item(), 4), "auc": round(auc, 3)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"replace": args.replace, "encoder": args.encoder, "lr": args.lr, "last": rows[-1]}))


if __name__ == "__main__":
    main()
