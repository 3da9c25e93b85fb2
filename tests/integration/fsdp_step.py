"""One optimizer step of tiny objectives, run by test_e2e_fsdp.py in 1 process or under torchrun with FSDP.

    python fsdp_step.py OUTDIR ROWS CASE...                       # one process, all ROWS rows
    torchrun --nproc_per_node 2 fsdp_step.py OUTDIR ROWS CASE...  # FSDP, each rank its half (gloo)

CASE is mlm, electra, albert (masked LM on one layer shared by both depths, 2 micro-batches per
step) or electra-bf16 (in bf16 autocast). Each writes OUTDIR/CASE.safetensors (the weights after
the step, as checkpoint.save_weights writes them: gathered from the shards under FSDP),
CASE-optimizer.safetensors (the AdamW state as a checkpoint holds it) and CASE-step.safetensors
(the gradient norm, how far the weights moved, the share of the parameters this rank holds).

The inputs are fixed (ddp_step.fixed_batch: the same number of masked positions in every row), so
the mean loss over 2 ranks' halves is the mean over all rows; ELECTRA's generator samples one
uniform per masked position, and rank 1 skips the uniforms rank 0's rows take, so every row draws
what it draws in one process. The two ways must give the same weights (in fp32; bf16 rounds
matrices of other shapes differently).
"""

import sys
from pathlib import Path

import torch
from ddp_step import PER_ROW, fixed_batch
from safetensors.torch import save_file

from electrolite.config import resolve_pretrain_config
from electrolite.objectives import build_objective
from electrolite.pretrain import objective_step
from electrolite.training import checkpoint, sharding
from electrolite.training.optim import adamw, param_groups
from electrolite.training.runtime import init_distributed, shutdown, wrap_data_parallel

CASES = {"mlm": ({"objective.name": "mlm"}, 1, "fp32"),
         "electra": ({"objective.name": "electra", "objective.recipe": "paper"}, 1, "fp32"),
         "albert": ({"objective.name": "mlm", "model.num_hidden_groups": 1}, 2, "fp32"),
         "electra-bf16": ({"objective.name": "electra", "objective.recipe": "paper"}, 1, "bf16")}


def step(out: Path, rows: int, case: str, dist) -> None:
    overrides, accumulation, precision = CASES[case]
    cfg = resolve_pretrain_config(overrides={
        "size": "tiny", "model.vocab_size": 500, "model.hidden_dropout_prob": 0.0,
        "model.attention_probs_dropout_prob": 0.0, "train.parallel": "fsdp", **overrides})
    torch.manual_seed(0)
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    total = sum(p.numel() for p in model.parameters())
    trained = wrap_data_parallel(model, dist, torch.device("cpu"), cfg.train.parallel)
    optimizer = adamw(param_groups(model, 0.01, 1e-3), 1e-3, (0.9, 0.999), 1e-6, torch.device("cpu"))
    held = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    share = rows // dist.world_size
    mine = {k: v[dist.rank * share:(dist.rank + 1) * share] for k, v in fixed_batch(rows).items()}
    accumulation = accumulation if dist.enabled else 1  # one process: the whole batch at once
    micro = share // accumulation
    batches = [{k: v[i * micro:(i + 1) * micro] for k, v in mine.items()} for i in range(accumulation)]
    torch.manual_seed(2)
    torch.rand(dist.rank * share * PER_ROW)  # the generator's uniforms of the rows before this rank's
    _, grad_norm, applied = objective_step(trained, optimizer, batches, accumulation, torch.device("cpu"), precision,
                                       1.0, dist)
    assert applied
    weights = sharding.gather_weights(model)  # collectives: every rank
    moments = sharding.gather_optimizer(model, optimizer)
    if dist.is_main:
        checkpoint.save_weights(weights, out / f"{case}.safetensors")
        if not isinstance(moments, dict):
            moments = checkpoint.optimizer_tensors(model, optimizer)
        save_file(moments, str(out / f"{case}-optimizer.safetensors"))
        after = weights.state_dict()
        moved = max((after[k] - initial[k]).abs().max() for k in after)  # the step did change the weights
        save_file({"grad_norm": grad_norm.reshape(1), "moved": moved.reshape(1),
                   "held": torch.tensor([held / total])}, str(out / f"{case}-step.safetensors"))
    del trained


def main(out: str, rows: int, cases: list[str]) -> None:
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    for case in cases:
        step(Path(out), rows, case, dist)
    shutdown(dist)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
