"""Where and how a recipe computes: device choice, autocast, moving batches.

(torchrun data-parallel set-up joins this module when training scales out.)
"""

from __future__ import annotations

import contextlib

import torch

from electrolite.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device {name}: CUDA is not available on this machine")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast context (AMX on CPU, tensor cores on GPU), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
