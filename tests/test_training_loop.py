"""training/loop.py: the train step both recipes share. Gradient accumulation sums micro-batches into one
update that equals the update of their union; a non-finite loss skips the update and is counted; fine-tuning,
which gained both with the shared step, shows each end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from electrolite.data.tokenizer import load_tokenizer
from electrolite.errors import UserError
from electrolite.finetune import run_one
from electrolite.tasks.model import TaskModel
from electrolite.training.loop import TrainState, train_step
from tests.test_finetune import VOCAB, ft_config, loaded_encoder, sst2_data, sst2_task

CPU = torch.device("cpu")


@pytest.fixture
def tok():
    return load_tokenizer(str(VOCAB))


def _mse(model: nn.Module):
    def compute(batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"loss": loss.item()}
    return compute


def _linear(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_two_accumulated_micro_batches_make_the_update_of_their_union():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    whole, opt = _linear()
    one = train_step(whole, opt, [(x, y)], _mse(whole), 1, CPU, "fp32", 0.0)
    parts, opt2 = _linear()
    two = train_step(parts, opt2, [(x[:4], y[:4]), (x[4:], y[4:])], _mse(parts), 2, CPU, "fp32", 0.0)
    assert one.applied and two.applied
    torch.testing.assert_close(parts.weight, whole.weight)
    torch.testing.assert_close(parts.bias, whole.bias)
    assert two.metrics["loss"] == pytest.approx(one.metrics["loss"], rel=1e-6)  # the micro-batches' mean


def test_a_non_finite_loss_skips_the_update_and_the_state_counts_it():
    model, opt = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(2, 4), torch.tensor([[float("nan")], [0.0]])
    result = train_step(model, opt, [(x, y)], _mse(model), 1, CPU, "fp32", 1.0)
    assert not result.applied
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # untouched
    assert all(p.grad is None for p in model.parameters())  # and no gradient left for the next step
    state = TrainState()
    for applied in (False, False, True, False):
        state.count(result._replace(applied=applied), 0.5)
    assert (state.step, state.skipped, state.nonfinite, state.elapsed) == (4, 3, 1, 2.0)
    assert not state.diverged(2) and not state.diverged(0)
    state.count(result, 0.5)
    assert state.diverged(2)


def test_finetuning_with_accumulation_equals_one_batch_of_the_same_size(tmp_path, tok):
    """batch 8 × 2 accumulated == batch 16: same schedule (3 steps), same weights (no dropout, shuffled order,
    whose 16-batches are pairs of consecutive 8-batches)."""
    loaded = loaded_encoder(tok, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = sst2_data(n_train=48)
    runs = {}
    for name, batch, accumulation in (("one", 16, 1), ("two", 8, 2)):
        out = tmp_path / name
        cfg = ft_config(tmp_path, epochs=1, batch_size=batch, gradient_accumulation_steps=accumulation,
                        batch_order="shuffled", out=str(out))
        runs[name] = run_one(cfg, out, sst2_task(), data, loaded)
        runs[name]["weights"] = load_file(str(out / "model.safetensors"))
    assert runs["one"]["steps"] == runs["two"]["steps"] == 3
    assert runs["one"]["global_batch"] == runs["two"]["global_batch"] == 16
    assert runs["two"]["gradient_accumulation_steps"] == 2 and runs["two"]["skipped_steps"] == 0
    for key, value in runs["one"]["weights"].items():
        torch.testing.assert_close(runs["two"]["weights"][key], value, atol=2e-5, rtol=1e-4)


def _poison(monkeypatch, bad_steps: set[int]) -> None:
    """TaskModel's training forward returns a NaN loss at the given (0-based) calls."""
    real = TaskModel.forward
    calls = [0]

    def forward(self, batch):
        out = real(self, batch)
        if self.training:
            if calls[0] in bad_steps:
                out = {**out, "loss": out["loss"] * float("nan")}
            calls[0] += 1
        return out
    monkeypatch.setattr(TaskModel, "forward", forward)


def test_finetuning_skips_a_non_finite_step_and_records_it(tmp_path, tok, monkeypatch):
    _poison(monkeypatch, {1})
    out = tmp_path / "task"
    summary = run_one(ft_config(tmp_path, epochs=1), out, sst2_task(), sst2_data(), loaded_encoder(tok))
    assert summary["steps"] == 5 and summary["skipped_steps"] == 1  # 40 examples / 8
    assert json.loads((out / "eval_results.json").read_text())["skipped_steps"] == 1
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())


def test_finetuning_stops_after_max_nonfinite_steps_in_a_row(tmp_path, tok, monkeypatch):
    _poison(monkeypatch, set(range(100)))
    out = tmp_path / "task"
    with pytest.raises(UserError, match=r"stopped: 2 non-finite steps in a row at step 2 \(loss nan\), before any "
                                        r"epoch ended$"):
        run_one(ft_config(tmp_path, epochs=1, max_nonfinite_steps=2), out, sst2_task(), sst2_data(),
                loaded_encoder(tok))
    assert not (out / "model.safetensors").exists()
