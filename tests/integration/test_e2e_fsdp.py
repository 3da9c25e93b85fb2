"""Fully sharded data parallel (``--train.parallel fsdp``) under torchrun: 2 gloo processes on this CPU.

- One step with 2 FSDP ranks × batch b gives the weights, AdamW moments and gradient norm of 1
  process × batch 2b (fp32, dropout off): masked LM, ELECTRA (shared embeddings, tied decoder) and
  one ALBERT layer applied twice with 2 accumulated micro-batches; each rank holds half the weights,
  and the gathered files are the ones one process writes (names, shared tensors stored once). In
  bf16 autocast the weights stay fp32 and the gradients agree to bf16's rounding.
- A 2-rank FSDP run stopped part-way and resumed under FSDP ends bit for bit like an uninterrupted one.
- An FSDP checkpoint loads exactly in one process and trains on there; that 1-process checkpoint
  resumes under FSDP.
- A 2-rank FSDP fine-tune writes the task dir one process writes; evaluate and predict reproduce it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from electrolite.objectives import build_objective
from electrolite.pretrain import load_run_config
from electrolite.training import checkpoint
from electrolite.training.optim import adamw, param_groups

from .conftest import TINY, cli, cli_ok, read_metrics, subprocess_env, user_error
from .test_e2e_ddp import STEPS, TORCHRUN, pretrain_args, torchrun, weights

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not TORCHRUN.is_file(),
                                reason="torch.distributed / torchrun not available")
FSDP = ("--train.parallel", "fsdp")
CASES = ("mlm", "electra", "albert")  # fsdp_step.py's fp32 cases; and electra-bf16


def worst_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_fsdp_ranks_of_batch_b_step_like_one_process_of_batch_2b(tmp_path: Path):
    script = Path(__file__).with_name("fsdp_step.py")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    alone = subprocess.Popen([sys.executable, str(script), str(one), "8", *CASES, "electra-bf16"],
                             env=subprocess_env())
    torchrun(script, two, 8, *CASES, "electra-bf16")  # meanwhile
    assert alone.wait(timeout=120) == 0
    for case in CASES:
        for part in ("", "-optimizer"):  # the weights after the step; AdamW's moments (0.1 × the gradient ...)
            a, b = load_file(str(one / f"{case}{part}.safetensors")), load_file(str(two / f"{case}{part}.safetensors"))
            worst = worst_difference(a, b)
            print(f"{case}{part or '-weights'}: max difference {worst:.3g}")
            assert worst <= 1e-6, (case, part, worst)
        # Gathered from the shards, written as one process writes them: shared tensors once, same metadata.
        with safe_open(str(one / f"{case}.safetensors"), "pt") as a:
            with safe_open(str(two / f"{case}.safetensors"), "pt") as b:
                assert a.metadata() == b.metadata()
        s1, s2 = load_file(str(one / f"{case}-step.safetensors")), load_file(str(two / f"{case}-step.safetensors"))
        assert s1["moved"].item() > 5e-4  # the step really changed the weights
        assert s2["grad_norm"].item() == pytest.approx(s1["grad_norm"].item(), rel=1e-6)  # the norm over all shards
        assert s1["held"].item() == 1.0 and 0.49 < s2["held"].item() < 0.51  # each rank holds half the parameters
    with safe_open(str(two / "electra.safetensors"), "pt") as f:  # the shared embeddings are stored once
        shared = f.metadata()["generator.embeddings.word_embeddings.weight"]
    assert shared == "discriminator.embeddings.word_embeddings.weight"
    # bf16 autocast: fp32 parameters; the gradients (AdamW's first moments) differ by bf16's rounding
    # of other matrix shapes (0.2%), as bf16 differs from fp32 (measured: 0.19% and 0.22%).
    assert {v.dtype for v in load_file(str(two / "electra-bf16.safetensors")).values()} == {torch.float32}
    a, b = (load_file(str(d / "electra-bf16-optimizer.safetensors")) for d in (one, two))
    firsts = [k for k in a if k.endswith("::exp_avg")]
    relative = (sum(((a[k] - b[k]) ** 2).sum() for k in firsts) / sum((a[k] ** 2).sum() for k in firsts)).sqrt().item()
    print(f"electra-bf16: relative gradient difference {relative:.3g}")
    assert relative < 1e-2, relative
    s1, s2 = (load_file(str(d / "electra-bf16-step.safetensors")) for d in (one, two))
    assert s2["grad_norm"].item() == pytest.approx(s1["grad_norm"].item(), rel=1e-2)


@pytest.fixture(scope="module")
def fsdp_run(corpus_dir: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fsdp") / "uninterrupted"
    torchrun(*pretrain_args(corpus_dir, run, *FSDP))
    return run


def test_an_fsdp_run_logs_once_and_writes_full_checkpoints(fsdp_run: Path):
    summary = json.loads((fsdp_run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"], summary["global_batch"]) == (STEPS, 2, 16)
    assert "valid_loss" in summary and "initial_valid_loss" in summary  # evaluated on every rank, logged by rank 0
    train, valid = read_metrics(fsdp_run)
    assert [m["step"] for m in train] == list(range(1, STEPS + 1)) and [m["step"] for m in valid] == [0, STEPS]
    assert "parallel: fsdp" in (fsdp_run / "config.yaml").read_text()
    ck = fsdp_run / "checkpoints" / f"step-{STEPS:08d}"
    assert sorted(p.name for p in ck.iterdir()) == ["model.safetensors", "optimizer.safetensors", "rng.safetensors",
                                                   "state.json"]
    assert weights(fsdp_run).keys() == load_file(str(ck / "model.safetensors")).keys()


def test_an_fsdp_run_stopped_and_resumed_ends_like_an_uninterrupted_one(corpus_dir: Path, fsdp_run: Path,
                                                                         tmp_path: Path):
    run = tmp_path / "resumed"
    torchrun(*pretrain_args(corpus_dir, run, *FSDP, "--budget", "0.4"))  # stops part-way, agreed by both ranks
    stopped = json.loads((run / "summary.json").read_text())
    assert stopped["stop_reason"] == "budget 0.4 reached" and 0 < stopped["step"] < STEPS, stopped
    torchrun(*pretrain_args(corpus_dir, run, *FSDP, "--budget", "1h"))
    assert json.loads((run / "summary.json").read_text())["step"] == STEPS
    a, b = weights(fsdp_run), weights(run)
    for k in a:  # the shards, the AdamW moments and every rank's random streams came back exactly
        assert torch.equal(a[k], b[k]), f"{k} differs after the resume"


@pytest.fixture(scope="module")
def resumed_in_one_process(corpus_dir: Path, fsdp_run: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fsdp") / "one-process"
    shutil.copytree(fsdp_run, run)
    (run / "summary.json").unlink()
    r = subprocess.run([sys.executable, *map(str, pretrain_args(corpus_dir, run, "--steps", STEPS + 6))],
                       capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_an_fsdp_checkpoint_loads_exactly_and_resumes_in_one_process(fsdp_run: Path, resumed_in_one_process: Path):
    cfg = load_run_config(fsdp_run)
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    optimizer = adamw(param_groups(model, 0.01, 1e-3), 1e-3, (0.9, 0.999), 1e-6, torch.device("cpu"))
    ck = fsdp_run / "checkpoints" / f"step-{STEPS:08d}"
    checkpoint.load_checkpoint(ck, model, optimizer)  # the one-process path: unsharded
    saved, loaded = weights(fsdp_run), model.state_dict()
    for k, v in saved.items():
        assert torch.equal(loaded[k], v), k
    # The tie survived the shards: the generator's embeddings and MLM decoder are the discriminator's.
    assert torch.equal(loaded["generator.embeddings.word_embeddings.weight"],
                       saved["discriminator.embeddings.word_embeddings.weight"])
    assert model.generator_head.word_embeddings[0].weight is model.discriminator.embeddings.word_embeddings.weight
    moments = load_file(str(ck / "optimizer.safetensors"))
    again = checkpoint.optimizer_tensors(model, optimizer)  # every parameter's AdamW state, under its name
    assert again.keys() == moments.keys() and len(moments) == 3 * len(list(model.parameters()))
    assert all(torch.equal(again[k], moments[k]) for k in moments)
    summary = json.loads((resumed_in_one_process / "summary.json").read_text())
    assert (summary["step"], summary["world_size"], summary["global_batch"]) == (STEPS + 6, 1, 8)
    assert worst_difference(weights(resumed_in_one_process), saved) > 0  # it trained on from the FSDP weights


def test_a_one_process_checkpoint_resumes_under_fsdp(corpus_dir: Path, resumed_in_one_process: Path,
                                                     tmp_path: Path):
    run = tmp_path / "to-fsdp"
    shutil.copytree(resumed_in_one_process, run)
    (run / "summary.json").unlink()
    r = torchrun(*pretrain_args(corpus_dir, run, *FSDP, "--steps", STEPS + 12))
    assert f"resuming from step-{STEPS + 6:08d}" in r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"], summary["global_batch"]) == (STEPS + 12, 2, 16)
    assert worst_difference(weights(run), weights(resumed_in_one_process)) > 0
    state = json.loads((run / "checkpoints" / f"step-{STEPS + 12:08d}" / "state.json").read_text())
    assert state["world_size"] == 2


def test_fsdp_fine_tuning_writes_the_task_dir_one_process_writes(fsdp_run: Path, shared_data: Path,
                                                                 tmp_path: Path):
    sst2 = shared_data / "glue" / "SST-2"
    if not (sst2 / "dev.tsv").is_file():
        pytest.skip("GLUE data missing")
    out = tmp_path / "sst2"
    torchrun("-m", "electrolite.cli", "finetune", "--model", fsdp_run, "--task", "sst2", "--data", sst2,
             "--out", out, "--max-train-examples", 400, "--epochs", 1, "--precision", "fp32", "--no-progress",
             "--parallel", "fsdp")
    result = json.loads((out / "eval_results.json").read_text())
    # 400 examples in 13 batches of 32: 6 optimizer steps of 2 × 32, every rank its own batches
    assert (result["steps"], result["world_size"], result["global_batch"]) == (6, 2, 64)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "eval_results.json", "metrics.jsonl",
                                                    "model.safetensors", "predictions-dev.jsonl", "tokenizer.json"]
    assert not (tmp_path / ".sst2.tmp").exists()
    assert "parallel: fsdp" in (out / "config.yaml").read_text()
    rows = [json.loads(line) for line in (out / "predictions-dev.jsonl").read_text().splitlines()]
    assert len(rows) == 872  # written once, by rank 0
    r = cli_ok("evaluate", "--model", out, "--data", sst2, "--out", tmp_path / "evaluate.json")
    assert f"{result['main']:.4f}" in r.out  # the saved weights are the evaluated ones
    sentences = tmp_path / "dev.txt"
    sentences.write_text("".join(line.split("\t")[0] + "\n"
                                 for line in (sst2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]))
    again = [json.loads(line) for line in cli_ok("predict", "--model", out, "--input", sentences).out.splitlines()]
    assert [p["label"] for p in again] == [row["label"] for row in rows]
    worst = max(abs(p["probabilities"][row["label"]] - row["probability"]) for p, row in zip(again, rows))
    assert worst <= 1e-4 + 1e-6, worst  # predictions-dev.jsonl rounds to 4 decimals


def test_an_unknown_parallel_is_one_user_error_line(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    r = cli("pretrain", "--corpus", corpus_dir, "--out", run, *TINY, "--steps", 2, "--train.parallel", "bogus")
    user_error(r, "train.parallel must be ddp or fsdp, got 'bogus'")
    assert not run.exists()
