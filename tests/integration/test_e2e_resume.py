"""An interrupted and resumed run ends bit-identical to an uninterrupted run of the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import COMMAND, TINY, cli_ok, read_metrics, reaped, subprocess_env

N = 30


def command(corpus: Path, run: Path, *extra: object) -> list[str]:
    return [str(a) for a in ("pretrain", "--corpus", corpus, "--out", run, *TINY, "--objective", "electra",
                             "--steps", N, "--batch-size", 8, "--seed", 0, "--save-every", 5,
                             "--train.log_every", 1, "--train.eval_every", 10, "--train.eval_batches", 1,
                             *extra)]


@pytest.fixture(scope="module")
def uninterrupted(corpus_dir: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "uninterrupted"
    cli_ok(*command(corpus_dir, run))
    return run


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def assert_no_duplicate_steps(run: Path) -> None:
    train, valid = read_metrics(run)
    assert [m["step"] for m in train] == list(range(1, N + 1))  # log_every 1: every step once
    counts = Counter(m["step"] for m in valid)
    assert all(c == 1 for c in counts.values()), counts
    assert set(counts) >= {0, 10, 20, 30}


def test_uninterrupted_reference(uninterrupted: Path):
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["step"] == N and summary["stop_reason"] == "completed"
    ck = uninterrupted / "checkpoints"
    # save_every 5 over 30 steps writes six checkpoints; keep_last (3) keeps the newest three
    assert sorted(p.name for p in ck.iterdir() if p.is_dir()) == ["step-00000020", "step-00000025", "step-00000030"]
    assert (ck / "latest").read_text().strip() == "step-00000030"
    assert not list(ck.glob(".tmp-*"))
    assert_no_duplicate_steps(uninterrupted)


def test_sigterm_then_resume_equals_uninterrupted(corpus_dir: Path, tmp_path: Path, uninterrupted: Path):
    run = tmp_path / "interrupted"
    argv = command(corpus_dir, run)
    proc = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    with reaped(proc):
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest").exists():
            assert proc.poll() is None, f"exited {proc.returncode} before its first checkpoint:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "stopped by SIGTERM"
    stopped = summary["step"]
    assert 5 <= stopped < N
    assert out.strip().startswith(f"stopped by SIGTERM at step {stopped}/{N} in {run}")
    ck = run / "checkpoints"
    assert (ck / "latest").read_text().strip() == f"step-{stopped:08d}"  # a checkpoint at the stop step
    train, _ = read_metrics(run)
    assert max(m["step"] for m in train) == stopped

    resumed = cli_ok(*argv)
    assert resumed.out.startswith(f"completed at step {N}/{N} in {run}")
    assert json.loads((run / "summary.json").read_text())["step"] == N
    assert_same_weights(run, uninterrupted)
    assert_same_weights(ck / f"step-{N:08d}", uninterrupted / "checkpoints" / f"step-{N:08d}")
    assert_no_duplicate_steps(run)
    # the training lines match the uninterrupted run's, loss for loss
    strip = ("tokens_per_second", "elapsed_seconds")
    ours = [{k: v for k, v in m.items() if k not in strip} for m in read_metrics(run)[0]]
    theirs = [{k: v for k, v in m.items() if k not in strip} for m in read_metrics(uninterrupted)[0]]
    assert ours == theirs


def test_budget_stop_then_resume_without_budget(corpus_dir: Path, tmp_path: Path, uninterrupted: Path):
    run = tmp_path / "budgeted"
    r = cli_ok(*command(corpus_dir, run, "--budget", "0.05s"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "budget 0.05s reached"
    stopped = summary["step"]
    assert 1 <= stopped < N, "the budget should stop the run early"
    state = json.loads((run / "checkpoints" / f"step-{stopped:08d}" / "state.json").read_text())
    assert state["elapsed_seconds"] >= 0.05 and state["reason"] == "budget 0.05s reached"
    assert r.out.startswith(f"budget 0.05s reached at step {stopped}/{N}")
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{stopped:08d}"

    # Re-running with the budget spent stops again at once, without a step
    cli_ok(*command(corpus_dir, run, "--budget", "0.05s"))
    assert json.loads((run / "summary.json").read_text())["step"] == stopped

    # The budget may change on resume; without one the run completes, identical to the reference
    cli_ok(*command(corpus_dir, run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == N and summary["stop_reason"] == "completed"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["budget"] == ""
    assert_same_weights(run, uninterrupted)
    assert_no_duplicate_steps(run)


def test_sigkill_then_resume_equals_uninterrupted(corpus_dir: Path, tmp_path: Path, uninterrupted: Path):
    """A run killed hard (SIGKILL) mid-way resumes from its last complete checkpoint."""
    run = tmp_path / "killed"
    argv = command(corpus_dir, run)
    proc = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=subprocess_env())
    with reaped(proc):
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest").exists():
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert (run / "checkpoints" / latest / "state.json").exists()
    r = cli_ok(*argv)
    assert r.out.startswith(f"completed at step {N}/{N}")
    assert_same_weights(run, uninterrupted)
    assert_no_duplicate_steps(run)


# Every ELECTRA lever with a schedule or state of its own: the masked-LM stage ends at step 9, the curriculum
# anneals over steps 0-15, GDES keeps the discriminator's embeddings = generator's + residual.
LEVERS = ("--objective.recipe", "paper", "--objective.two_stage_fraction", 0.3, "--objective.embedding_sharing", "gdes",
          "--objective.temperature_start", 3, "--objective.uniform_replace_start", 0.5,
          "--objective.curriculum_fraction", 0.5, "--objective.generator_lr_scale", 0.25,
          "--objective.decoupled_training", "true", "--train.lr_schedule", "electra", "--train.warmup_steps", 4)


def sigterm_after_checkpoint(argv: list[str], run: Path, step: int) -> int:
    """Start the run, SIGTERM it once checkpoint `step` is complete; returns the step it stopped at."""
    proc = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    latest = run / "checkpoints" / "latest"
    with reaped(proc):
        deadline = time.monotonic() + 120
        while not (latest.exists() and latest.read_text().strip() >= f"step-{step:08d}"):
            assert proc.poll() is None, f"exited {proc.returncode} before checkpoint {step}:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no checkpoint {step} within 120 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads((run / "summary.json").read_text())["step"]


def test_electra_levers_stopped_twice_and_resumed_equal_uninterrupted(corpus_dir: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    cli_ok(*command(corpus_dir, reference, *LEVERS))
    run = tmp_path / "interrupted"
    argv = command(corpus_dir, run, *LEVERS)
    first = sigterm_after_checkpoint(argv, run, 5)
    second = sigterm_after_checkpoint(argv, run, 15)
    assert 5 <= first < 9 < 15 <= second < N  # stopped once in each stage, the second mid-curriculum
    cli_ok(*argv)
    assert_same_weights(run, reference)
    strip = ("tokens_per_second", "elapsed_seconds")
    ours = [{k: v for k, v in m.items() if k not in strip} for m in read_metrics(run)[0]]
    theirs = [{k: v for k, v in m.items() if k not in strip} for m in read_metrics(reference)[0]]
    assert ours == theirs
    # the first stage logs a masked LM only; replaced-token detection starts at step 10 (after step 9's switch)
    assert "rtd_loss" not in theirs[8] and "rtd_loss" in theirs[9]
