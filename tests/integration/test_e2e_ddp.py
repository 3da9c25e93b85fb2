"""Data-parallel training under torchrun: 2 gloo processes on this CPU.

- One step with 2 ranks × batch b gives the weights of 1 process × batch 2b (fp32, dropout off).
- A 2-rank run stopped part-way (its time budget, agreed over the ranks) and resumed ends with the
  weights of an uninterrupted 2-rank run; logs and checkpoints come from rank 0 only.
- A checkpoint written by 2 ranks resumes in 1 process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import TINY, read_metrics, subprocess_env

TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS = 24
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not TORCHRUN.is_file(),
                                reason="torch.distributed / torchrun not available")


def torchrun(*argv: object, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    r = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), *map(str, argv)],
                       capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def pretrain_args(corpus: Path, run: Path, *extra: object) -> list[str]:
    # The paper's recipe: one shared embedding module (the tie these tests check across ranks and shards); the
    # default small-budget recipe has its own test below
    return ["-m", "electrolite.cli", "pretrain", "--corpus", corpus, "--out", run, *TINY, "--objective", "electra",
            "--objective.recipe", "paper", "--steps", STEPS, "--batch-size", 8, "--seed", 0, "--save-every", 100,
            "--train.log_every", 1, "--train.eval_every", 0, "--train.eval_batches", 1, *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_two_ranks_of_batch_b_step_like_one_process_of_batch_2b(tmp_path: Path):
    script = Path(__file__).with_name("ddp_step.py")
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(script), str(one), "8"], check=True, env=subprocess_env(), timeout=120)
    torchrun(script, two, 8)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys()
    assert a["moved"].item() > 1e-4  # the step really changed the weights
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst


@pytest.fixture(scope="module")
def two_rank_run(corpus_dir: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "uninterrupted"
    torchrun(*pretrain_args(corpus_dir, run))
    return run


def test_rank_zero_alone_writes_logs_and_checkpoints(two_rank_run: Path):
    summary = json.loads((two_rank_run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"], summary["global_batch"]) == (STEPS, 2, 16)
    train, _ = read_metrics(two_rank_run)
    assert [m["step"] for m in train] == list(range(1, STEPS + 1))  # one line per step, not one per rank
    first = json.loads((two_rank_run / "metrics.jsonl").read_text().splitlines()[0])
    assert (first["world_size"], first["global_batch"]) == (2, 16)
    assert sorted(p.name for p in (two_rank_run / "checkpoints").iterdir()) == ["latest", f"step-{STEPS:08d}"]
    state = json.loads((two_rank_run / "checkpoints" / f"step-{STEPS:08d}" / "state.json").read_text())
    assert state["world_size"] == 2 and state["sampler"]["world_size"] == 2


def test_two_rank_run_stopped_and_resumed_ends_like_an_uninterrupted_one(corpus_dir: Path, two_rank_run: Path,
                                                                          tmp_path: Path):
    run = tmp_path / "resumed"
    torchrun(*pretrain_args(corpus_dir, run, "--budget", "0.4"))  # stops part-way, agreed by both ranks
    stopped = json.loads((run / "summary.json").read_text())
    assert stopped["stop_reason"] == "budget 0.4 reached" and 0 < stopped["step"] < STEPS, stopped
    torchrun(*pretrain_args(corpus_dir, run, "--budget", "1h"))
    assert json.loads((run / "summary.json").read_text())["step"] == STEPS
    a, b = weights(two_rank_run), weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after the resume"


def test_a_two_rank_checkpoint_resumes_in_one_process(corpus_dir: Path, two_rank_run: Path, tmp_path: Path):
    run = tmp_path / "n-to-m"
    shutil.copytree(two_rank_run, run)
    (run / "summary.json").unlink()
    r = subprocess.run([sys.executable, *map(str, pretrain_args(corpus_dir, run, "--steps", STEPS + 6))],
                       capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"], summary["global_batch"]) == (STEPS + 6, 1, 8)
    moved = max((weights(run)[k] - weights(two_rank_run)[k]).abs().max().item() for k in weights(run))
    assert moved > 0  # it trained on from the 2-rank weights


def test_fine_tuning_under_torchrun_writes_one_task_dir(two_rank_run: Path, shared_data: Path, tmp_path: Path):
    sst2 = shared_data / "glue" / "SST-2"
    if not (sst2 / "dev.tsv").is_file():
        pytest.skip("GLUE data missing")
    out = tmp_path / "sst2"
    torchrun("-m", "electrolite.cli", "finetune", "--model", two_rank_run, "--task", "sst2", "--data", sst2,
             "--out", out, "--max-train-examples", 400, "--epochs", 1, "--precision", "fp32", "--no-progress")
    result = json.loads((out / "eval_results.json").read_text())
    # 400 examples in 13 batches of 32: 6 optimizer steps of 2 × 32, every rank its own batches
    assert (result["steps"], result["world_size"], result["global_batch"]) == (6, 2, 64)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "eval_results.json", "metrics.jsonl",
                                                    "model.safetensors", "predictions-dev.jsonl", "tokenizer.json"]
    assert not (tmp_path / ".sst2.tmp").exists()
    predictions = [json.loads(line) for line in (out / "predictions-dev.jsonl").read_text().splitlines()]
    assert len(predictions) == 872  # written once, by rank 0
    r = subprocess.run([sys.executable, "-m", "electrolite.cli", "evaluate", "--model", str(out), "--data", str(sst2)],
                       capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert f"{result['main']:.4f}" in r.stdout  # the saved weights are the evaluated ones


def test_an_error_rank_zero_finds_stops_every_rank_and_is_said_once(corpus_dir: Path, tmp_path: Path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a run\n")
    r = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2",
                        *map(str, pretrain_args(corpus_dir, taken))],
                       capture_output=True, text=True, timeout=180, env=subprocess_env())
    assert r.returncode != 0
    said = [line for line in r.stderr.splitlines() if line.startswith("electrolite: error: ")]
    assert said == [f"electrolite: error: {taken} exists and is not an electrolite run (no config.yaml); "
                    "choose a new --out"], r.stderr[-2000:]
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]  # nothing written


def test_two_ranks_run_the_small_budget_recipe_through_its_stages(corpus_dir: Path, tmp_path: Path):
    """The default recipe's warm start leaves the generator without gradient, and then the warm start's head: DDP
    must be told to look for unused parameters. Both stages run on both ranks, and the ranks agree."""
    run = tmp_path / "small-budget"
    args = [a for a in pretrain_args(corpus_dir, run) if a not in ("--objective.recipe", "paper")]
    torchrun(*args)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == STEPS and summary["world_size"] == 2
    train, _ = read_metrics(run)
    first = round(0.3 * STEPS)
    assert all("rtd_loss" not in m for m in train if m["step"] <= first)
    assert all("rtd_loss" in m for m in train if m["step"] > first)
