"""bf16 autocast against fp32 on the golden runs: the same seeded run, and the loss curves stay close;
and what `--train.compile on` compiles (recorded, never compiled: that takes minutes on CPU).

The golden runs of test_e2e_golden.py (same corpus slice, fixed vocabulary, seed, 60 steps logged
every 5) are repeated with ``--precision auto``, which must resolve to bf16 on a CPU with native
bf16 matrix units, be recorded as such, and train to within a stated tolerance of fp32.

Measured with torch 2.13.0 on a Zen 4 CPU (AVX512-BF16, no AMX), one thread; largest relative
difference, bf16 against fp32:

- ELECTRA: logged training loss 2.2% (step 45: bf16 moves the generator's logits a little, so
  it samples other replacements and the discriminator, weighted 50×, sees another batch),
  final validation loss 0.14%.
- MLM: logged training loss 1.2e-4, final validation loss 2.7e-6.

The tolerances leave room for other bf16 hardware (AMX rounds its accumulations differently).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from torch import nn

from electrolite.model import Encoder
from electrolite.training import runtime as distributed
from electrolite.training.runtime import cpu_has_bf16_matmul

from .conftest import TINY, cli_ok
from .test_e2e_golden import GOLDEN_ELECTRA_VALID_LOSS, GOLDEN_MLM_VALID_LOSS, REL, golden_run

# objective: (every logged training loss, final validation loss), relative to the fp32 run's
TOLERANCE = {"electra": (0.05, 0.01), "mlm": (0.01, 0.001)}
GOLDEN = {"electra": GOLDEN_ELECTRA_VALID_LOSS, "mlm": GOLDEN_MLM_VALID_LOSS}

NO_BF16 = pytest.mark.skipif(not cpu_has_bf16_matmul(),
                             reason="this CPU has no native bf16 matrix units (no amx_bf16 or avx512_bf16 flag): "
                                    "--precision auto stays fp32 here and bf16 autocast would be emulated")


@NO_BF16
@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_bf16_loss_curve_follows_fp32(golden_corpus: Path, tmp_path: Path, objective: str):
    recipe = ["--objective.recipe", "paper"] if objective == "electra" else []  # the paper's golden run
    train32, valid32, summary32 = golden_run(golden_corpus, tmp_path / "fp32", "--objective", objective, *recipe)
    # TINY pins fp32; a later flag wins: this run asks for auto, the default
    train16, valid16, summary16 = golden_run(golden_corpus, tmp_path / "auto", "--objective", objective, *recipe,
                                             "--precision", "auto")
    assert summary32["valid_loss"] == pytest.approx(GOLDEN[objective], rel=REL)  # the reference is the golden run

    # auto ran bf16, says so (summary, first metrics line), and config.yaml keeps auto for a resume elsewhere
    assert (summary32["precision"], summary16["precision"]) == ("fp32", "bf16")
    assert valid16[0]["step"] == 0 and valid16[0]["precision"] == "bf16" and valid16[0]["compiled"] is False
    assert yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["train"]["precision"] == "auto"
    losses32, losses16 = [m["loss"] for m in train32], [m["loss"] for m in train16]
    assert losses16 != losses32, "bf16 and fp32 runs are bit-identical: autocast did not run"

    train_tol, valid_tol = TOLERANCE[objective]
    for m32, m16 in zip(train32, train16, strict=True):
        assert m16["loss"] == pytest.approx(m32["loss"], rel=train_tol), f"step {m32['step']}"
    assert summary16["initial_valid_loss"] == pytest.approx(summary32["initial_valid_loss"], rel=valid_tol)
    assert summary16["valid_loss"] == pytest.approx(summary32["valid_loss"], rel=valid_tol)


@pytest.mark.parametrize("missing", [None, "no C++ compiler found ($CXX, c++, g++ or clang++)"])
def test_compile_on_compiles_both_encoders_in_place(corpus_dir: Path, tmp_path: Path, monkeypatch, missing):
    import torch._dynamo
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    monkeypatch.setattr(distributed, "missing_compiler", lambda device: missing)
    monkeypatch.setattr(distributed, "_warned", set())
    suppress = torch._dynamo.config.suppress_errors  # (dynamo's config module defeats monkeypatch's undo)
    try:
        r = cli_ok("pretrain", "--corpus", corpus_dir, "--out", tmp_path / "run", *TINY, "--objective", "electra",
                   "--steps", 2, "--batch-size", 4, "--train.eval_batches", 1, "--train.compile", "on")
    finally:
        torch._dynamo.config.suppress_errors = suppress
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    if missing:
        assert r.err_lines == [f"electrolite: warning: compile on: {missing}; running eagerly"]
        assert compiled == [] and summary["compiled"] is False
    else:
        assert r.err_lines == []
        assert len(compiled) == 2 and all(isinstance(m, Encoder) for m in compiled)  # discriminator, generator
        assert summary["compiled"] is True
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["compile"] == "on"
    assert not [k for k in load_file(str(tmp_path / "run" / "model.safetensors")) if "_orig_mod" in k]
