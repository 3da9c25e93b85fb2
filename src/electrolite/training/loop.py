"""The training machinery both recipes share: the train step (gradient accumulation, non-finite skipping,
clipping, precision), the train state, the stop flag (SIGTERM/SIGINT) and the metrics log."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Protocol, cast

import torch

from electrolite.errors import UserError
from electrolite.training.runtime import Dist, any_rank, autocast, clip_gradients, gradient_sync

Compute = Callable[[Any], "tuple[torch.Tensor, dict[str, float]]"]
"""One micro-batch's forward pass: (its loss, to back-propagate; its metrics, with "loss", as floats)."""


class StepHooks(Protocol):
    """What an objective may do around the optimizer step (ELECTRA's GDES keeps its residual in step)."""

    def before_optimizer_step(self) -> None: ...

    def after_optimizer_step(self, lr: float, weight_decay: float) -> None: ...


class StepResult(NamedTuple):
    metrics: dict[str, float]
    """The micro-batches' metrics, averaged."""
    grad_norm: torch.Tensor
    """The gradient norm before clipping (with clip groups: the norm of their norms)."""
    applied: bool
    """False when a non-finite loss or gradient (on any rank) skipped the update; the weights are untouched."""


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Iterable[Any],
               compute: Compute, accumulation: int, device: torch.device, precision: str, max_grad_norm: float,
               dist: Dist = Dist(), clip_groups: list[list[torch.nn.Parameter]] | None = None,
               hooks: StepHooks | None = None) -> StepResult:
    """One optimizer step over `accumulation` micro-batches.

    Args:
        model: what `compute` runs (the DDP wrapper, if any: gradients are averaged over ranks once, on
            the last micro-batch).
        compute: a micro-batch's forward pass (``Compute``), run under autocast at `precision` (resolved:
            fp32 or bf16, ``runtime.resolve_precision``).
        clip_groups: parameter groups clipped to `max_grad_norm` each on its own (ELECTRA's decoupled
            training: generator and discriminator as two models); None: the whole model at once.
        hooks: called around the optimizer step (``StepHooks``); the learning rate they get is that of the
            first group with ``lr_scale`` 1.
    """
    parts: dict[str, float] = {}
    for i, batch in enumerate(micro_batches):
        with gradient_sync(model, not dist.enabled or i == accumulation - 1):
            with autocast(device, precision):
                loss, metrics = compute(batch)
            (loss / accumulation).backward()
        for k, v in metrics.items():
            parts[k] = parts.get(k, 0.0) + v / accumulation
    if clip_groups is not None:
        norms = [clip_gradients(group, max_grad_norm) for group in clip_groups]
        grad_norm = torch.sqrt(cast(torch.Tensor, sum(n.float() ** 2 for n in norms)))  # a tensor: clip_groups is not empty
    else:
        grad_norm = clip_gradients(model, max_grad_norm)
    # Gradients (so their norm) agree over ranks after the all-reduce (FSDP: the norm is reduced over
    # the shards); a loss is per rank: any rank's non-finite loss skips the step on all of them.
    (bad_loss,) = any_rank(dist, not math.isfinite(parts["loss"]))
    applied = not bad_loss and bool(torch.isfinite(grad_norm))
    if applied:
        if hooks is not None:
            hooks.before_optimizer_step()
        optimizer.step()
        if hooks is not None:
            group = next(g for g in optimizer.param_groups if g.get("lr_scale", 1.0) == 1.0)
            hooks.after_optimizer_step(group["lr"], max(g["weight_decay"] for g in optimizer.param_groups))
    optimizer.zero_grad(set_to_none=True)
    return StepResult(parts, grad_norm, applied)


@dataclass
class TrainState:
    """Where a training loop is: what a checkpoint and the summary record of it."""

    step: int = 0
    elapsed: float = 0.0
    """Seconds spent in train steps (a resumed run goes on from its checkpoint's)."""
    skipped: int = 0
    """Steps whose update a non-finite loss or gradient skipped."""
    nonfinite: int = 0
    """Such steps in a row; a finite one resets it."""
    last_checkpoint: str | None = None
    """The newest checkpoint written (what ``latest`` names), if any."""

    def count(self, result: StepResult, seconds: float) -> None:
        """Account for one train step that took `seconds`."""
        self.skipped += not result.applied
        self.nonfinite = 0 if result.applied else self.nonfinite + 1
        self.step += 1
        self.elapsed += seconds

    def diverged(self, max_nonfinite_steps: int) -> bool:
        """Whether the run has had `max_nonfinite_steps` non-finite steps in a row (0: never)."""
        return 0 < max_nonfinite_steps <= self.nonfinite


class StopFlag:
    """SIGTERM/SIGINT request a clean stop: finish the step, checkpoint, exit 0."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[signal.Signals, Any] = {}  # the handlers to restore

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class MetricsLog:
    """metrics.jsonl (+ optional TensorBoard); on resume, lines past the checkpoint are dropped.

    `first` (how the run computes: resolved precision, compiled) goes into the file's first line;
    a resumed run's lines stay as an uninterrupted run's would be (its summary.json says how it ran).
    """

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool, first: dict[str, Any] | None = None):
        self.first = dict(first or {})
        self.path = run_dir / "metrics.jsonl"
        self.valid_steps: set[int] = set()  # steps that already have a validation line
        self.valid_records: list[dict[str, Any]] = []  # kept validation lines with RTD figures (the plateau watch)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")  # a kill mid-rewrite loses no line
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
            self.valid_steps = {r["step"] for r in map(json.loads, kept) if any(k.startswith("valid_") for k in r)}
            self.valid_records = [r for r in map(json.loads, kept) if "valid_rtd_loss" in r]
            if kept:
                self.first = {}
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("train.tensorboard needs the tensorboard package (pip install electrolite[tensorboard])") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        record, self.first = {**record, **self.first}, {}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
