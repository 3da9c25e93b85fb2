"""Fully sharded data parallel (``--train.parallel fsdp``): sharding a model, and its full state in and out.

Under FSDP each of N processes keeps 1/N of every parameter, of its gradient and of its AdamW
moments; a forward or backward gathers one encoder layer's weights at a time (the root unit, the
embeddings and heads, stays gathered from its forward through its backward). Checkpoints and task
dirs stay what one process writes (full tensors, one file each, ``checkpoint.py``): the shards are
gathered to rank 0 to save, and every rank reads the file and keeps its shard to load, so a run
written under FSDP resumes under DDP or in one process and the other way round.

FSDP2 (``torch.distributed.fsdp.fully_shard``), not FSDP1 (``FullyShardedDataParallel``): FSDP2
shards each parameter on its own (a DTensor) where FSDP1 flattens a unit's parameters into one, so
parameter names, state_dict keys and shared modules (ELECTRA's embeddings, the tied MLM decoder)
stay as they are, ``clip_grad_norm_`` computes the norm over all shards, and the module is sharded
in place (no wrapper to unwrap). Tried on torch 2.13: it runs on gloo (CPU) too, and a step of 2 CPU
processes matches one process (tests/integration/test_e2e_fsdp.py); NCCL on CUDA is untested here.

The torch.distributed imports are inside the functions: FSDP2's public API moved between the torch
releases we support (2.4-2.13), and a single-process run never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import nn

from electrolite.errors import UserError
from electrolite.model import Layer
from electrolite.training import checkpoint
from electrolite.training.checkpoint import StateDict


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` was sharded by ``shard`` (FSDP); False without a process group."""
    import torch.distributed as dist  # FSDP2: only when sharding
    if not dist.is_available() or not dist.is_initialized():  # one process: not even the FSDP import (0.6 s)
        return False
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2: only when sharding
    except ImportError:  # torch before 2.6: nothing was sharded (``shard`` refuses)
        return False
    return isinstance(model, FSDPModule)


def shard(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """Shard `model` in place over all processes (FSDP2) and return it.

    Each encoder Layer is its own unit (gathered for its forward, freed after; an ALBERT layer shared
    by several depths is gathered for each); everything else (embeddings, projections, heads) is
    the root's. Modules used from two places stay in one unit that way: ELECTRA's generator and
    discriminator share the embeddings, and the MLM heads' decoders are the word embeddings.
    Parameters stay fp32 (no MixedPrecisionPolicy): bf16 comes from the recipes' autocast. The
    optimizer must be built after this: its parameters are the sharded ones.
    """
    from torch.distributed.device_mesh import init_device_mesh  # FSDP2: only when sharding
    try:
        from torch.distributed.fsdp import fully_shard  # FSDP2: only when sharding
    except ImportError:  # public from torch 2.6 on
        raise UserError(f"parallel fsdp needs torch 2.6 or newer (fully_shard), this is {torch.__version__}") from None
    mesh = init_device_mesh(device.type, (world_size,))
    for module in model.modules():
        if isinstance(module, Layer):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _aliases(model: nn.Module) -> list[list[str]]:
    """State-dict names that are one tensor (a module reachable under two paths), each group in order."""
    groups: dict[int, list[str]] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(value), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _own(t: torch.Tensor) -> torch.Tensor:
    """`t` on storage of its own: a gathered shard of an uneven tensor is a view of a padded buffer, which
    safetensors refuses to store as if it were a shared tensor."""
    t = t.detach()
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions  # FSDP2: only when sharding
    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_weights(model: nn.Module) -> nn.Module | StateDict:
    """What ``checkpoint.save_weights`` / ``save_checkpoint`` write of `model`: the module itself, or for
    a sharded one its full state dict gathered to rank 0's CPU (an empty one on the other ranks).

    Under FSDP a collective: every rank calls it, at the same point. A shared module's tensors are one
    tensor under each of its names again (gathered they are copies), so the file stores them once.
    """
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import get_model_state_dict  # FSDP2: only when sharding
    # full_state_dict: every value is a whole tensor (the annotation allows any state value)
    full = {k: _own(cast(torch.Tensor, v)) for k, v in get_model_state_dict(model, options=_options(cpu_offload=True)).items()}
    if full:
        for names in _aliases(model):
            for name in names[1:]:
                full[name] = full[names[0]]
    return StateDict(full)


def gather_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer
                     ) -> torch.optim.Optimizer | dict[str, torch.Tensor]:
    """What ``checkpoint.save_checkpoint`` writes of the optimizer: the optimizer itself, or for a sharded
    model its state gathered to rank 0's CPU under ``checkpoint.optimizer_tensors``' names (empty on
    the other ranks). Under FSDP a collective, like ``gather_weights``."""
    if not is_sharded(model):
        return optimizer
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict  # FSDP2: only when sharding
    full = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    states = cast("dict[str, dict[str, Any]]", full.get("state", {}))  # parameter name → {exp_avg, exp_avg_sq, step}
    return {f"{name}::{key}": _own(torch.as_tensor(value))
            for name, state in states.items() for key, value in state.items()}


def restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
            ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``checkpoint.load_checkpoint`` for a model that may be sharded by FSDP (``shard``): a sharded one
    loads the same files, each rank its shards (a collective)."""
    if not is_sharded(model):
        return checkpoint.load_checkpoint(path, model, optimizer)
    state = checkpoint.verify_checkpoint(path)
    load_full_state(model, optimizer, path / "model.safetensors", path / "optimizer.safetensors")
    return state, load_file(str(path / "rng.safetensors"))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: Path,
                    moments: Path | None) -> None:
    """Load a checkpoint's full tensors (`weights`: model.safetensors, `moments`: optimizer.safetensors)
    into a sharded model and its optimizer; every rank reads the files and keeps its shards.

    A collective (``distribute_tensor`` takes rank 0's values): every rank calls it, at the same point.
    Tensors missing from the file or not in the model are the UserError ``checkpoint.load_weights`` gives.
    (Not ``set_model_state_dict``: it hands a shared module's second name, absent from the file, to
    the sharded module as a plain tensor.)
    """
    from torch.distributed.tensor import DTensor, distribute_tensor  # FSDP2: only when sharding

    def place(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if not isinstance(like, DTensor):
            return full.to(like.device)
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)

    tensors = load_file(str(weights))
    for names in _aliases(model):  # the file holds a shared tensor once, under one of its names
        present = [n for n in names if n in tensors]
        for name in names:
            if present and name not in tensors:
                tensors[name] = tensors[present[0]]
    own = model.state_dict(keep_vars=True)  # DTensor shards; a shared module's tensors are one object
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UserError(f"{weights}: weights do not fit this model (missing: {', '.join(missing) or '-'}; "
                        f"unexpected: {', '.join(unexpected) or '-'})")
    placed: dict[int, torch.Tensor] = {}  # one scatter per tensor, however many names it has
    for name, value in own.items():
        if id(value) not in placed:
            placed[id(value)] = place(tensors[name], value)
        tensors[name] = placed[id(value)]
    model.load_state_dict(tensors)
    if optimizer is None or moments is None:
        return
    params = dict(model.named_parameters())  # a shared parameter under its first name, as optimizer_tensors
    fused = getattr(optimizer, "defaults", {}).get("fused")
    for key, value in load_file(str(moments)).items():  # the file's order: the same on every rank
        name, _, part = key.rpartition("::")
        if name in params:
            p = params[name]
            # `step` stays a CPU scalar, as AdamW keeps it (unless fused/capturable put it on the device).
            optimizer.state[p][part] = place(value, p) if value.ndim > 0 else value.to(p.device) if fused else value
