"""Optimizer parameter groups, AdamW, and the warm-up + linear-decay schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, LayerNorm weights and other 1-d tensors take no weight decay (BERT/ELECTRA)."""
    return param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float, lr: float,
                 layer_scale: dict[str, float] | None = None, undecayed: set[str] | None = None) -> list[dict]:
    """AdamW parameter groups: decay / no-decay, optionally each scaled per parameter name.

    Args:
        model: the module to optimise; shared parameters appear once.
        weight_decay: decay for weight matrices.
        lr: base learning rate.
        layer_scale: optional {parameter name: lr multiplier} (layer-wise decay in fine-tuning, ELECTRA's
            generator learning rate in pre-training).
        undecayed: names that take no weight decay from the optimizer whatever their shape (their owner
            decays them itself, as ELECTRA's GDES residual).
    """
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        scale = (layer_scale or {}).get(name, 1.0)
        groups.setdefault((no_decay(name, p) or name in (undecayed or ()), scale), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr": lr * scale, "lr_scale": scale}
            for (nd, scale), ps in groups.items()]


def adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, device: torch.device
          ) -> torch.optim.AdamW:
    """AdamW, fused on CUDA and on CPU where this torch supports it (one kernel for all tensors)."""
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, eps=eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=device.type == "cuda", **kwargs)


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier at `step`: linear warm-up from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def electra_schedule(step: int, warmup: int, total: int) -> float:
    """The ELECTRA reference's LR multiplier (model/optimization.py): linear decay from 1 at step 0 to 0 at
    `total`, times min(1, step / warmup). Step 0 therefore has learning rate 0, as in the reference."""
    decay = max(0.0, 1.0 - step / max(1, total))
    return decay * (min(1.0, step / warmup) if warmup > 0 else 1.0)


def lr_multiplier(schedule: str, step: int, warmup: int, total: int) -> float:
    """The multiplier of train.lr_schedule (linear or electra) at `step`."""
    return electra_schedule(step, warmup, total) if schedule == "electra" else linear_schedule(step, warmup, total)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, multiplier: float) -> None:
    """Set every group's LR to base_lr × group scale × multiplier (a pure function of the step, so resume needs no scheduler state)."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_scale", 1.0) * multiplier
