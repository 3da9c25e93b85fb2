"""Pre-train ELECTRA with transformers' model classes next to an electrolite run (not run by tests).

    python bench/hf_pretrain_parity.py RUN [--steps N] [--eval-every N] [--precision fp32|bf16] [--out FILE]

RUN is an `electrolite pretrain` run dir with the electra objective. This script trains the same
ELECTRA again, built from transformers alone, and prints its validation metrics next to RUN's
(metrics.jsonl) at every step where RUN has them (and every --eval-every steps): does an
independent implementation show the same discriminator curve? (STUDY.md, "Why ELECTRA loses here".)
"loss − prior" is the validation RTD loss minus that of always answering the replaced fraction.

What is transformers' here: the generator (``ElectraForMaskedLM``) and the discriminator
(``ElectraForPreTraining``), their initialisation, their losses (the generator's masked-LM loss
from ``labels``, the discriminator's BCE over attended tokens from ``labels``), the sharing (the
generator's ``electra.embeddings`` is the discriminator's module, its ``generator_lm_head`` the
word-embedding matrix), the optimizer (``torch.optim.AdamW``) and the schedule
(``get_linear_schedule_with_warmup``). Samples are drawn with ``torch.multinomial``. What is
electrolite's: the corpus, the batch order (``EpochSampler`` with RUN's seed) and the masking
(``make_inputs`` with the generator seeded as `pretrain` seeds it), so both runs see the same
sequences and the same masked positions; the weight-decay groups (``optim.param_groups``: none on
biases and LayerNorm); and the validation metrics, which ``pretrain.evaluate`` computes on the
run's validation batches with the same masks and ``rank_auc``.

Everything else comes from RUN's config.yaml: the shapes, the generator's size, the loss weights,
learning rate, warm-up, batch, Adam's betas and epsilon, clipping, dropout, seed. Dropout masks,
samples and initial weights are each framework's own, so the runs agree in distribution, not bit
for bit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from electrolite.data.dataset import EpochSampler
from electrolite.objectives import ObjectiveOutput, make_inputs, prior_rtd_loss, rank_auc
from electrolite.pretrain import RunSetup as Setup
from electrolite.pretrain import load_run_config, validation_metrics
from electrolite.training.optim import param_groups


def electra_config(m, heads: int, intermediate: int):
    from transformers import ElectraConfig
    return ElectraConfig(
        vocab_size=m.vocab_size, embedding_size=m.embedding_size, hidden_size=m.hidden_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=heads, intermediate_size=intermediate,
        hidden_act=m.hidden_act, hidden_dropout_prob=m.hidden_dropout_prob,
        attention_probs_dropout_prob=m.attention_probs_dropout_prob,
        max_position_embeddings=m.max_position_embeddings, type_vocab_size=m.type_vocab_size,
        layer_norm_eps=m.layer_norm_eps, initializer_range=m.initializer_range, pad_token_id=m.pad_token_id)


class HFElectra(torch.nn.Module):
    """Generator + discriminator from transformers, sharing the embedding module (the paper's setup)."""

    def __init__(self, setup: Setup):
        super().__init__()
        from transformers import ElectraForMaskedLM, ElectraForPreTraining
        m, g = setup.cfg.model, setup.generator_cfg
        self.discriminator = ElectraForPreTraining(electra_config(m, m.num_attention_heads, m.intermediate_size))
        self.generator = ElectraForMaskedLM(electra_config(g, g.num_attention_heads, g.intermediate_size))
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight
        self.objective = setup.cfg.objective

    def forward(self, inputs: dict[str, torch.Tensor]) -> ObjectiveOutput:
        original, sel = inputs["input_ids"], inputs["mlm_mask"]
        attention, types = inputs["attention_mask"].long(), inputs["token_type_ids"]
        mlm_labels = torch.where(sel, original, torch.full_like(original, -100))
        gen = self.generator(input_ids=inputs["masked_input_ids"], attention_mask=attention,
                             token_type_ids=types, labels=mlm_labels)
        with torch.no_grad():
            logits = gen.logits[sel].float() / self.objective.temperature
            sampled = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
            acc = (gen.logits[sel].argmax(-1) == original[sel]).float().mean()
        corrupted = original.clone()
        corrupted[sel] = sampled
        labels = ((corrupted != original) & inputs["attention_mask"]).long()
        disc = self.discriminator(input_ids=corrupted, attention_mask=attention, token_type_ids=types, labels=labels)
        loss = self.objective.generator_weight * gen.loss + self.objective.discriminator_weight * disc.loss
        real = inputs["attention_mask"]
        return ObjectiveOutput(loss=loss, mlm_loss=gen.loss.detach(), mlm_accuracy=acc, rtd_loss=disc.loss.detach(),
                               rtd_auc=rank_auc(disc.logits.detach().float()[real], labels.bool()[real]),
                               replaced_fraction=labels[real].float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="an electrolite ELECTRA pre-training run dir (its config.yaml and metrics.jsonl)")
    ap.add_argument("--corpus", help="the prepared corpus, if not where RUN's config says")
    ap.add_argument("--steps", type=int, help="stop early (the schedule stays RUN's)")
    ap.add_argument("--eval-every", type=int, help="evaluate every N steps (default: RUN's eval_every)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="also write the rows as JSON lines here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import get_linear_schedule_with_warmup

    cfg = load_run_config(args.run)
    if cfg.objective.name != "electra":
        raise SystemExit(f"{args.run}: objective {cfg.objective.name!r}, not electra")
    if args.corpus:
        cfg.corpus = args.corpus
    setup = Setup(cfg)
    t = setup.cfg.train
    run_valid = {}
    for line in open(Path(args.run) / "metrics.jsonl"):
        r = json.loads(line)
        if "valid_rtd_auc" in r:
            run_valid[r["step"]] = r

    torch.manual_seed(t.seed)
    model = HFElectra(setup)
    model.train()
    groups = param_groups(model, t.weight_decay, t.learning_rate)  # shared tensors once; no decay on biases, LN
    opt = torch.optim.AdamW(groups, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon)
    sched = get_linear_schedule_with_warmup(opt, t.resolved_warmup_steps, t.steps)
    sampler = EpochSampler(len(setup.corpus), t.batch_size, t.seed, 0, 1)
    mask_gen = torch.Generator().manual_seed(t.seed + 1)
    params = [p for g in groups for p in g["params"]]
    steps = min(args.steps or t.steps, t.steps)
    out = open(args.out, "w") if args.out else None
    every = args.eval_every or t.eval_every

    def report(step: int) -> None:
        hf = validation_metrics(model, setup, torch.device("cpu"), t.eval_batches, args.precision)
        gap = hf["valid_rtd_loss"] - prior_rtd_loss(hf["valid_replaced_fraction"])
        row = {"step": step, "hf_rtd_auc": round(hf["valid_rtd_auc"], 4), "hf_rtd_loss_minus_prior": round(gap, 4),
               "hf_mlm_accuracy": round(hf["valid_mlm_accuracy"], 4)}
        r = run_valid.get(step)
        if r:
            gap = r["valid_rtd_loss"] - prior_rtd_loss(r["valid_replaced_fraction"])
            row.update({"run_rtd_auc": round(r["valid_rtd_auc"], 4), "run_rtd_loss_minus_prior": round(gap, 4),
                        "run_mlm_accuracy": round(r["valid_mlm_accuracy"], 4)})
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    report(0)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        inputs = make_inputs(setup.corpus.batch(sampler.next_batch()), setup.masker, False, mask_gen)
        with torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(inputs).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        sched.step()
        if (every and step % every == 0) or step in run_valid or step == steps:
            report(step)
    print(json.dumps({"steps": steps, "seconds": round(time.perf_counter() - started, 1),
                      "precision": args.precision}), flush=True)


if __name__ == "__main__":
    main()
