"""One optimizer step of a tiny masked-LM encoder, run by test_e2e_ddp.py in 1 process or under torchrun.

    python ddp_step.py OUT.safetensors ROWS          # one process, all ROWS rows
    torchrun --nproc_per_node 2 ddp_step.py OUT ROWS  # each rank its half (gloo, CPU)

The inputs are fixed (seeded) and every row has the same number of masked positions, so the mean
loss over 2 ranks' halves equals the mean over all rows: the two ways must give the same weights.
"""

import sys

import torch
from safetensors.torch import save_file

from electrolite.config import resolve_pretrain_config
from electrolite.objectives import build_objective
from electrolite.pretrain import objective_step
from electrolite.training.optim import adamw, param_groups
from electrolite.training.runtime import init_distributed, shutdown, wrap_data_parallel

PER_ROW = 5  # masked positions in every row


def fixed_batch(rows: int, seq: int = 32, vocab: int = 500) -> dict[str, torch.Tensor]:
    """Seeded objective inputs (make_inputs' keys) with PER_ROW masked positions in every row."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (rows, seq), generator=g)
    selected = torch.zeros(rows, seq, dtype=torch.bool)
    for r in range(rows):
        selected[r, 1 + torch.randperm(seq - 2, generator=g)[:PER_ROW]] = True
    return dict(input_ids=ids, masked_input_ids=ids.masked_fill(selected, 4), mlm_mask=selected,
                attention_mask=torch.ones(rows, seq, dtype=torch.bool),
                token_type_ids=torch.zeros(rows, seq, dtype=torch.long), sop_labels=torch.full((rows,), -100))


def main(out: str, rows: int) -> None:
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    cfg = resolve_pretrain_config(overrides={
        "size": "tiny", "objective.name": "mlm", "model.vocab_size": 500,
        "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0})
    torch.manual_seed(0)
    model = build_objective(cfg.model, cfg.objective)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = fixed_batch(rows)
    share = rows // dist.world_size
    mine = {k: v[dist.rank * share:(dist.rank + 1) * share] for k, v in inputs.items()}
    optimizer = adamw(param_groups(model, 0.01, 1e-3), 1e-3, (0.9, 0.999), 1e-6, torch.device("cpu"))
    trained = wrap_data_parallel(model, dist, torch.device("cpu"))
    objective_step(trained, optimizer, [mine], 1, torch.device("cpu"), "fp32", 1.0, dist)
    if dist.is_main:
        after = model.state_dict()
        moved = max((after[k] - initial[k]).abs().max() for k in after)  # the step did change the weights
        save_file({**{k: v.contiguous() for k, v in after.items()}, "moved": moved.reshape(1)}, out)
    del trained  # before the process group goes (distributed.shutdown)
    shutdown(dist)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
