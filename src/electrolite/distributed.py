"""Where and how a recipe computes: device choice, precision, autocast, torch.compile, moving batches.

(torchrun data-parallel set-up joins this module when training scales out.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from electrolite.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_SETTINGS = ("auto", "on", "off")
# x86 flags of native bf16 matrix arithmetic: AMX tiles (Sapphire Rapids on) and AVX512-BF16's dot
# products (Cooper Lake, Zen 4 on). Measured on a 2-core Zen 4 (avx512_bf16, no AMX), one thread: an
# electra-small step (batch 8 × 128) takes 0.77 s in bf16 autocast against 1.17 s in fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_warned: set[str] = set()  # compile warnings already printed by this process (once, not once per seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device {name}: CUDA is not available on this machine")
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
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    for module in modules:
        module.compile()
    return True


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
