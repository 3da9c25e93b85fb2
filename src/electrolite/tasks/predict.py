"""Batched prediction with a TaskModel or any ``Forward`` (onnxruntime's too): used by fine-tuning's
evaluation, ``predict``, ``evaluate``, the server and the ONNX export's checks."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from electrolite.tasks import Task, family_of
from electrolite.tasks.family import Raw
from electrolite.tasks.model import TaskModel
from electrolite.training.runtime import autocast


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

Forward = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
"""A model run on one padded batch: INPUT_NAMES (B, T) int64 in, the TaskModel's outputs out (numpy, float32)."""


def torch_forward(model: TaskModel, device: torch.device, precision: str = "fp32") -> Forward:
    """The TaskModel (put in eval mode) as a Forward, gradient-free, on `device` with `precision` (fp32 or bf16)."""
    model.eval()

    @torch.no_grad()
    def forward(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with autocast(device, precision):
            result = model(to_tensors(inputs, device))
        return {k: v.float().cpu().numpy() for k, v in result.items()}

    return forward


def run_batches(forward: Forward, family: str, features, pad_id: int, batch_size: int,
                progress: bool = False) -> Raw:
    """Run `forward` over all features, longest first in length-sorted batches; outputs in input order.

    Args:
        forward: the model (``torch_forward``, or interop.onnx's onnxruntime session).
        family: the task family's name; its ``outputs`` are read, cut to each example's length when
            ``per_token``.

    Returns:
        ``logits`` (classification, regression, tagging) or ``start_logits`` / ``end_logits`` (qa), one
        array per example.
    """
    fam = family_of(family)
    order = np.argsort(-features.lengths, kind="stable")
    out: dict[str, list] = {k: [None] * len(features) for k in fam.outputs}
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="predict", leave=False):
        idx = order[start:start + batch_size]
        batch = features.batch(idx, pad_id)
        result = forward({k: batch[k] for k in INPUT_NAMES})
        for k in fam.outputs:
            values = result[k]
            for row, i in enumerate(idx):
                n = features.lengths[i]
                out[k][i] = values[row, :n] if fam.per_token and values.ndim > 1 else values[row]
    return out


def predict_features(model: TaskModel, features, pad_id: int, batch_size: int, device: torch.device,
                     precision: str = "fp32", progress: bool = False) -> Raw:
    """``run_batches`` with the torch model (see there)."""
    return run_batches(torch_forward(model, device, precision), model.family, features, pad_id, batch_size,
                       progress)


def score(task: Task, model: TaskModel, examples: list, features, labels, pad_id: int, batch_size: int,
          device: torch.device, precision: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example predictions on one evaluation split (the task family's ``score``)."""
    raw = predict_features(model, features, pad_id, batch_size, device, precision)
    return family_of(task.family).score(task, raw, examples, features, labels)


def predict_records(forward: Forward, task: Task, tokenizer, labels, records: list[dict[str, str]], pad_id: int,
                    batch_size: int) -> Iterator[dict[str, Any]]:
    """One output row per input record (the task family's ``predict``), the model run in batches."""
    fam = family_of(task.family)
    yield from fam.predict(task, records, tokenizer, labels,
                           lambda features: run_batches(forward, fam.name, features, pad_id, batch_size))
