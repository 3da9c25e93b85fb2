"""Precision and torch.compile choices: resolve_precision, cpu_has_bf16_matmul, maybe_compile.

Nothing here compiles a model (that takes minutes on CPU): nn.Module.compile is replaced by a
recorder, and the one real ``Module.compile()`` call never runs a forward pass (compilation is lazy).
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from torch import nn

from electrolite.cli import main
from electrolite.config import from_name
from electrolite.errors import UserError
from electrolite.model import Encoder
from electrolite.training import runtime as distributed
from electrolite.training.runtime import autocast, cpu_has_bf16_matmul, maybe_compile, missing_compiler, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU; nothing runs on it


# --- precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(distributed, "cpu_has_bf16_matmul", lambda: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cuda_follows_bf16_tensor_cores(monkeypatch, native):
    monkeypatch.setattr(distributed, "cuda_has_bf16", lambda: native)
    monkeypatch.setattr(distributed, "cpu_has_bf16_matmul", lambda: not native)  # the CPU does not decide for CUDA
    assert resolve_precision("auto", CUDA) == ("bf16" if native else "fp32")


def test_auto_precision_elsewhere_is_fp32(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_has_bf16_matmul", lambda: True)
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("device", [CPU, CUDA])
@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_explicit_precision_passes_through(monkeypatch, name, device, native):
    monkeypatch.setattr(distributed, "cpu_has_bf16_matmul", lambda: native)
    monkeypatch.setattr(distributed, "cuda_has_bf16", lambda: native)
    assert resolve_precision(name, device) == name


def test_bad_precision_is_a_user_error():
    with pytest.raises(UserError) as e:
        resolve_precision("fp16", CPU)
    assert str(e.value) == "precision must be auto, fp32 or bf16, got 'fp16'"


def test_bad_precision_on_the_command_line_is_one_line(tmp_path, capsys):
    rc = main(["pretrain", "--corpus", str(tmp_path), "--out", str(tmp_path / "run"), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "electrolite: error: train.precision must be auto, fp32 or bf16, got 'fp16'\n"
    assert not (tmp_path / "run").exists()


def test_autocast_needs_a_resolved_precision():
    with pytest.raises(ValueError):
        autocast(CPU, "auto")
    with autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("caps, expected", [
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, True),  # Zen 4
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, True),  # AMX
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, False),  # Skylake-X
    ({"architecture": "aarch64", "sve": True}, False),
])
def test_cpu_bf16_from_torch_capabilities(monkeypatch, tmp_path, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t\t: fpu avx2 {'avx512f' if expected else 'amx_bf16 avx512_bf16'}\n")  # not asked
    assert cpu_has_bf16_matmul(cpuinfo) is expected


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
    ("fpu sse2 avx2 avx512f amx_bf16 amx_tile amx_int8", True),
    ("fpu sse2 avx2 avx512f avx512_vnni", False),
])
def test_cpu_bf16_from_proc_cpuinfo_without_torch_probe(monkeypatch, tmp_path, flags, expected):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU with avx512_bf16 in its name\nflags\t\t: {flags}\n\n"
                       f"processor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_bf16_matmul(cpuinfo) is expected
    assert cpu_has_bf16_matmul(tmp_path / "missing") is False  # no /proc (macOS, Windows): fp32


def test_cpu_bf16_probe_failure_falls_back_to_cpuinfo(monkeypatch, tmp_path):
    def broken():
        raise RuntimeError("cpuinfo failed to initialise")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_bf16_matmul(cpuinfo) is True


# --- torch.compile -----------------------------------------------------------------------------


@pytest.fixture
def compile_calls(monkeypatch) -> Iterator[list[nn.Module]]:
    """Modules whose .compile() was called (recorded, nothing compiled); dynamo's config restored after."""
    import torch._dynamo
    calls: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    monkeypatch.setattr(distributed, "_warned", set())
    # not monkeypatch: dynamo's config module keeps values outside its __dict__, and undo would delete the flag
    suppress = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = False
    yield calls
    torch._dynamo.config.suppress_errors = suppress


def two_modules() -> list[nn.Module]:
    return [nn.Linear(4, 4), nn.Linear(4, 2)]


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_compile_off_leaves_modules_untouched(compile_calls, monkeypatch, device, capsys):
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: None)
    modules = two_modules()
    assert maybe_compile(modules, "off", device) is False
    assert compile_calls == []
    assert all(m._compiled_call_impl is None for m in modules)
    assert capsys.readouterr().err == ""


def test_compile_auto_is_off_on_cpu(compile_calls, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: None)  # even with a compiler
    assert maybe_compile(two_modules(), "auto", CPU) is False
    assert compile_calls == []
    assert capsys.readouterr().err == ""


def test_compile_auto_is_on_for_cuda(compile_calls, monkeypatch):
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: None)
    modules = two_modules()
    assert maybe_compile(modules, "auto", CUDA) is True
    assert compile_calls == modules


def test_compile_on_with_a_toolchain_compiles_each_module_in_place(compile_calls, monkeypatch, capsys):
    import torch._dynamo
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: None)
    modules = two_modules()
    assert maybe_compile(modules, "on", CPU) is True
    assert compile_calls == modules  # Module.compile on each, in order: no torch.compile wrapper
    assert torch._dynamo.config.suppress_errors is True  # a graph that fails later runs eagerly
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_compile_on_without_a_toolchain_warns_once_and_stays_eager(compile_calls, monkeypatch, device, capsys):
    missing = "no C++ compiler found ($CXX, c++, g++ or clang++)"
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: missing)
    modules = two_modules()
    assert maybe_compile(modules, "on", device) is False
    assert maybe_compile(modules, "on", device) is False  # a second seed of a fine-tuning run: no second line
    assert compile_calls == []
    assert all(m._compiled_call_impl is None for m in modules)
    assert capsys.readouterr().err == f"electrolite: warning: compile on: {missing}; running eagerly\n"


def test_bad_compile_setting_is_a_user_error(compile_calls):
    with pytest.raises(UserError, match=r"^compile must be auto, on or off, got 'yes'$"):
        maybe_compile(two_modules(), "yes", CPU)


def test_missing_compiler_checks_the_toolchain(monkeypatch):
    import importlib.util
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)
    assert missing_compiler(CPU) == "no C++ compiler found ($CXX, c++, g++ or clang++)"
    monkeypatch.setattr(distributed.shutil, "which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    assert missing_compiler(CPU) is None
    monkeypatch.setattr(distributed.shutil, "which", lambda name: "/opt/cc/bin/icpx" if name == "icpx" else None)
    monkeypatch.setenv("CXX", "icpx -O2")
    assert missing_compiler(CPU) is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert missing_compiler(CUDA) == "the triton package is not installed"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "triton" else None)
    assert missing_compiler(CUDA) is None


def test_module_compile_keeps_state_dict_keys():
    """The real Module.compile (lazy: no forward, so nothing compiles) leaves checkpoint keys as they were."""
    encoder = Encoder(from_name("tiny", vocab_size=100))
    keys = list(encoder.state_dict())
    encoder.compile()
    assert encoder._compiled_call_impl is not None
    assert list(encoder.state_dict()) == keys  # torch.compile(module) would prefix _orig_mod.
