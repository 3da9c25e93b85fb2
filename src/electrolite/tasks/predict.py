"""Batched prediction with a TaskModel or any ``Forward`` (onnxruntime's too): used by fine-tuning's
evaluation, ``predict``, ``evaluate``, the server and the ONNX export's checks."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from electrolite.tasks import Task
from electrolite.tasks.model import TaskModel
from electrolite.tasks.qa import decode_qa
from electrolite.tasks.tagging import word_tags
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
                progress: bool = False) -> dict[str, list[np.ndarray]]:
    """Run `forward` over all features, longest first in length-sorted batches; outputs in input order.

    Args:
        forward: the model (``torch_forward``, or interop.onnx's onnxruntime session).
        family: classification, regression, tagging or qa.

    Returns ``logits`` (classification/regression/tagging: one array per example, padding cut)
    or ``start_logits`` / ``end_logits`` (qa).
    """
    order = np.argsort(-features.lengths, kind="stable")
    keys = ("start_logits", "end_logits") if family == "qa" else ("logits",)
    out: dict[str, list] = {k: [None] * len(features) for k in keys}
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="predict", leave=False):
        idx = order[start:start + batch_size]
        batch = features.batch(idx, pad_id)
        result = forward({k: batch[k] for k in INPUT_NAMES})
        for k in keys:
            values = result[k]
            for row, i in enumerate(idx):
                n = features.lengths[i]
                out[k][i] = values[row, :n] if values.ndim > 1 and family != "classification" else values[row]
    return out


def predict_features(model: TaskModel, features, pad_id: int, batch_size: int, device: torch.device,
                     precision: str = "fp32", progress: bool = False) -> dict[str, list[np.ndarray]]:
    """``run_batches`` with the torch model (see there)."""
    return run_batches(torch_forward(model, device, precision), model.family, features, pad_id, batch_size,
                       progress)


def score(task: Task, model: TaskModel, examples: list, features, labels, pad_id: int, batch_size: int,
          device: torch.device, precision: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example predictions on one evaluation split."""
    raw = predict_features(model, features, pad_id, batch_size, device, precision)
    if task.family == "qa":
        preds = decode_qa(examples, features, raw["start_logits"], raw["end_logits"],
                          max_answer_length=task.max_answer_length or 30)
        metrics = task.metrics(examples, preds)
        threshold = 0.0 if task.squad_version == 2 else None  # v1 has no no-answer: the metric reads p.text
        rows = [{"id": ex.qid, "answer": p.answer(threshold), "score": round(float(p.score), 4)}
                for ex, p in zip(examples, preds)]
        return metrics, rows
    if task.family == "tagging":
        pred_ids = [np.argmax(x, -1) for x in raw["logits"]]
        tags = word_tags(features, pred_ids, labels)
        metrics = task.metrics([s.tags for s in examples], tags)
        return metrics, [{"words": s.words, "tags": t} for s, t in zip(examples, tags)]
    logits = np.stack(raw["logits"])
    if task.family == "regression":
        gold = np.array([float(ex.label) for ex in examples])
        return task.metrics(gold, logits), [{"line": ex.line, "score": round(float(v), 4)} for ex, v in zip(examples, logits)]
    gold = np.array([labels.index(str(ex.label)) for ex in examples])
    pred = logits.argmax(-1)
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    rows = [{"line": ex.line, "label": labels[p], "probability": round(float(pr[p]), 4)}
            for ex, p, pr in zip(examples, pred, probs)]
    return task.metrics(gold, pred), rows
