"""Where and how a recipe computes: processes (torchrun), device, precision, autocast, torch.compile.

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) ``init_distributed`` joins the process group
(NCCL on CUDA, gloo on CPU), ``wrap_data_parallel`` makes the model DDP or FSDP (sharded, see
sharding.py), and every collective the recipes need lives here: agreeing on a stop (``any_rank``),
averaging logged metrics (``mean_over_ranks``), gathering per-rank RNG states (``gather``). In a
single process each is a no-op returning its input.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from electrolite.errors import UserError
from electrolite.training.sharding import shard

PRECISIONS = ("auto", "fp32", "bf16")
PARALLELISMS = ("ddp", "fsdp")  # how several processes split the work: data only, or also the model (sharding.py)
COMPILE_SETTINGS = ("auto", "on", "off")
# x86 flags of native bf16 matrix arithmetic: AMX tiles (Sapphire Rapids on) and AVX512-BF16's dot
# products (Cooper Lake, Zen 4 on). Measured on a 2-core Zen 4 (avx512_bf16, no AMX), one thread: an
# electra-small step (batch 8 × 128) takes 0.77 s in bf16 autocast against 1.17 s in fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_warned: set[str] = set()  # compile warnings already printed by this process (once, not once per seed)


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, writes checkpoints and outputs."""
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join torchrun's process group when there is one (WORLD_SIZE > 1), else a single-process Dist.

    The backend is NCCL when the run computes on CUDA and gloo otherwise; each CUDA process takes
    the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local)


def shutdown(info: Dist) -> None:
    """Leave the process group. Call it once the DDP wrapper is gone: a DDP reducer collected after
    the group is destroyed (at interpreter exit) aborts the process ("terminate called without an
    active exception"), so unreachable wrappers are collected first."""
    if info.enabled:

        gc.collect()
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def any_rank(info: Dist, *flags: bool) -> list[bool]:
    """Each flag, true if it is true on any rank (one all-reduce): stop decisions all ranks agree on."""
    if not info.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_ranks(info: Dist, values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (every rank must pass the same keys)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist())}


def gather(info: Dist, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(info: Dist, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap_data_parallel(model: nn.Module, info: Dist, device: torch.device, parallel: str = "ddp",
                       find_unused_parameters: bool = False) -> nn.Module:
    """The model as the training step sees it: itself in one process, else (`parallel` ddp)
    DistributedDataParallel, which broadcasts rank 0's weights and averages gradients over the ranks,
    or (fsdp) `model` itself sharded in place over the ranks (``sharding.shard``; every rank must have
    built the same weights). Build the optimizer after this: FSDP's parameters are new ones.
    `find_unused_parameters`: some parameters take no gradient in some steps (ELECTRA's two-stage warm start:
    the generator in the first stage, the warm start's head in the second), so DDP must look for them.
    """
    if parallel not in PARALLELISMS:
        raise UserError(f"parallel must be {' or '.join(PARALLELISMS)}, got {parallel!r}")
    if not info.enabled:
        return model
    if parallel == "fsdp":
        return shard(model, device, info.world_size)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


class _GradientSyncToggle(Protocol):
    """What ``gradient_sync`` uses of FSDP2's ``FSDPModule`` (imported only where FSDP runs)."""

    def set_requires_gradient_sync(self, requires_gradient_sync: bool) -> None: ...


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool):
    """Backward passes inside average their gradients over the ranks (`sync`, the last micro-batch of a
    step), or keep them local to accumulate (DDP's ``no_sync``, FSDP's ``set_requires_gradient_sync``)."""
    if sync:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (sharding.shard)
        fsdp = cast(_GradientSyncToggle, model)
        fsdp.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            fsdp.set_requires_gradient_sync(True)
    else:
        yield


def clip_gradients(model: nn.Module | list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the total gradient norm to `max_norm` (0: leave it) and return the norm before clipping.

    A sharded model's gradients are DTensor shards: ``clip_grad_norm_`` reduces their norm over the
    ranks and gives it as a replicated DTensor, returned here as a plain tensor (the same on every rank).
    """
    if max_norm <= 0:
        return torch.tensor(0.0)
    params = model.parameters() if isinstance(model, nn.Module) else model
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def resolve_device(name: str, info: Dist | None = None) -> torch.device:
    """The device for `name` (auto, cpu, cuda, cuda:N); under torchrun on CUDA, this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device {name}: CUDA is not available on this machine")
    if name == "cuda" and info is not None and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


def cpu_has_bf16_matmul(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 matrices natively (an AMX-BF16 or AVX512-BF16 flag).

    Asks torch's own CPU probe (``torch.cpu.get_capabilities``, cpuinfo, on any OS) where this
    torch has it, else the flags line of Linux's `cpuinfo`. Without either the answer is no: fp32
    is slower on such a CPU, never wrong. (``torch.backends.cpu.get_cpu_capability()`` only names
    the widest vector ISA, "AVX512" with or without bf16, so it cannot decide this.)
    """
    probe = getattr(torch.cpu, "get_capabilities", None)
    if probe is not None:
        try:
            caps = probe()
            return any(bool(caps.get(flag)) for flag in BF16_CPU_FLAGS)
        except Exception:  # a probe that fails tells nothing; fall back to the kernel's flags
            pass
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def cuda_has_bf16() -> bool:
    """Whether the current CUDA device has bf16 tensor cores (emulated bf16 does not count)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before the including_emulation argument counted native support only
        return torch.cuda.is_bf16_supported()


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision a run computes in: fp32 or bf16.

    Args:
        name: ``auto``, ``fp32`` or ``bf16`` (as configured). Explicit values pass through.
        device: where the run computes. ``auto`` is bf16 on a CUDA device with native bf16
            (Ampere and later) and on a CPU with native bf16 matrix units (``cpu_has_bf16_matmul``),
            fp32 everywhere else.
    """
    if name not in PRECISIONS:
        raise UserError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if cuda_has_bf16() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16_matmul() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast context (AMX / AVX512-BF16 on CPU, tensor cores on GPU), or nothing for fp32.

    `precision` must be resolved (``resolve_precision``): fp32 or bf16.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
    return contextlib.nullcontext()


def missing_compiler(device: torch.device) -> str | None:
    """What torch.compile's default backend (inductor) lacks on `device`, or None when nothing is missing.

    CUDA kernels are generated with triton; CPU kernels are C++ built by the system's compiler
    ($CXX, c++, g++ or clang++).
    """
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") is not None else "the triton package is not installed"
    cxx = os.environ.get("CXX", "").split()
    candidates = cxx[:1] + ["c++", "g++", "clang++"]
    if any(shutil.which(c) for c in candidates):
        return None
    return "no C++ compiler found ($CXX, c++, g++ or clang++)"


def maybe_compile(modules: Iterable[nn.Module], setting: str, device: torch.device) -> bool:
    """Compile `modules` in place (``Module.compile``: state_dict keys unchanged) when `setting` asks for it.

    Args:
        modules: the modules worth compiling (the encoders; heads see ragged shapes and stay eager).
        setting: ``on``, ``off`` or ``auto`` (on for CUDA, off on CPU).
        device: where they run.

    Returns:
        Whether they were compiled. A missing toolchain prints one warning line and leaves them
        eager; a graph that fails to compile later runs eagerly too (dynamo's suppress_errors).
    """
    if setting not in COMPILE_SETTINGS:
        raise UserError(f"compile must be auto, on or off, got {setting!r}")
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return False
    missing = missing_compiler(device)
    if missing is not None:
        message = f"electrolite: warning: compile {setting}: {missing}; running eagerly"
        if message not in _warned:
            _warned.add(message)
            print(message, file=sys.stderr)
        return False
    import torch._dynamo  # the compiler stack (seconds to import): only when compiling

    torch._dynamo.config.suppress_errors = True
    for module in modules:
        module.compile()
    return True


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
