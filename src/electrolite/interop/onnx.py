"""ONNX export of fine-tuned classification and tagging models, and their onnxruntime inference.

``export_onnx(TASK_DIR, OUT)`` writes OUT/model.onnx and copies the task dir's config.yaml (the task
record: task, family, labels, text fields, max length) and tokenizer.json next to it, so that
``predict --runtime onnx`` needs neither the torch model code nor the weights. The graph has the
inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` ((batch, sequence) int64, both axes
dynamic) and one output ``logits``: (batch, labels) for classification, (batch,) for regression,
(batch, sequence, labels) for tagging, exactly TaskModel's.

The exporter is torch.export's (``dynamo=True``, opset 18): the legacy TorchScript exporter is
deprecated since torch 2.9. It decomposes scaled_dot_product_attention with the boolean key mask into
MatMul/Softmax, the model is exported in fp32 without autocast, and every export is checked
with onnxruntime on a batch of another size and length than the traced one. Needs the ``onnx``
extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from electrolite import config as cfgmod
from electrolite.artifacts import OnnxDir, TaskDir, expect, open_dir
from electrolite.data.tokenizer import load_tokenizer
from electrolite.errors import UserError
from electrolite.interop.load import load_task_model
from electrolite.tasks.model import TaskModel
from electrolite.tasks.predict import INPUT_NAMES
from electrolite.training.checkpoint import atomic_dir, check_new_dir

OPSET = 18
FAMILIES = ("classification", "regression", "tagging")
COPIED = ("config.yaml", "tokenizer.json")
"""Task dir files an ONNX export carries (the task record and the tokenizer)."""
INSTALL = "pip install 'electrolite[onnx]'"


class LogitsOnly(nn.Module):
    """TaskModel with positional inputs and the logits tensor as the only output (what torch.export traces)."""

    def __init__(self, model: TaskModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(batch)["logits"]


def _example(batch: int, length: int, vocab_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random ids with the last row half padding: (input_ids, attention_mask, token_type_ids), each (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 3:] = 1
    return ids, mask, types


def _refuse(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.yaml, task record) of a task dir that can be exported; a one-line UserError for anything else."""
    data = expect(open_dir(root), (TaskDir,), "export --format onnx needs a fine-tuned classification or tagging "
                  "task dir").data
    record = data["task_model"]
    if record["family"] not in FAMILIES:
        raise UserError(f"{root} is a {record['family']} model ({record['task']}); only classification and "
                        "tagging models export to ONNX")
    return data, record


def _require(what: str, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{what} needs {' and '.join(missing)}: {INSTALL}")


def export_onnx(src: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Export a fine-tuned classification, regression or tagging task dir as OUT/model.onnx.

    OUT also gets the task dir's config.yaml and tokenizer.json. It is written under a temporary
    name and renamed; an existing non-empty OUT is never touched.

    Returns:
        The line to print.
    """
    root, out = Path(src), Path(out)
    if not root.is_dir():
        raise UserError(f"{src}: no such directory")
    check_new_dir(out)
    _require("export --format onnx", "onnx", "onnxscript", "onnxruntime")
    data, record = _refuse(root)
    model, _ = load_task_model(root, data)
    model = model.float().eval()
    config = model.encoder.config
    with atomic_dir(out) as tmp:
        _export(LogitsOnly(model), _example(2, min(8, config.max_position_embeddings), config.vocab_size, 0),
                config.max_position_embeddings, tmp / "model.onnx")
        _check(model, tmp / "model.onnx", _example(3, min(13, config.max_position_embeddings),
                                                   config.vocab_size, 1))
        for name in COPIED:
            shutil.copyfile(root / name, tmp / name)
    return [f"wrote {out / 'model.onnx'} ({record['family']}, {record['task']}, opset {OPSET})"]


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], max_length: int, path: Path) -> None:
    """torch.export → ONNX with dynamic batch and sequence axes, quietly (the exporter logs and warns
    about things a user cannot act on: torchvision ops it skips, deprecations inside torch)."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    shapes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), torch.autocast("cpu", enabled=False):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(path), input_names=list(INPUT_NAMES), output_names=["logits"],
                              dynamic_shapes=shapes, dynamo=True, opset_version=OPSET, external_data=False,
                              verbose=False)
    finally:
        logger.setLevel(level)


@torch.no_grad()
def _check(model: TaskModel, path: Path, example: tuple[torch.Tensor, ...]) -> None:
    """onnxruntime's logits equal the model's on a batch of another size and length than the traced one.

    A mismatch is a bug of the exporter or of ours, not the user's: it raises AssertionError.
    """
    session = _session(path, ["CPUExecutionProvider"])
    inputs = dict(zip(INPUT_NAMES, example))
    got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
    want = model(inputs)["logits"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{path} does not reproduce the model")


def _session(path: Path, providers: list[str] | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"--runtime onnx needs onnxruntime: {INSTALL}") from None
    if providers is None:  # CUDA first where this onnxruntime build has it
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common public base
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path}: onnxruntime cannot load it ({e.__class__.__name__}: {first})") from None


class OnnxTaskModel:
    """An exported model.onnx in an onnxruntime session; called like ``tasks.predict.Forward``.

    Args:
        path: the model.onnx file.
        family: classification, regression or tagging.
    """

    def __init__(self, path: Path, family: str):
        self.family = family
        self.session = _session(path)

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(B, T) int64 INPUT_NAMES → ``logits`` as TaskModel gives them (float32)."""
        (logits,) = self.session.run(["logits"], {k: np.ascontiguousarray(inputs[k], dtype=np.int64)
                                                  for k in INPUT_NAMES})
        return {"logits": logits}


def load_onnx_task(model_dir: str | os.PathLike) -> tuple[OnnxTaskModel, dict[str, Any], Tokenizer]:
    """(onnxruntime model, task record, tokenizer) of a directory written by ``export --format onnx``."""
    root = expect(open_dir(model_dir), (OnnxDir,), "--runtime onnx needs an ONNX export (`electrolite export "
                  "TASK_DIR OUT --format onnx`); without --runtime onnx a task dir runs in torch").root
    for name in COPIED:
        if not (root / name).is_file():
            raise UserError(f"{root / name}: no such file (an ONNX export carries {' and '.join(COPIED)})")
    data = cfgmod.load_yaml(root / "config.yaml")
    record = data.get("task_model") if isinstance(data, dict) else None
    if not isinstance(record, dict) or record.get("family") not in FAMILIES:
        raise UserError(f"{root / 'config.yaml'}: not the config of a fine-tuned classification or tagging model")
    model = OnnxTaskModel(root / "model.onnx", record["family"])
    return model, record, load_tokenizer(str(root / "tokenizer.json"))
