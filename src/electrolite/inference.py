"""Using trained models: evaluate, predict, detect (the discriminator) and fill-mask (the generator).

Each takes an electrolite dir (config.yaml) or a Hugging Face checkpoint dir (config.json):
evaluate and predict a fine-tuned task model (a task dir, *For{Sequence,Token}Classification,
*ForQuestionAnswering), detect an ELECTRA run or ElectraForPreTraining, fill-mask a pre-training
run or a class with a masked-LM head.

``predict`` reads plain texts (single-sentence tasks) or JSON lines with the task's named fields
(sentence pairs: e.g. ``sentence1``/``sentence2``; QA: ``question`` and ``context``) and yields
one JSON-able dict per input: label and probabilities; entities with character offsets; answer
span, text and score.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, cast, overload

import torch
from tokenizers import Tokenizer
from torch import nn

from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.config import EncoderConfig
from electrolite.data.textfiles import lone_surrogate
from electrolite.data.tokenizer import load_tokenizer, special_tokens
from electrolite.errors import UserError, parse_json
from electrolite.interop.hf import ARCHITECTURES
from electrolite.interop.hf_io import load_hf_model, load_hf_task_model, load_hf_tokenizer
from electrolite.interop.load import load_pretrain_objective, load_task_model
from electrolite.interop.onnx import load_onnx_task
from electrolite.objectives import Electra, MaskedLM
from electrolite.tasks import get_task
from electrolite.tasks.model import TaskModel
from electrolite.tasks.predict import Forward, predict_records, score, torch_forward

PREDICT_BATCH = 64


def _task_of(record: dict[str, Any]):
    task = get_task(record["task"])
    if record["task"] == "text-classification":
        task = task.with_options(record["text_fields"], record.get("label_column") or "label",
                                 record["family"] == "regression")
    return dataclasses.replace(task, max_length=record["max_length"])


@overload
def load_task(model_dir: str, runtime: Literal["torch"] = "torch", action: str = "predict"
              ) -> tuple[TaskModel, dict[str, Any], Tokenizer]: ...
@overload
def load_task(model_dir: str, runtime: str = "torch", action: str = "predict"
              ) -> tuple[TaskModel | Forward, dict[str, Any], Tokenizer]: ...


def load_task(model_dir: str, runtime: str = "torch", action: str = "predict"
              ) -> tuple[TaskModel | Forward, dict[str, Any], Tokenizer]:
    """(model, task record, tokenizer) of a fine-tuned task dir or Hugging Face task checkpoint.

    Args:
        runtime: "torch": the TaskModel in eval mode; "onnx": a dir written by ``export --format onnx``
            in onnxruntime (onnx_io.OnnxTaskModel).
    """
    if runtime == "onnx":
        return load_onnx_task(model_dir)
    art = expect(open_dir(model_dir), (TaskDir, HFDir), f"{action} needs a fine-tuned task dir or a Hugging Face "
                 "task checkpoint")
    if isinstance(art, HFDir):
        model, record = load_hf_task_model(art.root)
        return model, record, load_hf_tokenizer(art.root)
    model, record = load_task_model(art.root, art.data)
    return model, record, load_tokenizer(str(art.root / "tokenizer.json"))


def evaluate(model_dir: str, data: str | None, dev: str | None = None, task_name: str | None = None,
             device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Score a fine-tuned task dir (or Hugging Face task checkpoint) on evaluation data (its task's format)."""
    root = Path(model_dir)
    model, record, tok = load_task(model_dir, action="evaluate")
    if task_name and task_name != record["task"]:
        raise UserError(f"{model_dir} was fine-tuned for {record['task']}, not {task_name}")
    task = _task_of(record)
    labels = record["labels"] or None
    loaded = task.load(data, dev=dev, labels=labels, with_train=False)
    pad = special_tokens(tok).pad_token_id
    results = {}
    for split, examples in loaded.evals.items():
        features = task.encode(examples, tok, labels)
        results[split], _ = score(task, model.to(device), examples, features, labels or [], pad,
                                  PREDICT_BATCH, device, "fp32")
    out = {"task": task.name, "model": str(root), "data": {k: str(v) for k, v in loaded.files.items()},
           "results": results, "note": loaded.note}
    return out


def read_inputs(texts: list[str], fields: tuple[str, ...], source: str) -> Iterator[dict[str, str]]:
    """Turn CLI texts or file lines into records with the task's fields.

    A line that parses as a JSON object is a record; other lines are the first field's text
    (only for single-text tasks).
    """
    lines, n = iter(texts), 0
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except UnicodeDecodeError:  # a file read as text decodes ahead of the line it yields
            raise UserError(f"{source}: not UTF-8 text after line {n}") from None
        n += 1
        line = line.rstrip("\n")
        if not line.strip():
            continue
        record: dict[str, Any] | None = None
        if line.lstrip().startswith("{"):
            parsed = parse_json(line, f"{source} line {n}")
            if not isinstance(parsed, dict):
                raise UserError(f"{source} line {n}: expected a JSON object")
            record = parsed
        if record is None:
            if len(fields) > 1:
                raise UserError(f"{source} line {n}: this task needs JSON lines with the fields "
                                f"{', '.join(fields)}")
            record = {fields[0]: line}
        missing = [f for f in fields if not isinstance(record.get(f), str)]
        if missing:
            raise UserError(f"{source} line {n}: missing text field(s) {', '.join(missing)}")
        if any(lone_surrogate(record[f]) for f in fields):  # only JSON escapes make one
            raise UserError(f"{source} line {n}: a text field holds a lone surrogate escape (not Unicode text)")
        yield record


def predict(model_dir: str, records: Iterable[dict[str, str]], device: torch.device = torch.device("cpu"),
            loaded: tuple[TaskModel | Forward, dict[str, Any], Tokenizer] | None = None,
            runtime: str = "torch") -> Iterator[dict[str, Any]]:
    """Predictions for records, streamed in chunks of PREDICT_BATCH × 4.

    Both runtimes share the tokenization, the length-sorted batches and the decoding; only the
    forward pass differs (torch on `device`, or onnxruntime on its own providers).

    Args:
        loaded: ``load_task(model_dir, runtime)``'s result when the caller already has it.
        runtime: "torch" (a task dir or Hugging Face checkpoint) or "onnx" (an ``export --format onnx`` dir).
    """
    model, record, tok = loaded or load_task(model_dir, runtime)
    # The torch runtime's model is a TaskModel; onnx's a Forward (not a module).
    forward = torch_forward(cast(TaskModel, model).to(device), device) if isinstance(model, nn.Module) else model
    task = _task_of(record)
    pad = special_tokens(tok).pad_token_id
    labels = record["labels"]
    chunk: list[dict[str, str]] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) == PREDICT_BATCH * 4:
            yield from predict_records(forward, task, tok, labels, chunk, pad, PREDICT_BATCH)
            chunk = []
    if chunk:
        yield from predict_records(forward, task, tok, labels, chunk, pad, PREDICT_BATCH)


def _pretrained_parts(model_dir: str, command: str) -> tuple[EncoderConfig, nn.Module, nn.Module, Tokenizer]:
    """(encoder config, encoder, head, tokenizer) that `command` (detect or fill-mask) runs.

    detect: the discriminator and its replaced-token head; fill-mask: the generator (ELECTRA) or
    the encoder (MLM) and its masked-LM head.
    """
    art = expect(open_dir(model_dir), (RunDir, HFDir), f"{command} needs a pre-training run or a Hugging Face "
                 "checkpoint")
    if isinstance(art, HFDir):
        root = art.root
        module, ckpt = load_hf_model(root)
        part = "rtd_head" if command == "detect" else "mlm_head"
        if part not in ARCHITECTURES[ckpt.arch].parts:
            need = ("ElectraForPreTraining (an ELECTRA discriminator)" if command == "detect" else
                    "a masked-LM head: ElectraForMaskedLM (an ELECTRA generator), BertForMaskedLM, "
                    "BertForPreTraining, AlbertForMaskedLM or AlbertForPreTraining")
            raise UserError(f"{model_dir} is a {ckpt.arch} checkpoint; {command} needs {need}")
        return ckpt.config, module.encoder, getattr(module, part), load_hf_tokenizer(root)
    cfg = art.config()
    model, tok = load_pretrain_objective(art.root, cfg), load_tokenizer(str(art.root / "tokenizer.json"))
    if command == "detect":
        if cfg.objective.name != "electra":
            raise UserError(f"{model_dir} was pre-trained with {cfg.objective.name}; detect needs an ELECTRA run")
        electra = cast(Electra, model)  # build_objective's module for the electra objective
        return cfg.model, electra.discriminator, electra.discriminator_head, tok
    if cfg.objective.name == "electra":
        electra, generator = cast(Electra, model), cfg.generator_config()
        assert generator is not None  # the electra objective has one
        return generator, electra.generator, electra.generator_head, tok
    masked_lm = cast(MaskedLM, model)  # every other objective
    return cfg.model, masked_lm.encoder, masked_lm.mlm_head, tok


@torch.no_grad()
def detect(run_dir: str, text: str) -> dict[str, Any]:
    """The discriminator's probability, per token, that the token was replaced."""
    config, encoder, head, tok = _pretrained_parts(run_dir, "detect")
    enc = tok.encode(text)
    ids = torch.tensor([enc.ids[:config.max_position_embeddings]])
    hidden = encoder(ids, torch.ones_like(ids), torch.tensor([enc.type_ids[:ids.shape[1]]]))
    probs = torch.sigmoid(head(hidden)[0]).tolist()
    tokens = [{"token": t, "start": s, "end": e, "replaced_probability": round(p, 4)}
              for t, (s, e), p, special in zip(enc.tokens, enc.offsets, probs, enc.special_tokens_mask) if not special]
    return {"text": text, "tokens": tokens}


@torch.no_grad()
def fill_mask(run_dir: str, text: str, top_k: int = 5) -> dict[str, Any]:
    """The generator's (or MLM head's) top-k fillers for each mask token in `text`."""
    _, encoder, head, tok = _pretrained_parts(run_dir, "fill-mask")
    special = special_tokens(tok)
    mask_token = tok.id_to_token(special.mask_token_id)
    enc = tok.encode(text)
    ids = torch.tensor([enc.ids])
    where = (ids == special.mask_token_id)
    if not where.any():
        raise UserError(f"the text has no {mask_token} token to fill")
    hidden = encoder(ids, torch.ones_like(ids), torch.tensor([enc.type_ids]))
    probs = torch.softmax(head(hidden[where]).float(), -1)  # (masks, V)
    out = []
    for row in probs:
        p, i = row.topk(top_k)
        out.append([{"token": tok.id_to_token(int(t)), "probability": round(float(q), 4)} for q, t in zip(p, i)])
    return {"text": text, "mask_token": mask_token, "fills": out}
