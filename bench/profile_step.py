"""Where a pre-training step's time goes: torch.profiler over electrolite's and the baseline's step (not a test).

    python bench/profile_step.py [--model electra-small] [--precision bf16] [--dropout 0.1] [--steps 3]

Runs the same step bench/speed.py times (same rows, same shapes), on both sides, and groups the
self CPU time of every operator into: matrix products, attention glue, dropout RNG, dtype casts
and copies, vocabulary softmax / cross-entropy / sampling, other elementwise work, optimizer.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import speed

GROUPS = [
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("fused attention kernels", ("scaled_dot_product",)),
    ("dropout RNG and masks", ("bernoulli", "native_dropout", "aten::dropout")),
    ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::clone", "aten::contiguous")),
    ("vocabulary softmax, cross-entropy, sampling", ("log_softmax", "nll_loss", "aten::argmax", "aten::log",
                                                     "aten::uniform_", "aten::cumsum", "searchsorted",
                                                     "aten::_softmax", "aten::softmax", "aten::exp")),
    ("optimizer", ("adam", "clip_grad", "aten::_foreach", "linalg_vector_norm")),
    ("layer norm, GELU, other elementwise", ("",)),
]


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return GROUPS[-1][0]


def profile(spec: dict, steps: int) -> tuple[float, dict[str, float]]:
    import torch
    from torch.profiler import profile as torch_profile

    from electrolite.config import resolve_pretrain_config
    rows = torch.from_numpy(__import__("numpy").load(spec["rows"]))
    objective, sop, _ = speed.PRETRAIN[spec["model"]]
    d = spec["dropout"]
    cfg = resolve_pretrain_config(overrides={
        "size": spec["model"], "objective.name": objective, "objective.sop": sop, "model.vocab_size": 30522,
        "model.hidden_dropout_prob": d, "model.attention_probs_dropout_prob": d,
        "objective.recipe": "paper"})  # like for like with transformers' ELECTRA: one shared embedding module
    batches = [rows[i * speed.BATCH:(i + 1) * speed.BATCH] for i in range(len(rows) // speed.BATCH)]
    torch.manual_seed(0)
    build = speed.ours_pretrain if spec["impl"] == "electrolite" else speed.hf_pretrain
    step = build(cfg, spec, batches, torch.device("cpu"), spec["precision"] == "bf16")
    step()
    with torch_profile() as prof:
        for _ in range(steps):
            step()
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for e in prof.key_averages():
        if e.key.startswith("autograd::") or e.key.startswith("Optimizer."):
            continue
        t = e.self_cpu_time_total / 1e6 / steps
        groups[group_of(e.key.lower() if "adam" in e.key.lower() else e.key)] += t
        total += t
    return total, dict(groups)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="electra-small")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    rows = Path(tempfile.mkdtemp()) / "rows.npy"
    speed.pretrain_rows(rows, speed.BATCH * 8)
    results = {}
    for impl in ("hf", "electrolite"):
        spec = dict(case="pretrain", impl=impl, model=args.model, precision=args.precision, dropout=args.dropout,
                    steps=args.steps, device="cpu", rows=str(rows))
        results[impl] = profile(spec, args.steps)
    print(f"{args.model}, {args.precision}, dropout {args.dropout}: self CPU seconds per step "
          f"(profiler on, {args.steps} steps)\n")
    print("| operator group | baseline s | electrolite s | electrolite share |")
    print("| --- | ---: | ---: | ---: |")
    for group, _ in GROUPS:
        b, o = results["hf"][1].get(group, 0.0), results["electrolite"][1].get(group, 0.0)
        print(f"| {group} | {b:.3f} | {o:.3f} | {100 * o / results['electrolite'][0]:.0f}% |")
    print(f"| total | {results['hf'][0]:.3f} | {results['electrolite'][0]:.3f} | 100% |")
    print(json.dumps({k: v[1] for k, v in results.items()}))


if __name__ == "__main__":
    main()
